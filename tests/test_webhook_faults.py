"""Warm hand-offs survive SIGKILL (issue 19): a gunicorn worker and a webhook deliverer killed mid-run.

A short run of the webhook benchmark (evaluation/bench/webhooks.py; `make bench` runs the full minute at
50/s): every referral the store holds reaches the program's webhook, every signature verifies, and a
message sent twice carries the delivery id and body of its first copy.
"""

from evaluation.bench.webhooks import bench_webhooks


def test_no_referral_is_lost_and_every_duplicate_is_harmless_when_a_worker_and_a_deliverer_are_killed(tmp_path):
    result = bench_webhooks(tmp_path, persons=200, rate=20, seconds=8, kill=True, settle=40)
    assert result["killed"]["worker"] and result["killed"]["deliverer"]
    assert result["referrals_stored"] >= 0.9 * 20 * 8, result
    assert result["lost"] == 0 and result["bad_signatures"] == 0 and result["duplicates_harmless"], result

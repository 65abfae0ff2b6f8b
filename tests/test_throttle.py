"""The failed-authentication throttle: limits per credential and per address, one lockout per crossing, and
memory that stays bounded whatever an attacker sends (issue 15: 100,000 bad keys took 92 MiB).

The clock is injected, so nothing here depends on wall-clock time or on the process's memory.
"""

from api.service.throttle import FailureThrottle


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_100000_distinct_bad_keys_leave_a_bounded_number_of_entries_and_the_address_stays_limited():
    clock = Clock()
    throttle = FailureThrottle(max_entries=1_000, clock=clock)
    peak = 0
    for k in range(100_000):
        throttle.record(f"brf_guess-{k}", "198.51.100.7")
        clock.now += 0.0001                          # all within one window: nothing expires by time
        peak = max(peak, len(throttle))
    assert peak <= 1_000
    assert throttle.failed("brf_one-more", "198.51.100.7") is not None     # the flooding address is still limited


def test_a_flood_spread_over_addresses_is_bounded_too():
    clock = Clock()
    throttle = FailureThrottle(max_entries=500, clock=clock)
    for k in range(100_000):
        throttle.record(f"brf_guess-{k}", f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}")
        assert len(throttle) <= 500


def test_entries_whose_failures_left_the_window_are_forgotten():
    clock = Clock()
    throttle = FailureThrottle(window=60, clock=clock)
    for k in range(1_000):
        throttle.record(f"brf_guess-{k}", f"192.0.2.{k % 200}")
    assert len(throttle) == 1_000 + 200
    clock.now += 61
    throttle.record("brf_late", "203.0.113.1")
    assert len(throttle) == 2


def test_limits_wait_and_one_lockout_per_crossing():
    clock = Clock()
    throttle = FailureThrottle(window=60, per_credential=5, per_address=20, clock=clock)
    verdicts = [throttle.record("brf_same", "192.0.2.1") for _ in range(9)]
    assert [v.wait is None for v in verdicts] == [True] * 5 + [False] * 4
    assert [v.lockout for v in verdicts] == [False] * 5 + [True] + [False] * 3
    assert 1 <= verdicts[-1].wait <= 60
    clock.now += 61                                  # the window has passed: counting starts again
    again = [throttle.record("brf_same", "192.0.2.1") for _ in range(6)]
    assert [v.lockout for v in again] == [False] * 5 + [True]
    other = [throttle.record(f"brf_k{k}", "192.0.2.99") for k in range(21)]   # the address limit
    assert [v.wait is None for v in other] == [True] * 20 + [False] and other[-1].lockout


def test_the_wait_is_until_the_client_is_under_the_limit_again():
    clock = Clock()
    throttle = FailureThrottle(window=60, per_credential=2, per_address=100, clock=clock)
    for step in (0, 10, 20):                          # failures at 0, 10, 20 s: over the limit of 2 at 20 s
        clock.now = 1_000.0 + step
        wait = throttle.failed("brf_x", "192.0.2.5")
    assert wait == 60 - 20                            # at 60 s the first one leaves the window: 2 left, under

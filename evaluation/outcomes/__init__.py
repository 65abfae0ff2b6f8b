"""The referral outcomes report (issue 19): what became of the referrals and follow-up tasks in a store.

`report.outcomes_report(store, ...)` computes every figure (typed dataclasses, plain functions) and
`report.as_json` lays them out for report.json; `render.write_report` writes report.json and a self-contained
report.html with inline SVG charts. `briefing report outcomes` (api/cli/reporting.py) runs both.
The synthetic history it is checked against is evaluation/synth/referrals.py.
"""

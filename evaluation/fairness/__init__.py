"""The fairness audit (`briefing eval fairness`): does the matcher, and does the ranking, treat every group alike?

`evaluation.measures` is the audit's vocabulary (measure, figure, verdict); `matcher` audits linkage error rates by group,
with the name swap (`name_swap`) and perturbation robustness (`perturb`) tests; `ranker` audits the ranking
(`ranker_exposure`, `ranker_groups`, `ranker_invariance`); `report` writes the HTML report, its JSON and the model
cards' sections; `plots` draws the figures as inline SVG. Statistics shared with the linkage report live in
`evaluation.stats`.
"""

"""Evaluating record linkage against truth: metrics, steward labels, data sets the project did not generate.

`metrics` (pairwise and B-cubed accuracy, error rates by group), `report` (`briefing eval linkage`), `labels`
(`briefing eval labels`: steward decisions as labels), `identifiability` (what a subject shares with its records),
`model_card` (models/MATCHER.md); external data: `febrl`, `external` (sets and their measures), and the plain-Splink
comparisons `baseline` and `splink_tutorial`.
"""

"""Evaluating record linkage against truth: metrics, steward labels, data sets the project did not generate.

`metrics` (error rates by group; the overall pairwise and B-cubed figures are `matching.accuracy`), `report` (`briefing eval linkage`), `labels`
(`briefing eval linkage --labels`: steward decisions as labels), `identifiability` (what a subject shares with its records),
`model_card` (models/MATCHER.md); external data: `febrl`, `external` (sets and their measures), and the plain-Splink
comparisons `baseline` and `splink_tutorial`.
"""

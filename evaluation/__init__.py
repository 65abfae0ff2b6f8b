"""Evaluation of Briefing, grouped by what is evaluated.

`synth` generates the synthetic county (and the gecko-syndata sets); `linkage` measures record linkage;
`fairness` audits the matcher and the ranking by group; `bench` runs the benchmarks of BENCHMARKS.md; `stats`
holds the statistics they share (person-level bootstrap, intervals, ratio measures), `measures` the audit's
vocabulary. `ranking` evaluates the
ranker (`ranking.card`: its model card); link thresholds are chosen in `matching.thresholds`.
"""

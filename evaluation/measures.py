"""The vocabulary of the fairness audit: a measure, its threshold, its figure with CI, its verdict.

`evaluation.fairness.matcher` and `evaluation.fairness.ranker` each return a `Section`;
`evaluation.fairness.report` lays sections out as the HTML report, the JSON of every figure and
the model cards' disaggregated tables. A measure whose groups are too small to tell is
`insufficient`, never `pass`: an audit that cannot see a group has not shown it is treated fairly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Verdict = Literal["pass", "fail", "insufficient"]

MIN_PERSONS = 30                 # a cell with fewer persons is reported as insufficient data
RATIO_BAND = (0.80, 1.25)        # group / reference ratios inside this band pass
NAME_SWAP_MAX_FLIP = 0.01        # name-swap flip rate at or below this passes
INVARIANCE_REQUIRED = 1.0        # demographic invariance must be total


@dataclass
class GroupFigure:
    """One group's (or intersection's) figure: `group` is e.g. {"race_ethnicity": "black", "sex": "F"}."""

    group: dict[str, str]
    persons: int
    value: float | None
    ci95: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)        # counts behind the value (pairs, items, incidents ...)

    @property
    def sufficient(self) -> bool:
        return self.persons >= MIN_PERSONS and self.value is not None


@dataclass
class Measure:
    """One row of the verdict table, with the per-group figures behind it."""

    name: str                                    # e.g. "matcher.false_non_match_rate.ratio.race_ethnicity"
    title: str                                   # human wording for the report
    threshold: str                               # human wording, e.g. "ratio to the largest group within 0.80–1.25"
    value: float | None                          # the headline figure (worst ratio, flip rate, ...)
    ci95: tuple[float, float] | None
    verdict: Verdict
    groups: list[GroupFigure] = field(default_factory=list)
    reference: dict[str, str] | None = None      # the group the ratios are taken against
    note: str = ""


@dataclass
class Figure:
    """A plot for the report, already rendered: inline SVG text (no external assets)."""

    name: str
    title: str
    svg: str
    caption: str = ""


@dataclass
class Section:
    """What one half of the audit (matcher or ranker) found."""

    name: str                                    # "matcher" | "ranker"
    measures: list[Measure] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    facts: dict = field(default_factory=dict)    # data described: persons, records, incidents, seeds, model versions
    caveats: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for figure in out["figures"]:
            figure.pop("svg")                    # the JSON carries figures' data through the measures, not pictures
        return out


def ratio_verdict(value: float | None, band: tuple[float, float] = RATIO_BAND) -> Verdict:
    """A ratio passes when its point estimate lies inside the band; insufficient without one.

    The 95% interval is reported beside it (and a measure's note should say when the interval
    reaches outside the band): with the group sizes of a county the interval of a ratio of small
    rates is wide, and demanding it lie wholly inside the band would fail every audit by noise.
    """
    if value is None:
        return "insufficient"
    return "pass" if band[0] <= value <= band[1] else "fail"

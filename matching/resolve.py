"""Real-time resolution: one subject -> the persons it most likely is, graded and explained.

`Resolver` joins the candidate index (who could this be?) to the native scorer (how likely,
under the trained Splink model?) and the model card's thresholds (what grade?). It answers
in the shape the service returns as `resolution`:

    {"status": "resolved" | "ambiguous" | "no_match",
     "candidates": [{"person_id", "record_id", "match_probability", "match_weight", "grade",
                     "explanation": [{"field", "level", "weight"}, ...]}, ...]}   # best first

Only persons at `possible` grade or better are returned: a weaker candidate is somebody
else's history. Status `ambiguous` means two persons are both at least `probable` and their
best match weights are within `ambiguity_margin` bits (default 2: the runner-up is at least a
quarter as likely), so a responder must not be shown either as *the* subject. A candidate is
never `certain` while one of its fields weighs `CONFLICT_BITS` or more against it (a date of birth
a generation apart, another sex): however strong the rest, such a match is at most `probable`.
Nor is an answer to a query `certain` unless the person's own identity is corroborated: the given
name and a person-specific field (date of birth or SSN) each agree at a level worth at least
`CORROBORATION_BITS`. A family name, phone and address are shared by a household and a name by
namesakes, so a father and the son named after him, twins with similar names, or two strangers of
one name are never told apart by those alone, however rare the name (`_corroborated`).

The prior is rescaled to the number of records indexed, as batch linking does
(`MatcherModel.for_population`), so probabilities mean the same at any index size.
"""

from __future__ import annotations

import ctypes
import gc
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from matching.attested import AttestedIdentity, suffix_mark
from matching.cluster import fresh_person_id
from matching.encoding import Extras
from matching.index import MAX_SCORED, YEAR_SLACK, CandidateIndex, key_specs
from matching.model import MatcherModel
from matching.query import Subject, standardise_subject
from matching.scorer import Scorer, Scores, probability
from matching.standardise import STANDARD_COLUMNS, standardise, standardise_row

AMBIGUITY_MARGIN = 2.0
BUILD_CHUNK = 100_000
#: Comparisons whose disagreement is not held against a *query*: a CAD's subject phone is often
#: the caller's number and its address the scene's, so a mismatch says little about identity.
CONTEXT_COMPARISONS = ("phone", "address")
MAX_CANDIDATES = 5
GRADE_ORDER = {"certain": 0, "probable": 1, "possible": 2}
#: A field whose weight is this many bits against (16 to 1) keeps a candidate below `certain`:
#: a parent and child sharing a name, phone and address outweigh a DOB a generation apart.
CONFLICT_BITS = 4.0
#: A level worth this many bits (16 to 1, before term frequencies) corroborates identity: an exact,
#: nickname or one-typo given name; an exact, transposed or off-by-a-year date of birth; an SSN.
#: Not a weak fuzzy name, a sound-alike or a year of birth alone.
CORROBORATION_BITS = 4.0
#: Each group needs one comparison at a corroborating level for a query's answer to be `certain`.
CORROBORATING_FIELDS = (("given_name",), ("dob", "ssn_last4"))


@dataclass
class Candidate:
    person_id: str
    record_id: str
    match_probability: float
    match_weight: float
    grade: str
    explanation: list[dict]


@dataclass
class Resolution:
    status: str
    candidates: list[Candidate]
    candidates_scored: int = 0
    skipped_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON shape (`status`, `candidates`); diagnostics are left out."""
        return {"status": self.status, "candidates": [
            {"person_id": c.person_id, "record_id": c.record_id, "match_probability": c.match_probability,
             "match_weight": c.match_weight, "grade": c.grade, "explanation": [dict(e) for e in c.explanation]}
            for c in self.candidates]}


@dataclass
class AddOutcome:
    """What adding a record did: the person it joined or started, and a review pair if one opened."""

    record_id: str
    person_id: str
    joined: bool
    best: Candidate | None = None
    review_pair: dict | None = None


class Resolver:
    """Resolve subjects against an in-memory index of records and persons.

    scikit-learn's conventions: `__init__` keeps the parameters (and `lock`, which guards every
    change); `fit` / `fit_standardised` learn `model_` (the model rescaled to the records indexed),
    `scorer_`, `index_`, `unusable_rules_` (blocking rules the index cannot use) and start
    `review_pairs_` (pairs opened for a steward by `add_record`).
    """

    def __init__(self, model: MatcherModel, ambiguity_margin: float = AMBIGUITY_MARGIN,
                 max_candidates: int = MAX_CANDIDATES, context_comparisons: tuple[str, ...] = CONTEXT_COMPARISONS,
                 max_scored: int = MAX_SCORED):
        self.base_model = model
        self.max_scored = max_scored
        self.context_comparisons = context_comparisons
        self.ambiguity_margin = ambiguity_margin
        self.max_candidates = max_candidates
        self.lock = threading.RLock()      # held by every change; callers may hold it to pair a change with a store write

    # ---------------------------------------------------------------- building
    def fit(self, records: pd.DataFrame, clusters: pd.DataFrame,
            progress: Callable[[int, int], None] | None = None) -> "Resolver":
        """Index canonical `records` (as `read_records` gives them) with `clusters` (record_id, person_id).

        Records are standardised chunk by chunk, so a million of them never exist twice in memory;
        `progress(done, total)` is told after each chunk.
        """
        def chunks():
            for start in range(0, len(records), BUILD_CHUNK):
                yield standardise(records.iloc[start: start + BUILD_CHUNK])
                if progress:
                    progress(min(start + BUILD_CHUNK, len(records)), len(records))
        return self._fit(chunks(), records["record_id"].astype(str), clusters)

    def fit_standardised(self, standardised: pd.DataFrame, clusters: pd.DataFrame) -> "Resolver":
        """`fit` for records already standardised (`matching.standardise.standardise`)."""
        chunks = (standardised.iloc[i: i + BUILD_CHUNK] for i in range(0, len(standardised), BUILD_CHUNK))
        return self._fit(chunks, standardised["unique_id"].astype(str), clusters)

    def _fit(self, chunks, ids: pd.Series, clusters: pd.DataFrame) -> "Resolver":
        person = clusters.drop_duplicates("record_id").set_index("record_id")["person_id"]
        missing = ~ids.isin(person.index)
        if missing.any():
            raise ValueError(f"{int(missing.sum())} records have no person in the clustering "
                             f"(first: {ids[missing].iloc[0]!r})")
        self.review_pairs_: list[dict] = []
        self.model_: MatcherModel = self.base_model.for_population(len(ids))
        self.scorer_: Scorer = Scorer(self.model_.splink)
        rules = [r["blocking_rule"] if isinstance(r, dict) else r
                 for r in self.model_.splink.get("blocking_rules_to_generate_predictions", [])]
        specs, self.unusable_rules_ = key_specs(rules, set(self.scorer_.columns_) | set(STANDARD_COLUMNS))
        index = CandidateIndex(specs, self.scorer_.columns_, self.scorer_.tf_columns_, max_scored=self.max_scored)
        index.build(({c: _column(chunk, c) for c in index.column_names} for chunk in chunks),
                    ids.to_numpy(dtype=object), person.loc[ids].to_numpy(dtype=object))
        self.index_: CandidateIndex = index
        settle_memory()
        return self

    # ---------------------------------------------------------------- queries
    def resolve(self, subject: Subject | Mapping) -> Resolution:
        """The persons `subject` may be, best first, with status (see module docstring)."""
        if not isinstance(subject, Subject):
            subject = Subject.model_validate(subject)
        query, approximate = standardise_subject(subject)
        with self.lock:
            return self._resolve_standardised(query, YEAR_SLACK if approximate else 0, context=True)

    def _resolve_standardised(self, query: Mapping[str, object], year_slack: int, context: bool = False,
                              exclude: int | None = None) -> Resolution:
        index, scorer = self._ready()
        extras = Extras()
        encoded = index.encode_query(query, extras)
        found = index.candidates(encoded, year_slack)
        slots = found.slots if exclude is None else found.slots[found.slots != exclude]
        if len(slots) == 0:
            return Resolution("no_match", [], 0, found.skipped_keys)
        scores = scorer.score(encoded, index.rows(slots), len(slots), index.tf, index.vocab, extras)
        if context:
            scores.drop_disagreement(j for j, c in enumerate(scorer.comparisons_) if c.field in self.context_comparisons)
        candidates = self._best_per_person(slots, scores, corroborate=context)
        return Resolution(self._status(candidates), candidates, int(len(slots)), found.skipped_keys)

    def _best_per_person(self, slots: np.ndarray, scores: Scores, corroborate: bool) -> list[Candidate]:
        index, scorer = self._ready()
        probs = probability(scores.match_weight)
        graded = np.flatnonzero(probs >= self.model_.thresholds.possible)   # only these can be answers
        order = _best_first(graded, np.round(scores.match_weight[graded], 9), lambda rows: index.record_ids_at(slots[rows]))
        seen: set[int] = set()
        out: list[Candidate] = []
        for row in order:
            person = int(index.person_code[slots[row]])
            if person in seen:                   # a person's best record came first
                continue
            seen.add(person)
            grade = self.model_.thresholds.grade(float(probs[row]))
            if grade == "certain" and (scores.weights[row].min() <= -CONFLICT_BITS
                                       or corroborate and not _corroborated(scorer, scores.levels[row])):
                grade = "probable"
            out.append(Candidate(index.person_id(slots[row]), index.record_id(slots[row]), float(probs[row]),
                                 float(scores.match_weight[row]),
                                 grade, scorer.explain(scores, row)))
            if len(out) == self.max_candidates:
                break
        return out

    def _status(self, candidates: list[Candidate]) -> str:
        if not candidates:
            return "no_match"
        strong = [c for c in candidates if GRADE_ORDER[c.grade] <= GRADE_ORDER["probable"]]
        if len(strong) >= 2 and strong[0].match_weight - strong[1].match_weight <= self.ambiguity_margin:
            return "ambiguous"
        return "resolved"

    # ---------------------------------------------------------------- changes
    def add_record(self, record: Mapping[str, object], keep_person: str | None = None) -> AddOutcome:
        """Index a new record (canonical field names, `record_id` required).

        It joins the person of its best-matching record when that match is `certain` -- or of the next
        `certain` one, if the batch link's generation rule (Jr against Sr, a suffixed namesake born a
        generation apart: `matching.attested`) keeps it from the first; otherwise it starts a new person
        (`keep_person`, if given, else a fresh id), and if its best match is at least `possible` a review
        pair is opened for a steward (`review_pairs_`; with the rule in `detail` when one held it apart).
        """
        std = standardise_row(record)
        record_id = std["unique_id"]
        if not record_id:
            raise ValueError("a record needs a record_id")
        with self.lock:
            index, _ = self._ready()
            if record_id in index.slot_of:
                raise KeyError(f"record {record_id!r} is already indexed; update it instead")
            result = self._resolve_standardised(std, 0)
            best = result.candidates[0] if result.candidates else None
            held, joins = None, None
            for candidate in result.candidates:         # the first certain person the generation rule allows
                if candidate.grade != "certain":
                    break
                rule = self._generation_rule(std, candidate.person_id)
                if rule is None:
                    joins = candidate
                    break
                held = held or rule
            if joins is not None:
                outcome = AddOutcome(record_id, joins.person_id, True, joins)
            else:
                outcome = AddOutcome(record_id, keep_person or fresh_person_id(record_id, index.person_id_set), False, best)
            if best is not None and (joins is None or held is not None):
                outcome.review_pair = {"record_id_l": record_id, "record_id_r": best.record_id,
                                       "match_probability": best.match_probability, "reason": "new record joined no person"}
                if held is not None:          # the best match's person, which the rule kept it from
                    outcome.review_pair |= {"reason": "new record held apart from its best match's person", "detail": held}
                self.review_pairs_.append(outcome.review_pair)
            index.add(std, record_id, outcome.person_id)
            return outcome

    def _generation_rule(self, std: Mapping[str, object], person_id: str) -> str | None:
        """The batch link's generation rule (`matching.attested.AttestedIdentity.generation`) for a record about to
        join `person_id`: 'suffix' or 'generation' if it must not, else None. The person's suffix marks are its
        records' together, its birth year a single record's own or the one its records attest."""
        own_mark, own_year = suffix_mark(std.get("name_suffix")), std.get("birth_year")
        own_year = -1 if own_year is None or own_year != own_year else int(own_year)
        if not own_mark and own_year < 0:         # neither rule can refuse a record with no suffix and no birth year
            return None
        index, _ = self._ready()
        slots = index.slots_of(person_id)
        marks = 0
        for suffix in index.texts_at("name_suffix", slots):
            marks |= suffix_mark(suffix)
        years = [int(y) for y in index.data["birth_year"][slots].tolist() if y == y]
        tally: dict[int, int] = {}
        for year in years:
            tally[year] = tally.get(year, 0) + 1
        year = (years[0] if len(years) else -1) if len(slots) == 1 else AttestedIdentity.birth_year_of(tally)
        return AttestedIdentity.generation(own_mark, marks, own_year, year)

    def put_record(self, record: Mapping[str, object], person_id: str) -> None:
        """Index a record under a person decided elsewhere (another worker, a batch link), replacing any copy."""
        std = standardise_row(record)
        with self.lock:
            index, _ = self._ready()
            if std["unique_id"] in index.slot_of:
                index.delete(std["unique_id"])
            index.add(std, std["unique_id"], person_id)

    def update_record(self, record: Mapping[str, object]) -> AddOutcome:
        """Replace an indexed record's values; it is re-matched as if newly added.

        A record that was a person on its own keeps that person's id unless it now joins
        another person at `certain`: a feed resending a record does not churn person ids.
        """
        with self.lock:
            index, _ = self._ready()
            record_id = str(record["record_id"])
            if record_id not in index.slot_of:
                raise KeyError(f"record {record_id!r} is not indexed")
            previous = index.person_of(record_id)
            self.delete_record(record_id)
            return self.add_record(record, keep_person=None if index.has_records(previous) else previous)

    def delete_record(self, record_id: str) -> None:
        """Remove a record from every later answer."""
        with self.lock:
            index, _ = self._ready()
            if record_id not in index.slot_of:
                raise KeyError(f"record {record_id!r} is not indexed")
            index.delete(record_id)

    def _ready(self) -> tuple[CandidateIndex, Scorer]:
        if getattr(self, "index_", None) is None or getattr(self, "scorer_", None) is None:
            raise RuntimeError("the resolver has no index yet: call fit() first")
        return self.index_, self.scorer_


def _best_first(rows: np.ndarray, weights: np.ndarray, record_ids: Callable[[np.ndarray], list[str]]) -> np.ndarray:
    """`rows` by weight, highest first; equal weights by record id, so answers never depend on slot order.
    Record ids are decoded only when two weights tie (decoding every candidate's id cost more than the rest)."""
    order = np.argsort(-weights, kind="stable")
    ranked = weights[order]
    if not np.any(ranked[1:] == ranked[:-1]):
        return rows[order]
    return rows[np.lexsort((np.array(record_ids(rows), dtype=str), -weights))]


def _corroborated(scorer: Scorer, levels: np.ndarray) -> bool:
    """Whether one scored pair's levels corroborate identity (see `CORROBORATING_FIELDS`)."""
    strong = {c.field for c, level in zip(scorer.comparisons_, levels)
              if level >= 0 and c.levels[level].weight >= CORROBORATION_BITS}
    return all(strong.intersection(group) for group in CORROBORATING_FIELDS)


def settle_memory() -> None:
    """After a build (and after dropping its inputs): give freed memory back to the OS and keep the GC off the index's objects.

    Standardising leaves hundreds of MB freed but still mapped (glibc keeps it); `malloc_trim`
    returns it. The index's millions of long-lived objects are frozen out of the cyclic GC,
    whose full pass over them would otherwise take ~0.3 s, sixty query budgets.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):      # not glibc: nothing to trim
        pass
    gc.freeze()


def _column(standardised: pd.DataFrame, name: str) -> np.ndarray:
    """A standardised column as an object array with None for nulls (ints for birth_year)."""
    if name not in standardised.columns:
        return np.full(len(standardised), None, dtype=object)
    series = standardised[name]
    if name == "birth_year":
        return np.array([None if pd.isna(v) else int(v) for v in series], dtype=object)
    return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)

"""Steward decisions: match / not a match / unsure on a review pair, split and merge of persons, undo.

Every action that changes who is who takes effect at once and everywhere: in one transaction it
rewrites the moved records' `clusters` rows, stores the decision (`review_decisions`, with its
effect and the before/after person of every moved record), a `person_events` row for a merge or a
split, the constraints it adds (`review_constraints`), one `changes` upsert per moved record (so
every other worker's resolver moves it before its next request, api.service.changes) and, last, ONE
audit event. After the commit this worker's resolver moves the records under its lock. The
queue (which pairs, in what order) is api.review.queue; the HTTP endpoints api.web.review_api.

- `match`: the two records' persons merge (if different). The person with more records keeps its
  id (a tie: the smaller id); the other's records move to it. A must-link for the next bulk link.
- `not_a_match`: if the two records are in one person, the *right* record (for a new-record pair
  the newcomer, see api.service.stewardship) leaves it for a fresh person id
  (matching.cluster.fresh_person_id); from then on the resolver answers it under the new person
  only. A cannot-link.
- `unsure` (a note is required): nothing moves and nothing is constrained; the pair leaves the
  default queue and is listed under `QueueFilters(status="unsure")`.
- A decided pair is not decided again: undo its decision first (ValueError). A decision that
  contradicts live decisions (a match uniting records decided not a match, a not-a-match of
  records that match decisions hold together) is refused naming them (ValueError).
- `split_record`: the record leaves its person for a fresh id and is cannot-linked with every
  record that stayed. `merge_persons`: the larger person keeps its id (tie: smaller id); one
  record of each (the smallest id) is must-linked.
- Only one record moves out of a person: moving a record that a live `match` decision or merge
  holds to a record that stays is refused, naming that decision or person event (undo it first).

**Undo** (`undo` for a decision, `undo_person_event` for a split or merge made on a person page)
restores every moved record to the person it had before, marks the decision (and its event and
constraints) undone, reopens the pair, and writes its own audit event. It is refused when it was
already undone, when a later live decision or split/merge touched any record the action touched
(its pair, the records it moved, the records its constraints name) -- undo that one first, so
several steps are undone newest first per record -- or when a moved record has since been put in
another person by something else (a bulk link, a feed).

Errors: KeyError for an unknown pair, decision, person or record; ValueError for a refused
action (the API answers 404 and 409).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select, update

from api.review.moves import (add_event, candidates, check, constrain, finish, identity, later_blockers,
                              members, merge_plan, persons_of, put, restore, write_moves)
from api.review.queue import REASON_TEXT, QueueEntry, entry, label_rows, next_open_pair
from api.service.audit import append, record_event
from api.service.stewardship import fresh_person
from api.service.store import (RECORD_FIELDS, begin_writing, clusters, locked_row, person_events, records, review_constraints,
                               review_decisions, review_pairs)
from matching.encoding import Extras
from matching.standardise import standardise_row

DECISIONS = ("match", "not_a_match", "unsure")
PRIOR_LEVEL = "prior: how likely two records picked at random match"


@dataclass
class PairDetail:
    entry: QueueEntry
    left: dict
    right: dict
    explanation: list[dict]          # [{"field","level","weight"}]: the prior first, then each comparison
    match_weight: float              # the sum of the explanation's weights (the resolver's scorer, now)
    match_probability: float
    decisions: list[dict]


@dataclass
class DecisionResult:
    decision_id: int
    pair_id: int
    decision: str
    note: str | None
    reviewer: str                    # who decided
    created_at: str                  # when it was decided
    effect: dict
    next_pair_id: int | None
    undone_at: str | None = None     # set by `undo`
    undone_by: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# ------------------------------------------------------------------------------------------ reading
def _record(connection, record_id: str) -> dict | None:
    row = connection.execute(select(records).where(records.c.record_id == record_id)).mappings().first()
    return None if row is None else identity(row)


def person_records(store, person_id: str) -> list[dict]:
    """The records of one person, identity fields only (record_id + every RECORD_FIELDS value); [] if unknown."""
    with store.engine.connect() as connection:
        rows = connection.execute(select(records).join(clusters, clusters.c.record_id == records.c.record_id)
                                  .where(clusters.c.person_id == person_id).order_by(records.c.record_id)).mappings()
        return [identity(r) for r in rows]


def _decision_dict(row) -> dict:
    return {"decision_id": row.id, "pair_id": row.pair_id, "record_id_l": row.record_id_l, "record_id_r": row.record_id_r,
            "decision": row.decision, "note": row.note, "reviewer": row.reviewer, "created_at": row.created_at,
            "effect": json.loads(row.effect) if row.effect else {}, "undone_at": row.undone_at,
            "undone_by": row.undone_by}


def recent_decisions(store, reviewer: str | None = None, limit: int = 20) -> list[dict]:
    """Live (not undone) pair decisions, newest first: for an undo list."""
    statement = (select(review_decisions).where(review_decisions.c.undone_at.is_(None), review_decisions.c.pair_id.is_not(None))
                 .order_by(review_decisions.c.id.desc()).limit(limit))
    if reviewer is not None:
        statement = statement.where(review_decisions.c.reviewer == reviewer)
    with store.engine.connect() as connection:
        return [_decision_dict(r) for r in connection.execute(statement)]


def recent_person_events(store, limit: int = 20) -> list[dict]:
    """Live merges and splits made on person pages (not by a pair decision), newest first."""
    with store.engine.connect() as connection:
        rows = connection.execute(select(person_events).where(person_events.c.undone_at.is_(None),
                                                              person_events.c.decision_id.is_(None))
                                  .order_by(person_events.c.event_id.desc()).limit(limit)).mappings().all()
    return [{**dict(r), "records": json.loads(r["records"])} for r in rows]


def _score_pair(resolver, left: dict, right_id: str) -> tuple[list[dict], float | None]:
    """The pair's explanation under the resolver's own scorer (the prior first), and its total match weight."""
    fields = {k: v for k, v in left.items() if v is not None}
    with resolver.lock:
        index, scorer = resolver.index_, resolver.scorer_
        slot = index.slot_of.get(right_id) if index is not None else None
        if slot is None or len(fields) < 2:
            return [], None
        extras = Extras()
        encoded = index.encode_query(standardise_row(fields), extras)
        scores = scorer.score(encoded, index.rows(np.array([slot], dtype=np.int64)), 1, index.tf, index.vocab, extras)
        prior = {"field": "prior", "level": PRIOR_LEVEL, "weight": round(float(scorer.prior_weight_), 6)}
        return [prior] + scorer.explain(scores, 0), float(scores.match_weight[0])


def pair_detail(service, pair_id: int) -> PairDetail:
    """One pair: both records, the field-by-field evidence, and its decisions (KeyError if unknown)."""
    with service.store.engine.connect() as connection:
        pair = connection.execute(select(review_pairs).where(review_pairs.c.pair_id == pair_id)).first()
        if pair is None:
            raise KeyError(f"no review pair {pair_id}")
        found = entry(connection, pair_id)
        blank = {f: None for f in RECORD_FIELDS}
        left = _record(connection, pair.record_id_l) or {"record_id": pair.record_id_l, **blank}
        right = _record(connection, pair.record_id_r) or {"record_id": pair.record_id_r, **blank}
        history = [_decision_dict(r) for r in connection.execute(
            select(review_decisions).where(review_decisions.c.pair_id == pair_id).order_by(review_decisions.c.id))]
    if found is None:             # a record of the pair has been deleted since
        found = QueueEntry(pair.pair_id, pair.record_id_l, pair.record_id_r, None, None,
                           sorted({r["agency"] for r in (left, right) if r["agency"]}), float(pair.match_probability),
                           pair.reason, REASON_TEXT.get(pair.reason, pair.reason), False, pair.created_at, 0.0,
                           pair.status, decision_id=pair.decision_id, detail=pair.detail)
    explanation, weight = _score_pair(service.resolver, left, pair.record_id_r)
    if weight is None:
        weight = float(np.log2(pair.match_probability / (1 - pair.match_probability))) if 0 < pair.match_probability < 1 else 0.0
    probability = float(1.0 / (1.0 + np.exp2(-np.clip(weight, -1000, 1000))))
    return PairDetail(found, left, right, explanation, weight, probability, history)


# ------------------------------------------------------------------------------------------ decisions
def decide(service, pair_id: int, decision: str, reviewer: str, note: str | None = None) -> DecisionResult:
    """Decide an open pair (see the module docstring); the effect holds from the next request on every worker."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}")
    note = (note or "").strip() or None
    if decision == "unsure" and note is None:
        raise ValueError("an unsure decision needs a note saying what is unclear")
    now = _now()
    with service.resolver.lock:
        with service.store.begin() as connection:
            pair = locked_row(connection, select(review_pairs).where(review_pairs.c.pair_id == pair_id))
            if pair is None:
                raise KeyError(f"no review pair {pair_id}")
            if pair.status != "open":
                raise ValueError(f"pair {pair_id} is already decided (decision {pair.decision_id}): undo that decision first")
            left, right = pair.record_id_l, pair.record_id_r
            persons = persons_of(connection, [left, right], lock=True)
            if decision != "unsure" and len(persons) < 2:
                raise ValueError(f"a record of pair {pair_id} is no longer in the store")
            moves, added, kind, event_people = [], [], None, None
            if decision == "match":
                added = [("must_link", left, right)]
                if persons[left] != persons[right]:
                    kept, merged, _, moved = merge_plan(connection, persons[left], persons[right])
                    moves = [(rid, merged, kept) for rid in moved]
                    kind, event_people = "merge", (kept, merged)
            elif decision == "not_a_match":
                added = [("cannot_link", left, right)]
                if persons[left] == persons[right]:
                    members(connection, persons[right])              # locks the person's rows
                    to = fresh_person(connection, right, service.resolver.index_.person_id_set)
                    moves = [(right, persons[right], to)]
                    kind, event_people = "split", (persons[right], to)
            check(connection, moves, added)
            write_moves(connection, moves)
            decision_id = connection.execute(insert(review_decisions).values(
                record_id_l=left, record_id_r=right, decision=decision, note=note, reviewer=reviewer, created_at=now,
                pair_id=pair_id)).inserted_primary_key[0]
            event_id = None
            effect: dict = {}
            if kind:
                event_id = add_event(connection, kind, *event_people, moves, reviewer, note, now, decision_id)
                moved = {"records_moved": len(moves), "record_ids": [m[0] for m in moves]}
                effect = ({"merged": {"event_id": event_id, "kept_person_id": event_people[0],
                                      "merged_person_id": event_people[1], **moved}} if kind == "merge" else
                          {"split": {"event_id": event_id, "record_id": right, "from_person_id": event_people[0],
                                     "to_person_id": event_people[1], **moved}})
            connection.execute(update(review_decisions).where(review_decisions.c.id == decision_id).values(
                effect=json.dumps(effect), moves=json.dumps([list(m) for m in moves]), event_id=event_id))
            constrain(connection, added, now, decision_id, event_id)
            connection.execute(update(review_pairs).where(review_pairs.c.pair_id == pair_id).values(
                status="decided", decision_id=decision_id, updated_at=now))
            finish(connection, moves, "review_decision", {
                "principal": reviewer, "role": "steward", "pair_id": pair_id, "decision_id": decision_id,
                "decision": decision, "record_ids": [left, right], "note_given": note is not None, "effect": effect,
                "candidates": candidates(moves, *((r, persons.get(r)) for r in (left, right)))}, reviewer)
        put(service, moves)
    with service.store.engine.connect() as connection:
        following = next_open_pair(connection)
    return DecisionResult(decision_id, pair_id, decision, note, reviewer, now, effect, following)


def undo(service, decision_id: int, reviewer: str) -> DecisionResult:
    """Undo a live pair decision: records back where they were, the pair open again (see the module docstring)."""
    now = _now()
    with service.resolver.lock:
        with service.store.begin() as connection:
            row = locked_row(connection, select(review_decisions).where(review_decisions.c.id == decision_id))
            if row is None or row.pair_id is None:
                raise KeyError(f"no review decision {decision_id}")
            if row.undone_at is not None:
                raise ValueError(f"decision {decision_id} was already undone ({row.undone_at}, by {row.undone_by})")
            moves = [tuple(m) for m in json.loads(row.moves or "[]")]
            later_blockers(connection, row.created_at, {row.record_id_l, row.record_id_r} | {m[0] for m in moves},
                           decision_id=decision_id)
            restored = restore(connection, moves, now, reviewer, decision_id, row.event_id)
            connection.execute(update(review_decisions).where(review_decisions.c.id == decision_id).values(
                undone_at=now, undone_by=reviewer))
            connection.execute(update(review_pairs).where(review_pairs.c.pair_id == row.pair_id,
                                                          review_pairs.c.decision_id == decision_id)
                               .values(status="open", decision_id=None, updated_at=now))
            effect = ({"restored": {"event_id": row.event_id, "records": {rid: to for rid, _, to in restored}}}
                      if restored else {})
            finish(connection, restored, "review_undo", {
                "principal": reviewer, "role": "steward", "decision_id": decision_id, "pair_id": row.pair_id,
                "decision": row.decision, "record_ids": [row.record_id_l, row.record_id_r], "effect": effect,
                "candidates": candidates(restored)}, reviewer)
        put(service, restored)
    with service.store.engine.connect() as connection:
        following = next_open_pair(connection)
    return DecisionResult(decision_id, row.pair_id, row.decision, row.note, row.reviewer, row.created_at, effect, following,
                          undone_at=now, undone_by=reviewer)


# ------------------------------------------------------------------------------------------ person pages
def split_record(service, person_id: str, record_id: str, reviewer: str, note: str | None = None) -> dict:
    """Move a record out of its person, to a fresh person id (cannot-linked with the records that stayed)."""
    note = (note or "").strip() or None
    now = _now()
    with service.resolver.lock:
        with service.store.begin() as connection:
            begin_writing(connection)
            everyone = members(connection, person_id)
            if not everyone:
                raise KeyError(f"no person {person_id!r}")
            if record_id not in everyone:
                raise KeyError(f"record {record_id!r} is not in person {person_id!r}")
            rest = [r for r in everyone if r != record_id]
            if not rest:
                raise ValueError(f"nothing to split: {record_id!r} is the only record of {person_id!r}")
            to = fresh_person(connection, record_id, service.resolver.index_.person_id_set)
            moves = [(record_id, person_id, to)]
            added = [("cannot_link", record_id, other) for other in rest]
            check(connection, moves, added)
            write_moves(connection, moves)
            event_id = add_event(connection, "split", person_id, to, moves, reviewer, note, now)
            constrain(connection, added, now, event_id=event_id)
            result = {"event_id": event_id, "record_id": record_id, "from_person_id": person_id, "to_person_id": to,
                      "records_moved": len(moves), "record_ids": [m[0] for m in moves]}
            finish(connection, moves, "person_split", {"principal": reviewer, "role": "steward", **result,
                                                        "note_given": note is not None, "candidates": candidates(moves)},
                    reviewer)
        put(service, moves)
    return result


def merge_persons(service, person_a: str, person_b: str, reviewer: str, note: str | None = None) -> dict:
    """Merge two persons: the one with more records keeps its id (a tie: the smaller id)."""
    note = (note or "").strip() or None
    if person_a == person_b:
        raise ValueError("a person cannot be merged with itself")
    now = _now()
    with service.resolver.lock:
        with service.store.begin() as connection:
            begin_writing(connection)
            for person in (person_a, person_b):
                if not members(connection, person):
                    raise KeyError(f"no person {person!r}")
            kept, merged, kept_records, moved = merge_plan(connection, person_a, person_b)
            moves = [(rid, merged, kept) for rid in moved]
            added = [("must_link", kept_records[0], moved[0])]
            check(connection, moves, added)
            write_moves(connection, moves)
            event_id = add_event(connection, "merge", kept, merged, moves, reviewer, note, now)
            constrain(connection, added, now, event_id=event_id)
            result = {"event_id": event_id, "kept_person_id": kept, "merged_person_id": merged,
                      "records_moved": len(moved), "record_ids": moved}
            finish(connection, moves, "person_merge", {"principal": reviewer, "role": "steward", **result,
                                                        "note_given": note is not None, "candidates": candidates(moves)},
                    reviewer)
        put(service, moves)
    return result


def undo_person_event(service, event_id: int, reviewer: str) -> dict:
    """Undo a split or merge made on a person page (one made by a pair decision is undone with `undo`)."""
    now = _now()
    with service.resolver.lock:
        with service.store.begin() as connection:
            row = locked_row(connection, select(person_events).where(person_events.c.event_id == event_id))
            if row is None:
                raise KeyError(f"no person event {event_id}")
            if row.decision_id is not None:
                raise ValueError(f"person event {event_id} was made by decision {row.decision_id}: undo that decision")
            if row.undone_at is not None:
                raise ValueError(f"person event {event_id} was already undone ({row.undone_at}, by {row.undone_by})")
            moves = [tuple(m) for m in json.loads(row.records)]
            touched = {m[0] for m in moves} | {x for c in connection.execute(
                select(review_constraints.c.record_id_l, review_constraints.c.record_id_r)
                .where(review_constraints.c.event_id == event_id)) for x in c}
            later_blockers(connection, row.created_at, touched, event_id=event_id)
            restored = restore(connection, moves, now, reviewer, None, event_id)
            result = {"event_id": event_id, "kind": row.kind, "undone_at": now,
                      "restored": {rid: to for rid, _, to in restored}}
            finish(connection, restored, "person_event_undo", {"principal": reviewer, "role": "steward", **result,
                                                               "candidates": candidates(restored)}, reviewer)
        put(service, restored)
    return result


def audit_read(store, action: str, payload: dict, reviewer: str) -> None:
    """One audit event for a steward's read (queue, pair, person page): for callers that show what they read."""
    record_event(store, action, {"principal": reviewer, "role": "steward", **payload}, principal=reviewer)


LABEL_COLUMNS = ("record_id_l", "record_id_r", "decision", "match_probability", "reviewer", "decided_at")


def export_labels(store, out, principal: str = "cli:export-labels") -> int:
    """Write live pair decisions as a labels CSV (`LABEL_COLUMNS`; evaluation.linkage.labels reads the first four) to the
    path `out`; one audit event; how many rows."""
    with store.begin() as connection:
        rows = label_rows(connection)
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        with open(partial, "w", newline="", encoding="utf-8") as sink:
            writer = csv.DictWriter(sink, fieldnames=LABEL_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "match_probability": f"{row['match_probability']:.10g}"})
        os.replace(partial, target)
        append(connection, "review_labels_export", {"principal": principal, "file": str(target), "rows": len(rows),
                                                    "decisions": {d: sum(r["decision"] == d for r in rows) for d in DECISIONS}},
               principal=principal)
    return len(rows)


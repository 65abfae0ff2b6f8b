"""Stewardship as the writers see it: the pairs they open for review, and the stewards' decisions they obey.

**Opening pairs** (`open_pairs`). `review_pairs` holds one row per unordered pair of records (`pair_key`
is the two ids sorted), filled from two places:

- `batch_band`: a bulk link in `briefing ingest` (api.service.ingest) stores every scored pair whose
  probability is in the model's review band `[thresholds.review_low, thresholds.link)`.
- `held_apart`: the same bulk link stores, per two persons that scores at or above the link
  threshold would have joined but clustering kept apart, the strongest such pair, with the rule in
  `detail` ("few links", "date of birth", "given name", "suffix", "generation":
  matching.cluster.Clustering.held_apart); and a record written one at a time that scored `certain`
  against a person the same "suffix" or "generation" rule keeps it from (`from_resolver`, below).
- `new_record`: a record written through `POST /v1/records` or a small ingest that joined no
  person at `certain` (the resolver's `AddOutcome.review_pair`). Such a pair is stored as
  (best-matching existing record, new record) (`from_resolver`): the *right* record is the
  newcomer, the one a `not_a_match` decision splits out (api.review.decisions).

A pair seen again is never reopened: a decided pair keeps its decision (and its probability); an
open pair takes the newer probability, reason, detail and orientation when any of them differs, and is left
alone when none does (its `updated_at` is when its content last changed): a staged bulk load opens its pairs
inside its swap (api.service.staging), and a pair rewritten with its index entries for nothing is time every
other writer waits. Which pairs wait, in what order: api.review.queue.

**Constraints.** Live decisions are constraints: `match` a must-link, `not_a_match` a cannot-link
(and a split of a record out of a person cannot-links it with the records that stayed, a merge
of two persons must-links one record of each). `live_constraints` feeds the next bulk link;
`steward_person` keeps a single record written through a feed or a small ingest on the right
side of them (the resolver knows scores, not decisions); `fresh_person` gives a record split out
of a person an id used nowhere.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal, get_args

from sqlalchemy import and_, func, or_, select

from api.service.store import clusters, dialect_insert, person_events, review_constraints, review_pairs
from matching.cluster import fresh_person_id

#: Why a pair waits for a steward (module docstring); the one list every layer takes them from.
Reason = Literal["new_record", "batch_band", "held_apart"]
REASONS: tuple[str, ...] = get_args(Reason)
#: What an open pair seen again takes from the newer sighting, when any of it differs; then also `updated_at`.
_REOPENED = ("record_id_l", "record_id_r", "match_probability", "reason", "detail")
_SEP = "\x1f"


def pair_key(record_id_l: str, record_id_r: str) -> str:
    return _SEP.join(sorted((str(record_id_l), str(record_id_r))))


def from_resolver(review_pair: dict) -> dict:
    """A resolver's review pair (new record, best match) as stored: (best match, new record); a pair the
    generation rule held apart (its `detail`) is queued as `held_apart` with the rule."""
    pair = {"record_id_l": review_pair["record_id_r"], "record_id_r": review_pair["record_id_l"],
            "match_probability": review_pair["match_probability"]}
    if review_pair.get("detail"):
        pair |= {"reason": "held_apart", "detail": review_pair["detail"]}
    return pair


def open_pairs(connection, pairs, reason: str, now: str | None = None) -> int:
    """Store pairs (dicts with record_id_l, record_id_r, match_probability; a pair's own `reason` and
    `detail` override `reason`) for review; how many were given.

    A pair already stored keeps its row; an open one takes the newer probability, reason, detail and
    orientation (which record is left and which right: a `new_record` pair's right record is the newcomer)
    when any of them differs.
    """
    values = pair_rows(pairs, reason, now)
    if values:
        statement = dialect_insert(connection)(review_pairs)
        changed = or_(*(review_pairs.c[name].is_distinct_from(statement.excluded[name]) for name in _REOPENED))
        connection.execute(statement.on_conflict_do_update(          # one statement run for every pair (executemany)
            index_elements=["pair_key"], where=and_(review_pairs.c.status == "open", changed),
            set_={name: statement.excluded[name] for name in _REOPENED + ("updated_at",)}),
            values)
    return len(values)


def pair_rows(pairs, reason: str, now: str | None = None) -> list[dict]:
    """The `review_pairs` rows `open_pairs` writes for `pairs`: one per pair of distinct records, in pair-key
    order (so pair ids follow the pairs, not the link's row order)."""
    if reason not in REASONS:
        raise ValueError(f"unknown review reason {reason!r}")
    now = now or datetime.now(timezone.utc).isoformat()
    rows: dict[str, dict] = {}
    for pair in pairs:
        left, right = str(pair["record_id_l"]), str(pair["record_id_r"])
        why = pair.get("reason", reason)
        if why not in REASONS:
            raise ValueError(f"unknown review reason {why!r}")
        if left != right:
            rows.setdefault(pair_key(left, right), {
                "pair_key": pair_key(left, right), "record_id_l": left, "record_id_r": right,
                "match_probability": float(pair["match_probability"]), "reason": why, "detail": pair.get("detail"),
                "status": "open", "created_at": now, "updated_at": now})
    return sorted(rows.values(), key=lambda row: row["pair_key"])


def open_staged_pairs(connection, staged: str) -> None:
    """`open_pairs` for rows staged in the table `staged` (api.service.staging), by one statement inside the database."""
    names = ", ".join(c.name for c in review_pairs.columns if c.name != "pair_id")
    taken = ", ".join(f"{name} = excluded.{name}" for name in _REOPENED + ("updated_at",))
    changed = " OR ".join(f"review_pairs.{name} IS NOT excluded.{name}" for name in _REOPENED)
    connection.exec_driver_sql(
        f'INSERT INTO review_pairs ({names}) SELECT {names} FROM "{staged}" WHERE true ORDER BY pair_key '
        f"ON CONFLICT (pair_key) DO UPDATE SET {taken} WHERE review_pairs.status = 'open' AND ({changed})")


def live_constraints(connection) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(must_link, cannot_link) record id pairs of every live steward decision, for the next bulk link."""
    rows = connection.execute(select(review_constraints.c.kind, review_constraints.c.record_id_l,
                                     review_constraints.c.record_id_r)
                              .where(review_constraints.c.undone_at.is_(None)).order_by(review_constraints.c.id)).all()
    must = [(r.record_id_l, r.record_id_r) for r in rows if r.kind == "must_link"]
    cannot = [(r.record_id_l, r.record_id_r) for r in rows if r.kind == "cannot_link"]
    return must, cannot


def constraints_touching(connection, record_ids) -> list:
    """Live constraint rows naming any of `record_ids`."""
    ids = list(record_ids)
    if not ids:
        return []
    found = []
    for start in range(0, len(ids), 500):
        chunk = ids[start: start + 500]
        found += connection.execute(select(review_constraints).where(
            review_constraints.c.undone_at.is_(None),
            or_(review_constraints.c.record_id_l.in_(chunk), review_constraints.c.record_id_r.in_(chunk)))).all()
    unique = {row.id: row for row in found}
    return [unique[k] for k in sorted(unique)]


def steward_person(connection, record_id: str, proposed: str, taken, previous: str | None = None
                   ) -> tuple[str, bool | None]:
    """The person a record written by a feed or a small ingest belongs to, given stewards' live decisions.

    `proposed` is the resolver's choice. A must-link partner's person wins (unless a cannot-link
    forbids it); a proposed person holding a cannot-link partner is refused for `previous` (the
    record's person before this write, if any and allowed) or else a fresh person id (`taken`: ids
    not to use). Returns (person_id, joined): joined is None when `proposed` stands.
    """
    rows = constraints_touching(connection, [record_id])
    if not rows:
        return proposed, None
    partners = [(r.kind, r.record_id_r if r.record_id_l == record_id else r.record_id_l) for r in rows]
    persons = dict(connection.execute(select(clusters.c.record_id, clusters.c.person_id).where(
        clusters.c.record_id.in_([p for _, p in partners]), clusters.c.record_id != record_id)).all())
    apart = {persons[p] for kind, p in partners if kind == "cannot_link" and p in persons}
    for kind, partner in reversed(partners):            # the newest must-link first
        if kind == "must_link" and partner in persons and persons[partner] not in apart:
            return persons[partner], True
    if proposed not in apart:
        return proposed, None
    if previous is not None and previous not in apart:
        return previous, False
    return fresh_person(connection, record_id, taken), False


class _Taken:
    """`in` over a worker's every-id-ever-used set plus ids found taken in the store (no copy of the big set)."""

    def __init__(self, known, extra: set[str]):
        self.known, self.extra = known, extra

    def __contains__(self, person_id) -> bool:
        return person_id in self.extra or person_id in self.known


def fresh_person(connection, seed: str, taken=()) -> str:
    """A person id (matching.cluster.fresh_person_id) used neither in `taken` nor anywhere in the store."""
    extra: set[str] = set()
    while True:
        candidate = fresh_person_id(seed, _Taken(taken, extra))
        used = connection.execute(select(func.count()).select_from(clusters).where(clusters.c.person_id == candidate)).scalar()
        used = used or connection.execute(select(func.count()).select_from(person_events).where(
            or_(person_events.c.person_id == candidate, person_events.c.related_person_id == candidate))).scalar()
        if not used:
            return candidate
        extra.add(candidate)

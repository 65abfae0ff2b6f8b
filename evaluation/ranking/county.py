"""A synthetic county's directory as ranking data: its incidents, items, feedback and relevance.

`load_county(dir)` reads what `briefing synth` writes into a `CountyContext`, which is the
`scoring.ranker_fit.FeedbackData` that production training reads (`briefing train-ranker`) and what
`evaluation.ranking.evaluate` measures against. A missing file or column, or a bad row, is a
`RankingDataError` naming the file (and line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from matching.table import TableError, read_table
from scoring.item import ContextItem
from scoring.ranker_fit import FeedbackData


class RankingDataError(TableError):
    """A county directory lacks a file or column the ranking needs: the message names the file."""


# --------------------------------------------------------------------------- data


def _read(directory: Path, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    return read_table(directory / name, columns, f"the ranking's {name}", error=RankingDataError)


@dataclass
class CountyContext(FeedbackData):
    """What ranking evaluation and training read from a synthetic county directory: the feedback data
    training reads (`when`: incident id -> (call type, received time); `items`: the items of incident
    subjects, by id; `person_of_item`, `person_items`, `feedback`), plus the incidents and relevance."""

    incidents: pd.DataFrame                              # incident_id, call_type, received_at, person_key
    relevance: pd.DataFrame | None = None
    files: dict[str, str] = field(default_factory=dict)


def load_county(county_dir: str | Path, relevance: bool = True) -> CountyContext:
    """Read incidents, records (agency), truth (record → person), context items, feedback (and relevance).

    Only the items of incident subjects are parsed. Raises `RankingDataError` naming a missing file.
    """
    d = Path(county_dir)
    if not d.is_dir():
        raise RankingDataError(f"{d}: no such directory")
    incidents = _read(d, "incidents.csv", ("incident_id", "call_type", "received_at", "person_key"))
    feedback = _read(d, "feedback.csv", ("incident_id", "item_id", "helped"))
    rel = _read(d, "relevance.csv", ("incident_id", "item_id", "relevance")) if relevance else None
    items_frame = _read(d, "context_items.csv", ("item_id", "record_id", "category", "code", "legal_category"))
    records = _read(d, "records.csv", ("record_id", "agency"))
    truth = _read(d, "truth.csv", ("record_id", "person_key"))
    if not feedback.empty and not feedback["helped"].isin(["0", "1"]).all():
        bad = int(np.flatnonzero(~feedback["helped"].isin(["0", "1"]).to_numpy())[0]) + 2
        raise RankingDataError(f"{d / 'feedback.csv'}:{bad}: helped must be 0 or 1")
    when = {}
    for row in incidents[["incident_id", "call_type", "received_at"]].itertuples(index=False):
        try:
            received = datetime.fromisoformat(row.received_at)
        except ValueError as exc:
            raise RankingDataError(f"{d / 'incidents.csv'}: incident {row.incident_id}: received_at: {exc}") from exc
        when[row.incident_id] = (row.call_type, received)
    person_of_record = dict(zip(truth["record_id"], truth["person_key"]))
    agency_of_record = dict(zip(records["record_id"], records["agency"]))
    subjects = set(incidents["person_key"]) - {""}
    persons = items_frame["record_id"].map(person_of_record).fillna("")
    wanted = items_frame[persons.isin(subjects).to_numpy()]
    items: dict[str, ContextItem] = {}
    person_of_item: dict[str, str] = {}
    person_items: dict[str, list[ContextItem]] = {}
    for n, row in zip(wanted.index, wanted.to_dict("records")):
        try:
            item = ContextItem(**row, record_agency=agency_of_record.get(row["record_id"]) or None)
        except ValueError as exc:
            errors = getattr(exc, "errors", lambda: [])()
            where = f"{errors[0]['loc'][0]}: {errors[0]['msg']}" if errors and errors[0].get("loc") else str(exc).splitlines()[0]
            raise RankingDataError(f"{d / 'context_items.csv'}:{n + 2}: {where}") from exc
        person = person_of_record[row["record_id"]]
        items[item.item_id] = item
        person_of_item[item.item_id] = person
        person_items.setdefault(person, []).append(item)
    return CountyContext(incidents=incidents, when=when, items=items, person_of_item=person_of_item,
                         person_items=person_items, feedback=feedback, relevance=rel,
                         files={"dir": str(d)})

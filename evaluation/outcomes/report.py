"""The referral outcomes report's figures, computed from a store (`outcomes_report`) and laid out for JSON (`as_json`).

What is read: `referrals` (one row per referral or task; `opened_by` "responder" or "rule:<id>", its kind here
"responder" or "rule"), `referral_events` (every step) and `briefed_persons` (whom each responder briefing
resolved: one row per briefing, so an incident briefed by an officer and by EMS has two rows and counts once).
Times are the stored UTC texts.

- **As of.** `as_of` (default: the latest time in the data: an incident's `received_at`, a referral's
  `created_at` / `updated_at`, an event's `at`) cuts the data: later incidents, referrals and events are left
  out, and when it is earlier than the latest time a referral's status and outcome are those of its last event
  by then. The data start is the earliest incident kept.
- **Counts.** Referrals by kind and by reason, program and call type (the call type of the incident it came from).
- **Delays.** Hours from a referral's `created_at` to its first `accept` event, and to its first contact (its
  first `contact_attempted` or `engaged` event), over the referrals that reached the step (the rest are counted
  as not reached: still open, or closed before it). Quartiles (numpy's linear interpolation) with 95 %
  percentile intervals (`evaluation.stats.ci95`) from a bootstrap over persons: a person brings all their
  referrals, as the fairness audit resamples persons.
- **Closure.** Closed referrals (rejected, cancelled, failed, completed) by status and by outcome (a closed
  referral that was not completed has no outcome: `NOT_COMPLETED`), and the referrals that reached engagement,
  as shares with Wilson 95 % intervals (`evaluation.linkage.labels.wilson_interval`).
- **Repeat 911 contacts.** A person's first engagement E is the earliest, over their referrals, of a first
  `engaged` event or a `complete` with outcome engaged_in_services. Their contacts are distinct incidents in
  `briefed_persons`: before = received in [E - 90 d, E), after = in [E, E + 90 d). Only persons with both
  windows inside [data start, as of] are compared; the others are counted (window cut at the start, at the
  end). Means per person with percentile intervals from a bootstrap over persons (`evaluation.stats.bootstrap_sums`).
  Descriptive, not an effect: people are referred after a call, often at a peak of their calls, and fewer
  calls afterwards is expected without any program (regression to the mean); there is no comparison group.
- **Groups.** Only with a county's evaluation fixtures (`county`: a `briefing synth` directory with truth.csv and
  demographics.csv), as in the fairness audit: a store person's group is that of the true person most of their
  records (`clusters`) belong to (ties: the smaller key); age band at the data start's year; no record or no
  demographics row: MISSING_GROUP. A group under MIN_PERSONS persons is shown with its counts and no rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select

from api.service.store import Store, briefed_persons, clusters, referral_events, referrals
from evaluation.linkage.labels import wilson_interval
from evaluation.linkage.metrics import AGE_BANDS, MISSING_GROUP, age_band
from evaluation.measures import MIN_PERSONS
from evaluation.stats import bootstrap_sums, ci95
from scoring.referral import CLOSED, Outcome, TaskStatus

WINDOW = pd.Timedelta(days=90)
QUANTILES = {"q1": 0.25, "median": 0.5, "q3": 0.75}
KINDS = ("all", "responder", "rule")
DIMENSIONS = ("reason", "program", "call_type")
CONTACT_EVENTS = ("contact_attempted", "engaged")
NOT_COMPLETED = "(not completed)"
ATTRIBUTES = ("race_ethnicity", "sex", "age_band")
CLOSED_STATUSES = tuple(s.value for s in TaskStatus if s in CLOSED)
HOUR = pd.Timedelta(hours=1)
ORDER = {label: k for k, (label, _low, _high) in enumerate(AGE_BANDS)}   # age bands youngest first, then by name


@dataclass(frozen=True)
class Share:
    """`count` of `total`, its proportion and Wilson 95 % interval (None when `total` is 0)."""

    count: int
    total: int
    value: float | None
    ci95: tuple[float, float] | None


@dataclass(frozen=True)
class Distribution:
    """Hours to a step over the referrals that `reached` it: quartiles (`QUANTILES` keys) and their 95 % intervals."""

    reached: int
    not_reached: int
    quantiles: dict[str, float | None]
    ci95: dict[str, tuple[float, float] | None]
    hours: tuple[float, ...] = field(repr=False, default=())


@dataclass(frozen=True)
class Closure:
    """Every referral of a kind by status; the closed ones by status and by outcome; those that reached engagement."""

    referrals: int
    open: int
    closed: int
    statuses: dict[str, int]
    by_status: dict[str, Share]
    by_outcome: dict[str, Share]
    engaged: Share


@dataclass(frozen=True)
class Mean:
    value: float | None
    ci95: tuple[float, float] | None


@dataclass(frozen=True)
class Contacts:
    """Repeat 911 contacts around first engagement: who is compared, who is left out and why, totals and means.

    A person left out may have both windows cut (`cut_at_start` and `cut_at_end` then both count them)."""

    engaged_persons: int
    included: int
    excluded: int
    cut_at_start: int
    cut_at_end: int
    before_total: int
    after_total: int
    before: Mean
    after: Mean
    change: Mean                       # after - before, per person


@dataclass(frozen=True)
class GroupRow:
    """One group of one attribute: counts always; the engaged share only from MIN_PERSONS persons referred, the
    contact means only from MIN_PERSONS persons compared."""

    attribute: str
    group: str
    persons_referred: int
    referrals: int
    persons_engaged: int
    engaged_share: Share | None
    contacts: Contacts


@dataclass(frozen=True)
class OutcomesReport:
    as_of: datetime
    data_start: datetime | None
    latest: datetime | None
    counts: dict[str, dict[str, dict[str, int]]]           # kind -> dimension -> value -> referrals
    opened_by: dict[str, int]
    delays: dict[str, dict[str, Distribution]]             # "acceptance" | "first_contact" -> kind -> distribution
    closure: dict[str, Closure]                            # kind -> closure
    contacts: Contacts
    groups: list[GroupRow] | None                          # None: no demographics were given
    facts: dict


def share(count: int, total: int) -> Share:
    return Share(int(count), int(total), count / total if total else None, wilson_interval(int(count), int(total)))


# --------------------------------------------------------------------------- reading


def _utc(value: datetime | None) -> datetime | None:
    """A naive time is UTC."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def _frame(connection, statement) -> pd.DataFrame:
    result = connection.execute(statement)
    return pd.DataFrame(result.all(), columns=list(result.keys()))


def _times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")


def read_history(store: Store) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(referrals, events, incidents) as stored, times parsed (an unreadable time becomes NaT)."""
    r, e, b = referrals.c, referral_events.c, briefed_persons.c
    with store.engine.connect() as connection:
        refs = _frame(connection, select(r.id, r.person_id, r.opened_by, r.reason, r.program, r.call_type, r.status,
                                         r.outcome, r.created_at, r.updated_at).order_by(r.id))
        events = _frame(connection, select(e.id, e.referral_id, e.event, e.status, e.outcome, e.at).order_by(e.id))
        incidents = _frame(connection, select(b.person_id, b.incident_id, b.received_at))
    for frame, columns in ((refs, ("created_at", "updated_at")), (events, ("at",)), (incidents, ("received_at",))):
        for column in columns:
            frame[column] = _times(frame[column])
    refs["kind"] = np.where(refs["opened_by"].astype(str).str.startswith("rule:"), "rule", "responder")
    return refs, events, incidents


def cut_at(refs: pd.DataFrame, events: pd.DataFrame, incidents: pd.DataFrame, as_of: datetime | None):
    """The data as of `as_of` (module docstring); (refs, events, incidents, as_of, latest time in the data)."""
    stamps = pd.concat([incidents["received_at"], refs["created_at"], refs["updated_at"], events["at"]]).dropna()
    latest = stamps.max() if len(stamps) else None
    cut = pd.Timestamp(as_of) if as_of is not None else latest
    if cut is None:
        return refs, events, incidents, as_of, None
    incidents = incidents[incidents["received_at"] <= cut]
    refs = refs[refs["created_at"] <= cut].copy()
    events = events[(events["at"] <= cut) & events["referral_id"].isin(refs["id"])]
    if latest is not None and cut < latest:
        last = events.sort_values(["at", "id"]).groupby("referral_id").last()
        refs["status"] = refs["id"].map(last["status"]).fillna(TaskStatus.requested.value)
        then = refs["id"].map(last["outcome"])             # a completion's event names its outcome; else the row's
        refs["outcome"] = then.where(then.notna() | (refs["status"] != TaskStatus.completed.value), refs["outcome"])
    return refs, events, incidents, cut.to_pydatetime(), latest.to_pydatetime() if latest is not None else None


def step_times(refs: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per referral (index id): when it was first accepted, first contacted, first engaged (NaT: not yet)."""
    outcome = events["outcome"].fillna(events["referral_id"].map(refs.set_index("id")["outcome"]))
    engaged = (events["event"] == "engaged") | ((events["event"] == "complete") &
                                                (outcome == Outcome.engaged_in_services.value))
    masks = {"accepted_at": events["event"] == "accept", "contacted_at": events["event"].isin(CONTACT_EVENTS),
             "engaged_at": engaged}
    out = pd.DataFrame(index=pd.Index(refs["id"], name="id"))
    for name, mask in masks.items():
        out[name] = events[mask].groupby("referral_id")["at"].min().reindex(out.index)
    return out


# --------------------------------------------------------------------------- figures


def _bootstrap_quantiles(values: np.ndarray, persons: np.ndarray, replicates: int,
                         rng: np.random.Generator) -> np.ndarray:
    """(len(QUANTILES) x replicates) quantiles of `values` over persons drawn with replacement (all their values)."""
    codes, uniques = pd.factorize(pd.Series(persons))
    order = np.argsort(codes, kind="stable")
    per = np.bincount(codes)
    slot = np.arange(len(values)) - np.repeat(np.cumsum(per) - per, per)
    matrix = np.full((len(uniques), per.max()), np.nan)
    matrix[codes[order], slot] = values[order]
    out = []
    for lo in range(0, replicates, 100):
        draw = matrix[rng.integers(0, len(uniques), size=(min(100, replicates - lo), len(uniques)))]
        out.append(np.nanquantile(draw.reshape(len(draw), -1), list(QUANTILES.values()), axis=1))
    return np.concatenate(out, axis=1)


def distribution(refs: pd.DataFrame, reached_at: pd.Series, replicates: int, rng: np.random.Generator) -> Distribution:
    """Hours from `created_at` to `reached_at` (aligned with `refs`) over the referrals that reached the step."""
    at, created = reached_at.reset_index(drop=True), refs["created_at"].reset_index(drop=True)
    reached = at.notna().to_numpy()
    hours = ((at - created).dt.total_seconds() / 3600).to_numpy(float)[reached]
    if len(hours) == 0:
        return Distribution(0, len(refs), {k: None for k in QUANTILES}, {k: None for k in QUANTILES})
    point = np.quantile(hours, list(QUANTILES.values()))
    draws = _bootstrap_quantiles(hours, refs["person_id"].to_numpy()[reached], replicates, rng)
    return Distribution(len(hours), int((~reached).sum()), dict(zip(QUANTILES, map(float, point))),
                        {k: ci95(draws[i]) for i, k in enumerate(QUANTILES)}, tuple(map(float, hours)))


def closure(refs: pd.DataFrame, engaged_at: pd.Series) -> Closure:
    """The closure figures of `refs` (`engaged_at` aligned with it)."""
    closed = refs[refs["status"].isin(CLOSED_STATUSES)]
    statuses = refs["status"].value_counts().to_dict()
    outcomes = closed["outcome"].where(closed["status"] == TaskStatus.completed.value).fillna(NOT_COMPLETED)
    found = outcomes.value_counts().to_dict()
    known = [o.value for o in Outcome]
    names = known + [o for o in sorted(found) if o not in known and o != NOT_COMPLETED] + [NOT_COMPLETED]
    return Closure(len(refs), len(refs) - len(closed), len(closed), {k: int(v) for k, v in statuses.items()},
                   {s: share(int((closed["status"] == s).sum()), len(closed)) for s in CLOSED_STATUSES},
                   {o: share(int(found.get(o, 0)), len(closed)) for o in names},
                   share(int(engaged_at.notna().sum()), len(refs)))


def person_windows(incidents: pd.DataFrame, first: pd.Series, start, end) -> pd.DataFrame:
    """Per engaged person (index person_id, `first`: their first engagement): whether each window is cut by the
    data's edges, and their distinct incidents in the window before and the window after."""
    table = pd.DataFrame({"engaged_at": first})
    table["cut_at_start"] = (table["engaged_at"] - WINDOW) < start
    table["cut_at_end"] = (table["engaged_at"] + WINDOW) > end
    calls = incidents.groupby(["person_id", "incident_id"], as_index=False)["received_at"].min()
    calls = calls.join(table["engaged_at"], on="person_id", how="inner")
    delta = calls["received_at"] - calls["engaged_at"]
    for name, mask in (("before", (delta >= -WINDOW) & (delta < pd.Timedelta(0))),
                       ("after", (delta >= pd.Timedelta(0)) & (delta < WINDOW))):
        table[name] = calls[mask].groupby("person_id").size().reindex(table.index, fill_value=0).astype(int)
    return table


def contacts_of(table: pd.DataFrame, replicates: int, rng: np.random.Generator, min_persons: int = 1) -> Contacts:
    """The `Contacts` of `person_windows` rows; means only from `min_persons` persons compared."""
    kept = table[~(table["cut_at_start"] | table["cut_at_end"])]
    values = kept[["before", "after"]].to_numpy(float)
    values = np.column_stack([values, values[:, 1] - values[:, 0]]) if len(values) else np.zeros((0, 3))
    n = len(values)
    means = [Mean(None, None)] * 3
    if n and n >= min_persons:
        draws = bootstrap_sums(values, replicates, rng) / n
        means = [Mean(float(values[:, k].mean()), ci95(draws[:, k])) for k in range(3)]
    return Contacts(len(table), n, len(table) - n, int(table["cut_at_start"].sum()), int(table["cut_at_end"].sum()),
                    int(kept["before"].sum()), int(kept["after"].sum()), *means)


# --------------------------------------------------------------------------- groups


def person_groups(store: Store, county: Path, year: int) -> pd.DataFrame:
    """Each store person's groups (ATTRIBUTES) from the county's truth.csv and demographics.csv (module docstring)."""
    truth = pd.read_csv(county / "truth.csv", dtype=str, keep_default_na=False, usecols=["record_id", "person_key"])
    people = pd.read_csv(county / "demographics.csv", dtype=str, keep_default_na=False).set_index("person_key")
    with store.engine.connect() as connection:
        members = _frame(connection, select(clusters.c.record_id, clusters.c.person_id))
    members = members.merge(truth, on="record_id", how="inner")
    votes = members.groupby(["person_id", "person_key"]).size().reset_index(name="records")
    votes = votes.sort_values(["person_id", "records", "person_key"], ascending=[True, False, True])
    key = votes.drop_duplicates("person_id").set_index("person_id")["person_key"]
    out = pd.DataFrame(index=key.index)
    for column in ("race_ethnicity", "sex"):
        out[column] = key.map(people[column]) if column in people else np.nan
    out["age_band"] = age_band(key.map(people["birth_year"]) if "birth_year" in people else key.map(lambda _: ""), year)
    return out.replace("", np.nan).fillna(MISSING_GROUP).astype(str)


def group_rows(refs: pd.DataFrame, engaged_at: pd.Series, windows: pd.DataFrame, groups: pd.DataFrame,
               replicates: int, rng: np.random.Generator) -> list[GroupRow]:
    """Per attribute and group of the persons referred: counts, the share of them engaged, repeat contacts."""
    referred = pd.Index(refs["person_id"].unique())
    labels = groups.reindex(referred).fillna(MISSING_GROUP)
    engaged = set(refs.loc[engaged_at.notna().to_numpy(), "person_id"])
    rows = []
    for attribute in ATTRIBUTES:
        found = labels.groupby(attribute).groups
        for group in sorted(found, key=lambda g: (ORDER.get(g, len(ORDER)), g)):
            members = found[group]
            persons = set(members)
            n_engaged = len(persons & engaged)
            rows.append(GroupRow(
                attribute, str(group), len(persons), int(refs["person_id"].isin(persons).sum()), n_engaged,
                share(n_engaged, len(persons)) if len(persons) >= MIN_PERSONS else None,
                contacts_of(windows[windows.index.isin(persons)], replicates, rng, MIN_PERSONS)))
    return rows


# --------------------------------------------------------------------------- the report


def outcomes_report(store: Store, as_of: datetime | None = None, county: Path | None = None, replicates: int = 1000,
                    seed: int = 0) -> OutcomesReport:
    """Every figure of the report (module docstring) from `store`, as of `as_of`; groups from `county` if given."""
    refs, events, incidents = read_history(store)
    unreadable = int(refs["created_at"].isna().sum() + events["at"].isna().sum() + incidents["received_at"].isna().sum())
    refs, events, incidents, as_of, latest = cut_at(refs, events, incidents, _utc(as_of))
    as_of = as_of or datetime.now(timezone.utc)            # an empty store: as of now
    rng, contacts_rng, groups_rng = (np.random.default_rng([seed, k]) for k in range(3))   # one stream per part
    steps = step_times(refs, events)
    kinds = {"all": np.ones(len(refs), bool), **{k: (refs["kind"] == k).to_numpy() for k in KINDS[1:]}}
    start = incidents["received_at"].min() if len(incidents) else None
    counts = {k: {d: {str(v): int(n) for v, n in refs.loc[m, d].value_counts().sort_index().items()} for d in DIMENSIONS}
              for k, m in kinds.items()}
    delays = {name: {k: distribution(refs[m], steps[column][m], replicates, rng) for k, m in kinds.items()}
              for name, column in (("acceptance", "accepted_at"), ("first_contact", "contacted_at"))}
    first = steps["engaged_at"].groupby(refs["person_id"].to_numpy()).min().dropna()
    edge = start if start is not None else pd.Timestamp(as_of)            # no incidents: every window is cut
    windows = person_windows(incidents, first, edge, pd.Timestamp(as_of))
    groups = None
    if county is not None:
        year = start.year if start is not None else as_of.year
        groups = group_rows(refs, steps["engaged_at"], windows, person_groups(store, Path(county), year), replicates,
                            groups_rng)
    facts = {"as_of": as_of, "data_start": start, "latest_time_in_data": latest, "window_days": WINDOW.days,
             "referrals": int(kinds["responder"].sum()), "tasks": int(kinds["rule"].sum()),
             "persons_referred": int(refs["person_id"].nunique()), "briefings": len(incidents),
             "incidents": int(incidents[["person_id", "incident_id"]].drop_duplicates().shape[0]),
             "persons_briefed": int(incidents["person_id"].nunique()), "unreadable_times": unreadable,
             "engaged_persons_without_incidents": len(set(first.index) - set(incidents["person_id"])),
             "replicates": replicates, "seed": seed,
             "demographics": str(county) if county is not None else None}
    return OutcomesReport(as_of, start.to_pydatetime() if start is not None else None, latest, counts,
                          {str(k): int(v) for k, v in refs["opened_by"].value_counts().sort_index().items()}, delays,
                          {k: closure(refs[m], steps["engaged_at"][m]) for k, m in kinds.items()},
                          contacts_of(windows, replicates, contacts_rng), groups, facts)


def _plain(value):
    """JSON-ready: datetimes as ISO text, tuples as lists, NaN and infinities as None, numpy scalars as Python's."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if k != "hours"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def as_json(report: OutcomesReport) -> dict:
    """Every figure of `report` as plain JSON values (the per-referral hours are left out: the quartiles stay)."""
    document = _plain(asdict(report))
    document["descriptive_not_an_effect"] = True
    return document

"""Orchestration: population -> record skeletons -> agency records -> files.

``generate_county(persons, seed, out_dir)`` writes ``records.csv``, ``truth.csv``,
``demographics.csv``, ``incidents.csv`` and the synthetic context (``context_items.csv``,
``consents.csv``, ``feedback.csv``, ``relevance.csv``; formats in evaluation/DATA.md)
atomically and returns a :class:`CountySummary` that also carries the latent
tables in memory.
"""
from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.synth.bias import DEFAULT_GROUP, KINDS, Bias, NameBias, extra_police_records
from evaluation.synth.clock import dst_offsets, format_recorded_at
from evaluation.synth.context import ContextTables, make_context
from evaluation.synth.dating import redate
from evaluation.synth.feedback import make_relevance_and_feedback
from evaluation.synth.incidents import default_n_incidents, make_incidents
from evaluation.synth.names import RACES
from evaluation.synth.needs import catalogue, draw_needs, latent_traits
from evaluation.synth.persons import build_population
from evaluation.synth.places import unique_phones
from evaluation.synth.population import T_END, T_START, Population
from evaluation.synth.population_history import (
    address_history_frame, person_keys, persons_frame, phone_history_frame,
)
from evaluation.synth.sources import AGENCIES, BH, CAD, CRISIS, RMS, SHARE, VR, make_records
from matching.record import CANONICAL_COLUMNS


CHUNK_PERSONS = 20_000


#: Records per person with records, measured on 400,000 persons (see SYNTH.md): to size a county by records.
MEAN_RECORDS_PER_PERSON = 2.58


@dataclass
class CountySummary:
    n_persons: int                      # persons with at least one record
    n_records: int
    seconds: float
    paths: dict[str, Path]
    n_persons_without_records: int = 0
    agency_counts: dict[str, int] = field(default_factory=dict)
    n_incidents: int = 0
    persons: pd.DataFrame | None = field(default=None, repr=False)          # latent, one row per person
    address_history: pd.DataFrame | None = field(default=None, repr=False)  # person_key, valid_from, ...
    phone_history: pd.DataFrame | None = field(default=None, repr=False)    # own mobile numbers over time
    population: Population | None = field(default=None, repr=False)        # arrays + lookups (address_at...)
    n_context_items: int = 0
    n_consents: int = 0
    n_feedback: int = 0
    n_relevance: int = 0
    context: ContextTables | None = field(default=None, repr=False)     # items + consents + per-item arrays


def agency_probabilities(pop: Population, n_iter: int = 60) -> np.ndarray:
    """Per-person agency probabilities: BH only for BH clients, VR only for
    registry enrollees, the crisis line mostly for low utilisers; per-agency scales
    calibrated so the record-weighted shares match ``SHARE``."""
    a = pop.a
    w = np.tile(SHARE, (pop.n, 1))
    w[:, BH] *= a["bh"]
    w[:, VR] *= a["reg"]
    w[:, CRISIS] *= np.array([3.0, 1.0, 0.3])[a["util"]]  # crisis callers: mostly people with few other records
    nrec = a["n_rec"].astype(float)
    scale = np.ones(len(SHARE))
    for _ in range(n_iter):
        p = w * scale
        p /= p.sum(1, keepdims=True)
        share = (p * nrec[:, None]).sum(0) / max(nrec.sum(), 1.0)
        scale *= np.where(share > 0, SHARE / np.maximum(share, 1e-12), 1.0)
    p = w * scale
    return p / p.sum(1, keepdims=True)


def synth_context(pop: Population, seed: int, rec_person: np.ndarray, rec_agency: np.ndarray, rec_t: np.ndarray,
                  rec_ids: np.ndarray, incidents: pd.DataFrame, bias: Bias | None = None):
    """Latent needs -> context items + consents -> relevance + feedback for ``incidents``.
    Randomness ``default_rng([seed, 8])`` (needs), ``[seed, 9]`` (items, consents),
    ``[seed, 10]`` (feedback), so records and incidents do not change.  A ``data`` bias
    raises its group's caution-flag rate and lowers the verification of its safety flags
    (bias.py; no extra draws).  Returns (ContextTables, relevance frame, feedback frame)."""
    n_ag = len(AGENCIES)
    key = rec_person.astype(np.int64) * n_ag + rec_agency
    has_agency = np.bincount(key, minlength=pop.n * n_ag).reshape(pop.n, n_ag) > 0
    cat = catalogue()
    rng = np.random.default_rng([seed, 8])
    group = bias.persons(pop.a["race"]) if bias is not None and bias.kind == "data" else None
    needs = draw_needs(cat, latent_traits(pop, has_agency, rng, group), rng)
    rec_day = (rec_t + dst_offsets(rec_t)) // 1440   # local date of recorded_at
    ct = make_context(cat, needs, rec_person, rec_agency, rec_day, rec_ids, pop.a["preferred"], pop.n, seed, group)
    relevance, feedback = make_relevance_and_feedback(ct, incidents, pop.n, seed)
    return ct, relevance, feedback


def _write_csv(df: pd.DataFrame, path: Path, plain: bool = False) -> None:
    """Write ``df`` atomically as pandas ``to_csv`` would.  ``plain``: join the cells
    directly (2-3x faster for the large context files); if any cell would need quoting
    (comma, quote, CR/LF) the joined text is discarded and pandas writes the file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        text = _plain_csv(df) if plain else None
        if text is None:
            df.to_csv(tmp, index=False, lineterminator="\n")
        else:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _plain_csv(df: pd.DataFrame) -> str | None:
    """CSV text of ``df`` (header + rows, ``\n`` endings) when no cell needs quoting, else None."""
    cols = [df[c].to_numpy(dtype=object) if df[c].dtype == object else df[c].astype(str).to_numpy(dtype=object)
            for c in df.columns]
    header = ",".join(map(str, df.columns))
    body = "\n".join(map(",".join, zip(*cols)))
    n, k = len(df), len(df.columns)
    if (k < 2 or body.count(",") != n * (k - 1) or body.count("\n") != max(n - 1, 0) or '"' in body
            or "\r" in body or header.count(",") != k - 1 or '"' in header or "\r" in header or "\n" in header):
        return None  # a single empty cell per row, or a cell that pandas would quote
    return header + "\n" + (body + "\n" if n else "")


def generate_county(persons: int, seed: int, out_dir: Path, progress: bool = True,
                    n_incidents: int | None = None, bias: str | None = None,
                    bias_group: str | None = None, as_of: date | None = None) -> CountySummary:
    """Generate the county; ``n_incidents`` defaults to ``max(1000, persons // 8)``.

    ``as_of`` (a day, e.g. today): the files are dated by whole years so that every incident is
    in the past on that day (dating.py); without it the calendar is the fixed one, so benchmarks
    stay reproducible.

    ``bias`` injects a known bias against ``bias_group`` (a race/ethnicity; default per kind in
    ``bias.DEFAULT_GROUP``): ``"matching"`` (inconsistent names) or ``"data"`` (more police
    records, more unverified safety flags) -- see bias.py and SYNTH.md §8.  Without it the files
    are the same bytes as before the flag existed."""
    injected = Bias.make(bias, bias_group)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    bar = tqdm(total=persons, desc="synth persons", unit="person", file=sys.stderr, disable=not progress)
    pop = build_population(int(persons), int(seed))
    a = pop.a
    rng = np.random.default_rng([seed, 2])
    rec_person = np.repeat(np.arange(pop.n), a["n_rec"])
    n_rec = len(rec_person)
    rec_t = rng.integers(T_START, T_END, n_rec)
    p_agency = agency_probabilities(pop)
    cum = np.cumsum(p_agency, axis=1)
    rec_agency = (rng.random(n_rec)[:, None] > cum[rec_person]).sum(1).clip(0, len(AGENCIES) - 1).astype(np.int8)
    spare = unique_phones(np.random.default_rng([seed, 4]), int(0.06 * n_rec) + 1000)
    spare = np.setdiff1d(spare, np.concatenate([a["caller1"], a["caller2"], a["caregiver"], a["landline"],
                                                pop.phone_hist["phone"]]), assume_unique=False)
    spare = np.random.default_rng([seed, 5]).permutation(spare)
    parts: list[dict] = []
    spare_at = 0
    bounds = np.searchsorted(rec_person, np.arange(0, pop.n + CHUNK_PERSONS, CHUNK_PERSONS))
    for c in range(len(bounds) - 1):
        lo, hi = bounds[c], bounds[c + 1]
        if hi > lo:
            sl = slice(lo, hi)
            name_bias = None if injected is None or injected.kind != "matching" else NameBias(
                injected.persons(a["race"]), np.random.default_rng([seed, 12, c]), random.Random((seed * 1_000_003 + c) * 16 + 12))
            part = make_records(pop, rec_person[sl], rec_t[sl], rec_agency[sl], np.random.default_rng([seed, 3, c]),
                                random.Random(seed * 1_000_003 + c), spare[spare_at:], name_bias)
            spare_at += int(part.pop("_n_spare_used")[0])
            parts.append(part)
        p_lo, p_hi = c * CHUNK_PERSONS, min((c + 1) * CHUNK_PERSONS, pop.n)
        bar.update(int(a["has_records"][p_lo:p_hi].sum()))
    bar.close()
    n_extra = np.zeros(pop.n, dtype=np.int64)
    if injected is not None and injected.kind == "data":   # extra police contacts, their own streams
        x_person, x_t, x_agency = extra_police_records(injected.persons(a["race"]), a["has_records"], a["n_rec"], p_agency,
                                                       (RMS, CAD), (T_START, T_END), np.random.default_rng([seed, 13]))
        if len(x_person):   # bystander numbers: a fresh pool, distinct from every other number
            x_spare = unique_phones(np.random.default_rng([seed, 13, 2]), int(0.2 * len(x_person)) + 100)
            spare = np.concatenate([spare[:spare_at], np.setdiff1d(x_spare, np.concatenate([
                spare, a["caller1"], a["caller2"], a["caregiver"], a["landline"], pop.phone_hist["phone"]]))])
            part = make_records(pop, x_person, x_t, x_agency, np.random.default_rng([seed, 13, 1]),
                                random.Random(seed * 1_000_003 + 13_000_000), spare[spare_at:])
            spare_at += int(part.pop("_n_spare_used")[0])
            parts.append(part)
            rec_person, rec_t = np.concatenate([rec_person, x_person]), np.concatenate([rec_t, x_t])
            rec_agency = np.concatenate([rec_agency, x_agency])
            n_rec = len(rec_person)
            n_extra = np.bincount(x_person, minlength=pop.n)
    cols = {k: np.concatenate([p[k] for p in parts]) if parts else np.empty(0, dtype=object) for k in CANONICAL_COLUMNS[3:-1]}
    # record ids: per agency, increasing with recorded_at, with gaps
    order = np.lexsort((rec_t, rec_agency))
    ids = np.empty(n_rec, dtype=object)
    gaps = np.cumsum(rng.integers(1, 4, n_rec))
    for k, (_, prefix) in enumerate(AGENCIES):
        idx = order[rec_agency[order] == k]
        if len(idx) == 0:
            continue
        g = gaps[: len(idx)]
        ids[idx] = np.char.add(f"{prefix}-", np.char.zfill((10_000 + g).astype(str), 8)).astype(object)
    agency_name = np.array([x[0] for x in AGENCIES], dtype=object)[rec_agency]
    source = np.array([x[1] for x in AGENCIES], dtype=object)[rec_agency]
    records = pd.DataFrame({"record_id": ids, "agency": agency_name, "source_system": source, **cols,
                            "recorded_at": format_recorded_at(rec_t)}, columns=list(CANONICAL_COLUMNS))
    keys = person_keys(pop.n)
    truth = pd.DataFrame({"record_id": ids, "person_key": keys[rec_person]})
    perm = rng.permutation(n_rec)
    records = records.iloc[perm].reset_index(drop=True)
    truth = truth.iloc[perm].reset_index(drop=True)
    with_rec = np.flatnonzero(a["has_records"])
    demo = pd.DataFrame({
        "person_key": keys[with_rec], "race_ethnicity": a["race"][with_rec], "sex": a["sex"][with_rec],
        "birth_year": a["dob"][with_rec].astype("datetime64[Y]").astype(np.int64) + 1970,
    })
    n_inc = default_n_incidents(persons) if n_incidents is None else int(n_incidents)
    incidents = make_incidents(pop, keys, int(seed), n_inc, exclude_phones=spare)
    a["n_rec"] = a["n_rec"] + n_extra   # incidents are drawn as without the extra police records
    args = (injected,) if injected is not None else ()   # positional: tests stub synth_context(*args)
    ct, relevance, feedback = synth_context(pop, int(seed), rec_person, rec_agency, rec_t, ids, incidents, *args)
    tables = {"records": records, "truth": truth, "demographics": demo, "incidents": incidents,
              "context_items": ct.items, "consents": ct.consents, "feedback": feedback, "relevance": relevance}
    if as_of is not None:
        tables = redate(tables, as_of)
    paths = {name: out_dir / f"{name}.csv" for name in tables}
    for name, df in tables.items():
        _write_csv(df, paths[name], plain=name in ("context_items", "consents", "feedback", "relevance"))
    counts = {AGENCIES[k][0]: int((rec_agency == k).sum()) for k in range(len(AGENCIES))}
    frames = persons_frame(pop), address_history_frame(pop), phone_history_frame(pop)
    return CountySummary(
        n_persons=int(len(with_rec)), n_records=int(n_rec), seconds=time.perf_counter() - t0, paths=paths,
        n_persons_without_records=int(pop.n - len(with_rec)), agency_counts=counts, n_incidents=n_inc,
        persons=frames[0], address_history=frames[1], phone_history=frames[2], population=pop,
        n_context_items=len(ct.items), n_consents=len(ct.consents), n_feedback=len(feedback),
        n_relevance=len(relevance), context=ct,
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m evaluation.synth.county --persons N --seed S --out DIR``."""
    import argparse

    ap = argparse.ArgumentParser(description="Generate a synthetic county (records, truth, demographics, incidents, "
                                             "context items, consents, feedback, relevance).")
    ap.add_argument("--persons", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--incidents", type=int, default=None, help="number of incidents (default max(1000, persons // 8))")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--as-of", type=date.fromisoformat, default=None,
                    help="YYYY-MM-DD: date the county so that every incident is in the past on that day (dating.py)")
    ap.add_argument("--bias", choices=KINDS, default=None, help="inject a known bias (SYNTH.md §8)")
    ap.add_argument("--bias-group", choices=RACES, default=None,
                    help=f"race/ethnicity the bias targets (default: {', '.join(f'{k} -> {g}' for k, g in DEFAULT_GROUP.items())})")
    args = ap.parse_args(argv)
    if args.bias_group and not args.bias:
        ap.error("--bias-group needs --bias")
    s = generate_county(args.persons, args.seed, args.out, progress=not args.quiet, n_incidents=args.incidents,
                        bias=args.bias, bias_group=args.bias_group, as_of=args.as_of)
    print(f"{s.n_records} records, {s.n_persons} persons (+{s.n_persons_without_records} without records), "
          f"{s.n_incidents} incidents, {s.n_context_items} context items, {s.n_consents} consents in "
          f"{s.seconds:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()

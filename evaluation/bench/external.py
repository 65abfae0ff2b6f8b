"""Briefing beside plain Splink on data this project did not generate (FEBRL 1-4, evaluation/data/external/*.csv.gz).

    python -m evaluation.bench external            # every set; one JSON object on stdout
    python -m evaluation.bench external-resolve    # real-time check with each set's own model
    python -m evaluation.bench.external [--sets febrl1,gecko_large] [--work DIR] [--resolve]

(`evaluation.bench` takes no options but --work; there, BRIEFING_EXTERNAL_SETS=febrl1,febrl3 picks sets.)

Per set, both linkers run in this one run as child processes from records.csv to clusters
(`run_child`: wall time and peak RSS of that child alone): Briefing (`briefing link --quiet`,
trained on the set itself) and plain Splink as its own deduplication example does it
(`evaluation.linkage.splink_tutorial`). Reported per set:

- records, persons, true pairs, true prior (true pairs / (n (n - 1) / 2));
- Briefing: estimated prior (model.json and summary.json), blocking recall of the model's
  prediction rules (exact, `evaluation.linkage.external.blocking_recall`, on the standardised records),
  pairwise precision / recall / F1 of clusters.csv, summary.json's expected precision / recall when
  it has them, wall seconds, peak RSS; and, for reference, the best F1 over thresholds of
  connected components of its pairs.csv (Briefing's own clustering is not plain components);
- plain Splink: estimated prior, blocking recall (its rules on its own frame), precision / recall /
  F1 of Splink's clustering at 0.95, the best F1 over thresholds (connected components of its
  pairs.csv) and that threshold, wall seconds, peak RSS;
- the time ratio Briefing / plain Splink.

A markdown table of the figures goes to stderr and to WORK/external.md; missed true pairs of
Briefing's blocking to WORK/SET/briefing_missed_pairs.csv.

The real-time check (`bench_external_resolve`): per set, the resolver is built from Briefing's
link of that set (its model.json and clusters.csv; linked first if the work directory has none).
For up to 1,000 records whose true person has two or more records, and up to 500 whose person has
only that record, the record is taken out of the index (`Resolver.delete_record`: a tombstone,
and its term frequencies subtracted, so the index is exactly the index of all other records, not
rebuilt), the full record is resolved as a query, and it is put back (`put_record`, under its
person) before the next query. Top-1 is correct when the top answer's person holds a record of
the query's true person (other than the query itself); a sole record answered `certain` is a
wrong certain answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from evaluation.bench.child import BRIEFING, machine, run_child
from evaluation.linkage.external import (available_sets, best_threshold, blocking_recall, pairwise_scores, true_pairs,
                                         truth_stats, write_set)
from evaluation.linkage.splink_tutorial import tutorial_frame
from matching.model import MatcherModel
from matching.query import SUBJECT_FIELDS, Subject
from matching.record import read_records
from matching.resolve import Resolver
from matching.standardise import standardise, to_arrow

SHOW_COLUMNS = ["given_name", "family_name", "dob", "postcode", "city", "street", "ssn_last4", "phone", "email"]
RESOLVE_SAMPLE = 1_000
RESOLVE_SINGLES = 500


def _selected(sets: list[str] | None) -> list[str]:
    have = available_sets()
    if sets is None:
        env = os.environ.get("BRIEFING_EXTERNAL_SETS", "").strip()
        sets = [s.strip() for s in env.split(",") if s.strip()] or have
    unknown = [s for s in sets if s not in have]
    if unknown:
        raise SystemExit(f"unknown set(s) {', '.join(unknown)}; available: {', '.join(have)}")
    return sets


def _rules_of(model: dict) -> list[str]:
    rules = model["splink"].get("blocking_rules_to_generate_predictions", [])
    return [r["blocking_rule"] if isinstance(r, dict) else str(r) for r in rules]


def _round(value, digits: int = 6):
    return None if value is None else round(float(value), digits)


def _missed_text(missed: pd.DataFrame, limit: int) -> list[str]:
    out = []
    for row in missed.head(limit).itertuples(index=False):
        d = row._asdict()
        fields = [c for c in SHOW_COLUMNS if f"{c}_l" in d]
        left = "|".join(str(d[f"{c}_l"]) for c in fields)
        right = "|".join(str(d[f"{c}_r"]) for c in fields)
        out.append(f"{d['id_l']} [{left}] ~ {d['id_r']} [{right}]")
    return out


def _briefing(set_dir: Path, records_path: Path, truth: pd.DataFrame, pairs: pd.DataFrame, run: dict) -> dict:
    out = set_dir / "briefing"
    model = json.loads((out / "model.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    std = to_arrow(standardise(read_records(records_path).frame))
    rules = _rules_of(model)
    recall = blocking_recall(std, rules, pairs, examples=200, show=SHOW_COLUMNS)
    missed = recall.pop("missed_examples", pd.DataFrame())
    if len(missed):
        missed.to_csv(set_dir / "briefing_missed_pairs.csv", index=False)
    scored = pd.read_csv(out / "pairs.csv", dtype={"record_id_l": str, "record_id_r": str})
    clusters = pd.read_csv(out / "clusters.csv", dtype=str, keep_default_na=False)
    return {
        "prior_model_json": model["splink"].get("probability_two_random_records_match"),
        "prior_summary_json": summary.get("prior"),
        "blocking_recall": _round(recall["recall"]), "blocking_missed_pairs": recall["missed"],
        "blocking_rules": len(rules),
        "blocking_missed_examples": _missed_text(missed, 3),
        **pairwise_scores(clusters, truth),
        "link_threshold": (summary.get("thresholds") or {}).get("link"),
        "expected_precision": summary.get("expected_precision"),
        "expected_recall": summary.get("expected_recall"),
        "best_threshold_connected_components": best_threshold(scored, truth),
        "pairs_scored": int(len(scored)),
        "seconds": round(run["wall"], 1), "peak_rss_gb": round(run["rss"], 3), "steps": summary.get("seconds"),
    }


def _plain(set_dir: Path, records_path: Path, truth: pd.DataFrame, pairs: pd.DataFrame, run: dict) -> dict:
    out = set_dir / "splink"
    summary = json.loads((out / "summary.json").read_text())
    frame = tutorial_frame(records_path)
    recall = blocking_recall(frame, summary["blocking_rules"], pairs)
    scored = pd.read_csv(out / "pairs.csv", dtype={"record_id_l": str, "record_id_r": str})
    clusters = pd.read_csv(out / "clusters.csv", dtype=str, keep_default_na=False)
    return {
        "prior": summary["prior"], "prior_from_deterministic_rules": summary["prior_from_deterministic_rules"],
        "blocking_recall": _round(recall["recall"]), "blocking_missed_pairs": recall["missed"],
        "blocking_rules": len(summary["blocking_rules"]), "comparisons": summary["comparisons"],
        **pairwise_scores(clusters, truth), "cluster_threshold": summary["cluster_threshold"],
        "best_threshold_connected_components": best_threshold(scored, truth),
        "pairs_scored": int(len(scored)),
        "seconds": round(run["wall"], 1), "peak_rss_gb": round(run["rss"], 3), "steps": summary.get("seconds"),
    }


def bench_set(name: str, work: Path) -> dict:
    """Both linkers on set `name`, measured and scored (see module docstring)."""
    set_dir = work / name
    records_path, truth_path = write_set(name, set_dir)
    truth = pd.read_csv(truth_path, dtype=str, keep_default_na=False)
    stats = truth_stats(truth)
    print(f"[external] {name}: {stats['records']:,} records, {stats['true_pairs']:,} true pairs", file=sys.stderr, flush=True)
    wall, rss = run_child(BRIEFING + ["link", str(records_path), "--out", str(set_dir / "briefing"), "--quiet"])
    briefing_run = {"wall": wall, "rss": rss}
    wall, rss = run_child([sys.executable, "-m", "evaluation.linkage.splink_tutorial", str(records_path), "--out", str(set_dir / "splink")])
    plain_run = {"wall": wall, "rss": rss}
    pairs = true_pairs(truth)
    briefing = _briefing(set_dir, records_path, truth, pairs, briefing_run)
    plain = _plain(set_dir, records_path, truth, pairs, plain_run)
    return {**{k: stats[k] for k in ("records", "persons", "true_pairs")}, "true_prior": _round(stats["true_prior"], 9),
            "briefing": briefing, "plain_splink": plain,
            "time_ratio_briefing_over_splink": round(briefing_run["wall"] / plain_run["wall"], 2)}


def markdown_table(results: dict) -> str:
    def prf(d: dict) -> str:
        return f"{d['precision']:.4f} / {d['recall']:.4f} / {d['f1']:.4f}"

    def prior(x) -> str:
        return "-" if x is None else f"{x:.2e}"

    lines = ["| set | records | true pairs | true prior | prior B / S | blocking recall B / S | B P / R / F1 | "
             "S P / R / F1 at 0.95 | S best F1 (threshold) | seconds B / S (ratio) | peak RSS GB B / S |",
             "|---|---:|---:|---:|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        b, s = r["briefing"], r["plain_splink"]
        best = s["best_threshold_connected_components"]
        best_text = f"{best['f1']:.4f} ({best['threshold']:.4g})" if best["threshold"] is not None else "-"
        lines.append(f"| {name} | {r['records']:,} | {r['true_pairs']:,} | {prior(r['true_prior'])} | "
                     f"{prior(b['prior_model_json'])} / {prior(s['prior'])} | {b['blocking_recall']:.4f} / {s['blocking_recall']:.4f} | "
                     f"{prf(b)} | {prf(s)} | {best_text} | {b['seconds']:.1f} / {s['seconds']:.1f} "
                     f"({r['time_ratio_briefing_over_splink']:.2f}) | {b['peak_rss_gb']:.2f} / {s['peak_rss_gb']:.2f} |")
    return "\n".join(lines) + "\n"


def bench_external(work: Path, sets: list[str] | None = None) -> dict:
    started = time.perf_counter()
    results = {name: bench_set(name, work) for name in _selected(sets)}
    table = markdown_table(results)
    (work / "external.md").write_text(table, encoding="utf-8")
    print(table, file=sys.stderr, flush=True)
    return {"figure": "external_sets_briefing_vs_plain_splink", "sets": results,
            "notes": {"plain_splink": "evaluation/linkage/splink_tutorial.py: Splink's deduplicate_50k_synthetic example, column names mapped",
                      "blocking_recall": "share of true pairs meeting at least one prediction blocking rule, evaluated exactly in DuckDB",
                      "best_threshold_connected_components": "oracle: best pairwise F1 over every threshold of pairs.csv, "
                                                             "connected components (chosen on the truth itself)"},
            "seconds": round(time.perf_counter() - started, 1), "markdown": str(work / "external.md")}


# --------------------------------------------------------------------------- real-time check


def _subject_fields(row: dict) -> dict:
    return {f: row[f] for f in SUBJECT_FIELDS if row.get(f) is not None}


def _subject(row: dict):
    """A Subject from a full record; fields the query schema refuses are left out (and named)."""

    fields = _subject_fields(row)
    dropped: list[str] = []
    while True:
        try:
            return Subject.model_validate(fields), dropped
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if not bad & fields.keys():
                raise
            for name in bad & fields.keys():
                fields.pop(name)
                dropped.append(name)


def _rows(records: pd.DataFrame) -> list[dict]:
    frame = records.astype(object).where(records.notna(), None)
    rows = frame.to_dict("records")
    for row in rows:
        if row.get("birth_year") is not None:
            row["birth_year"] = int(row["birth_year"])
    return rows


def _linked_set(name: str, work: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Briefing's link of set `name` (its directory), the records, truth and clusters; the set is linked first when
    the work directory has no link of it."""
    set_dir = work / name
    linked = set_dir / "briefing"
    records_path = set_dir / "records.csv"
    if not (linked / "model.json").exists() or not records_path.exists():
        records_path, _ = write_set(name, set_dir)
        run_child(BRIEFING + ["link", str(records_path), "--out", str(linked), "--quiet"])
    truth = pd.read_csv(set_dir / "truth.csv", dtype=str, keep_default_na=False)
    records = read_records(records_path).frame
    clusters = pd.read_csv(linked / "clusters.csv", dtype=str, keep_default_na=False)
    return linked, records, truth, clusters


def _leave_one_out(resolver: Resolver, rows: dict, cluster_of: dict, record_id: str):
    """The record resolved as a query with itself taken out of the index, then put back: (result, seconds, fields
    the query schema refused)."""
    row = rows[record_id]
    subject, dropped = _subject(row)
    resolver.delete_record(record_id)
    try:
        t = time.perf_counter()
        result = resolver.resolve(subject)
        seconds = time.perf_counter() - t
    finally:
        resolver.put_record(row, cluster_of[record_id])
    return result, seconds, dropped


def _with_others(ask, shared, true_person: dict, cluster_of: dict, members: dict[str, Counter], latencies: list,
                 dropped_fields: Counter) -> dict:
    """Records whose person has others: top-1 correct by person and by record, outcomes, statuses, wrong examples."""
    outcomes, statuses = Counter(), Counter()
    top1 = top1_record = 0
    wrong: list[str] = []
    for record_id in shared:
        result, seconds, dropped = ask(str(record_id))
        latencies.append(seconds)
        dropped_fields.update(dropped)
        statuses[result.status] += 1
        best = result.candidates[0] if result.candidates else None
        outcomes[best.grade if best else "no_match"] += 1
        key = true_person[record_id]
        if best is not None:
            held = members.get(best.person_id, Counter())[key] - (1 if cluster_of[record_id] == best.person_id else 0)
            top1 += held > 0
            top1_record += true_person.get(best.record_id) == key
            if held <= 0 and len(wrong) < 5:
                wrong.append(f"{record_id} -> {best.record_id} ({best.grade}, {best.match_probability:.4f})")
        elif len(wrong) < 5:
            wrong.append(f"{record_id} -> no_match")
    n = len(shared)
    return {"queries_with_others": n,
            "top1_person_correct": round(top1 / n, 4) if n else None,
            "top1_record_correct": round(top1_record / n, 4) if n else None,
            "outcomes": {g: outcomes.get(g, 0) for g in ("certain", "probable", "possible", "no_match")},
            "statuses": dict(statuses), "wrong_examples": wrong}


def _sole_records(ask, alone, latencies: list, dropped_fields: Counter) -> dict:
    """Records that are their person's only one: any answer at grade `certain` is a wrong certain answer."""
    alone_outcomes, alone_certain = Counter(), []
    for record_id in alone:
        result, seconds, dropped = ask(str(record_id))
        latencies.append(seconds)
        dropped_fields.update(dropped)
        best = result.candidates[0] if result.candidates else None
        alone_outcomes[best.grade if best else "no_match"] += 1
        if best is not None and best.grade == "certain" and len(alone_certain) < 5:
            alone_certain.append(f"{record_id} -> {best.record_id} ({best.match_probability:.4f})")
    return {"sole_records_queried": int(len(alone)), "sole_records_answered_certain": alone_outcomes.get("certain", 0),
            "sole_records_certain_examples": alone_certain,
            "sole_record_outcomes": {g: alone_outcomes.get(g, 0) for g in ("certain", "probable", "possible", "no_match")}}


def resolve_set(name: str, work: Path, sample: int = RESOLVE_SAMPLE, singles: int = RESOLVE_SINGLES, seed: int = 0) -> dict:
    """The real-time check on set `name` (module docstring): a seeded sample of records resolved leave-one-out."""
    linked, records, truth, clusters = _linked_set(name, work)
    true_person = dict(zip(truth["record_id"], truth["person_key"]))
    person_size = truth["person_key"].value_counts()
    cluster_of = dict(zip(clusters["record_id"], clusters["person_id"]))
    members: dict[str, Counter] = {}
    for rid, pid in cluster_of.items():
        members.setdefault(pid, Counter())[true_person[rid]] += 1

    t0 = time.perf_counter()
    resolver = Resolver(MatcherModel.load(linked / "model.json")).fit(records, clusters)
    build_seconds = time.perf_counter() - t0

    rows = {row["record_id"]: row for row in _rows(records)}
    ids = np.array(sorted(rows))
    sizes = np.array([person_size[true_person[r]] for r in ids])
    rng = np.random.default_rng(seed)
    shared = ids[sizes >= 2]
    alone = ids[sizes == 1]
    shared = rng.choice(shared, size=min(sample, len(shared)), replace=False) if len(shared) else shared
    alone = rng.choice(alone, size=min(singles, len(alone)), replace=False) if len(alone) else alone

    def ask(record_id: str):
        return _leave_one_out(resolver, rows, cluster_of, record_id)

    latencies: list[float] = []
    dropped_fields: Counter = Counter()
    others = _with_others(ask, shared, true_person, cluster_of, members, latencies, dropped_fields)
    sole = _sole_records(ask, alone, latencies, dropped_fields)
    ms = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "records": int(len(ids)), "index_build_seconds": round(build_seconds, 2), **others, **sole,
        "subject_fields_refused": dict(dropped_fields),
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3)},
    }


def bench_external_resolve(work: Path, sets: list[str] | None = None) -> dict:
    started = time.perf_counter()
    results = {}
    for name in _selected(sets):
        print(f"[external-resolve] {name}", file=sys.stderr, flush=True)
        results[name] = resolve_set(name, work)
    return {"figure": "external_sets_resolver_leave_one_out", "sets": results,
            "targets": {"sole_records_answered_certain": 0},
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m evaluation.bench.external")
    parser.add_argument("--sets", help="comma-separated set names (default: every set; see evaluation.linkage.external)")
    parser.add_argument("--work", help="keep the data and outputs here (default: a temporary directory)")
    parser.add_argument("--resolve", action="store_true", help="also run the real-time check (after the benchmark)")
    parser.add_argument("--resolve-only", action="store_true", help="only the real-time check")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = {} if args.resolve_only else bench_external(work, sets)
        if args.resolve or args.resolve_only:
            result["resolve"] = bench_external_resolve(work, sets)
    result["machine"] = machine()
    result["command"] = "python -m evaluation.bench.external " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

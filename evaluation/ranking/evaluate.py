"""`briefing eval ranking`: how well rules, the feedback-trained scorecard, and both together order
a person's items, measured against the hidden relevance on incidents the scorecard never saw.

`evaluate_ranking(county_dir, seed, test_share, bootstrap)`:

1. **Split** the incidents (all of `incidents.csv`, seeded permutation, `test_share` of them to test).
2. **Train** the scorecard (`scoring.ranker_fit.fit_ranker`) on the feedback rows of the *train*
   incidents only; C and the factor on the model's log-odds when combined with the rules
   (`rank_weight`) are chosen on a held-out part of that training feedback (never relevance, never
   a test incident).
3. **Rank** the subject's items at every test incident that has relevance rows, three ways:
   rules only (`model=None`), model only (`use_rules=False`), rules + model. The subject is the
   true person (`person_key` → `truth.csv` records → items; grade `certain`), which isolates ranking
   from resolution; `now` is the incident's `received_at`; the access policy is not applied
   (relevance and feedback ignore it too: every role's view).
4. **Measure**: NDCG@3, NDCG@5 (linear gain = relevance 0-3, discount 1/log2(1 + position);
   a merged line's relevance is the max over its items; items without a relevance row count 0; the
   ideal ordering is that of the same lines; incidents whose lines are all 0 are left out) and
   MAP (relevant = relevance ≥ 2; incidents without a relevant line left out), each with a
   bootstrap 95% CI; the paired difference combined − rules on NDCG@5 with its CI; safety-pin
   recall, expired items shown, unverified danger labels ranked first.

Bootstrap: percentile intervals over `bootstrap` replicates that resample test *persons* with
replacement, each drawn person bringing all of their test incidents (a frequent caller's incidents
are not independent); with one incident per person this is the plain incident bootstrap.

The county's files are read by `evaluation.ranking.county`; `evaluation.ranking.card.model_card`
writes `models/RANKER.md` from a model file and this evaluation.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.ranking.county import CountyContext, load_county
from evaluation.stats import ci95, person_bootstrap_means
from scoring.item import ContextItem
from scoring.rank import RankedItem, rank
from scoring.ranker import ItemScorecard
from scoring.ranker_features import live
from scoring.ranker_fit import fit_ranker
from scoring.rules import Rules

METHODS = ("rules", "model", "combined")
METRICS = ("ndcg_at_3", "ndcg_at_5", "map")
RELEVANT = 2


def split_incidents(incident_ids, seed: int, test_share: float) -> tuple[list[str], list[str]]:
    """(train ids, test ids): a seeded permutation of the incidents, `test_share` of them to test."""
    if not 0.0 < test_share < 1.0:
        raise ValueError(f"test_share must be strictly between 0 and 1, got {test_share}")
    ids = np.array(sorted(set(incident_ids)), dtype=object)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = int(round(test_share * len(ids)))
    test, train = ids[order[:n_test]], ids[order[n_test:]]
    return sorted(train.tolist()), sorted(test.tolist())


# --------------------------------------------------------------------------- metrics


def dcg(gains, k: int) -> float:
    g = np.asarray(gains, dtype=float)[:k]
    return float((g / np.log2(np.arange(2, len(g) + 2))).sum())


def ndcg(gains, k: int) -> float:
    """NDCG@k of gains in ranked order; the ideal is the same gains sorted; NaN when all are 0."""
    ideal = dcg(sorted(gains, reverse=True), k)
    return float("nan") if ideal <= 0 else dcg(gains, k) / ideal


def average_precision(gains, threshold: float = RELEVANT) -> float:
    """Mean of precision@position over the relevant (gain ≥ threshold) positions; NaN without any."""
    hit = np.asarray(gains, dtype=float) >= threshold
    if not hit.any():
        return float("nan")
    positions = np.flatnonzero(hit) + 1
    return float(np.mean(np.cumsum(hit)[hit] / positions))


# --------------------------------------------------------------------------- evaluation


#: What each figure of the report means (written into it).
DEFINITIONS = {
    "gain": "relevance 0-3 (linear), a merged line takes the max over its items, no row = 0",
    "ndcg": "DCG@k / ideal DCG@k over the same lines; incidents with all gains 0 left out",
    "map": f"average precision with relevant = relevance >= {RELEVANT}; incidents without a relevant line left out",
    "safety_pin_recall": "test incidents whose person has a live pinnable item (Rules.is_pinnable): the most "
                         "recent one (by event date) is in the top 3 of the combined ranking",
    "unverified_danger_top1": "test incidents whose combined top line is a doubtful danger label "
                              "(Rules.is_doubtful_danger) while another category is ranked",
    "expired_shown": "lines, over all three rankings, carrying an expired or inactive item",
}


@dataclass
class _Tally:
    """What ranking the test incidents measured: one row of metrics per incident, and the counts."""

    rows: list[dict] = field(default_factory=list)
    expired_shown: int = 0
    doubtful_top1: dict[str, int] = field(default_factory=lambda: {m: 0 for m in METHODS})
    pin_incidents: int = 0
    pin_hits: int = 0
    pin_misses: list[dict] = field(default_factory=list)


def evaluate_ranking(county_dir: str | Path, seed: int = 0, test_share: float = 0.5, bootstrap: int = 1000,
                     rules: Rules | None = None, rank_weight: float | str = "auto", C: float | str = "auto",
                     progress=None) -> dict:
    """Every figure of the ranking evaluation as one JSON-able dict (see the module docstring)."""
    say = progress or (lambda _msg: None)
    rules = rules or Rules.load()
    say("reading the county")
    ctx = load_county(county_dir, relevance=True)
    train_ids, test_ids = split_incidents(ctx.incidents["incident_id"], seed, test_share)
    say(f"training the scorecard on {len(train_ids):,} train incidents' feedback")
    started = time.perf_counter()
    model = fit_ranker(ctx, train_ids, rules, seed=seed, rank_weight=rank_weight, C=C)
    train_seconds = time.perf_counter() - started

    rel = ctx.relevance[ctx.relevance["incident_id"].isin(set(test_ids))]
    evaluated = sorted(set(rel["incident_id"]))
    say(f"ranking {len(evaluated):,} test incidents three ways")
    started = time.perf_counter()
    tally = _rank_test_incidents(ctx, rel, evaluated, rules, model)
    rank_seconds = time.perf_counter() - started

    table = pd.DataFrame(tally.rows)
    columns = [f"{m}:{meth}" for m in METRICS for meth in METHODS] + ["ndcg5_diff"]
    say(f"bootstrap ({bootstrap:,} replicates over persons)")
    boot = person_bootstrap_means(table, columns, bootstrap, seed) if len(table) and bootstrap > 0 else {}
    report = {"county_dir": str(county_dir), "seed": seed, "test_share": test_share, "rules_version": rules.version,
              "n_incidents": _incident_counts(ctx, train_ids, test_ids, evaluated, table, model)}
    report.update(_figures(table, boot, tally))
    report.update({
        "model": {"C": model.C, "rank_weight": model.rank_weight, "features": len(model.feature_names_),
                  "training_rows": model.training_["rows"], "training_data_sha256": model.training_["data_sha256"],
                  "metrics": model.training_["metrics"], "train_seconds": round(train_seconds, 3)},
        "rank_seconds": round(rank_seconds, 3),
        "bootstrap": {"replicates": bootstrap, "unit": "person (all of a person's test incidents together)"},
        "definitions": dict(DEFINITIONS),
        "split": {"train_incident_ids_sha256": _ids_hash(train_ids), "test_incident_ids_sha256": _ids_hash(test_ids)},
    })
    return report


def _rank_test_incidents(ctx: CountyContext, rel: pd.DataFrame, evaluated: list[str], rules: Rules,
                         model: ItemScorecard) -> _Tally:
    """Rank each evaluated incident's subject's items three ways and measure each ranking."""
    grade_of = {(i, j): int(r) for i, j, r in rel[["incident_id", "item_id", "relevance"]].itertuples(index=False)}
    person_of_incident = dict(zip(ctx.incidents["incident_id"], ctx.incidents["person_key"]))
    tally = _Tally()
    for incident_id in evaluated:
        call_type, now = ctx.when[incident_id]
        person = person_of_incident[incident_id]
        items = ctx.person_items.get(person, [])
        rankings = {
            "rules": rank(items, call_type, "certain", now, rules),
            "model": rank(items, call_type, "certain", now, rules, model=model, use_rules=False),
            "combined": rank(items, call_type, "certain", now, rules, model=model),
        }
        row = {"incident_id": incident_id, "person_key": person, "call_type": call_type,
               "lines": len(rankings["rules"])}
        _measure(row, rankings, {i.item_id: i for i in items}, grade_of, now, rules, tally)
        row["ndcg5_diff"] = row["ndcg_at_5:combined"] - row["ndcg_at_5:rules"]
        _check_safety_pin(incident_id, items, rankings["combined"], now, rules, tally)
        tally.rows.append(row)
    return tally


def _measure(row: dict, rankings: dict[str, list[RankedItem]], by_id: dict[str, ContextItem], grade_of: dict,
             now: datetime, rules: Rules, tally: _Tally) -> None:
    """NDCG@3, NDCG@5 and MAP of each ranking into `row`; expired items shown and doubtful danger labels first into `tally`."""
    incident_id = row["incident_id"]
    for method, ranked in rankings.items():
        gains = [max(grade_of.get((incident_id, s["item_id"]), 0) for s in line.sources) for line in ranked]
        row[f"ndcg_at_3:{method}"] = ndcg(gains, 3)
        row[f"ndcg_at_5:{method}"] = ndcg(gains, 5)
        row[f"map:{method}"] = average_precision(gains)
        tally.expired_shown += sum(1 for line in ranked for s in line.sources if not live(by_id[s["item_id"]], now))
        if ranked and rules.is_doubtful_danger(by_id[ranked[0].item_id], now) and \
                any(line.category != ranked[0].category for line in ranked):
            tally.doubtful_top1[method] += 1


def _check_safety_pin(incident_id: str, items: list[ContextItem], combined: list[RankedItem], now: datetime,
                      rules: Rules, tally: _Tally) -> None:
    """Whether the person's most recent pinnable item (if any) is in the combined ranking's top lines."""
    pinnable = [i for i in items if live(i, now) and rules.is_pinnable(i, now)]
    if not pinnable:
        return
    tally.pin_incidents += 1
    latest = max(pinnable, key=lambda i: (i.observed_at or i.last_verified_at, i.last_verified_at, i.item_id))
    position = next(k for k, line in enumerate(combined) if latest.item_id in {s["item_id"] for s in line.sources})
    if position < int(rules.safety_pin["top"]):
        tally.pin_hits += 1
    else:
        tally.pin_misses.append({"incident_id": incident_id, "item_id": latest.item_id, "position": position + 1})


def _incident_counts(ctx: CountyContext, train_ids: list[str], test_ids: list[str], evaluated: list[str],
                     table: pd.DataFrame, model: ItemScorecard) -> dict:
    return {"total": int(len(ctx.incidents)), "train": len(train_ids), "test": len(test_ids),
            "test_ranked": len(evaluated),
            "train_with_feedback": int(model.training_["incidents"]),
            "test_persons": int(table["person_key"].nunique()) if len(table) else 0}


def _metric_block(table: pd.DataFrame, boot: dict[str, np.ndarray], metric: str) -> dict:
    """Per method: the mean of `metric` over the incidents that have it, its bootstrap CI and their number."""
    out = {}
    for meth in METHODS:
        col = f"{metric}:{meth}"
        values = table[col].to_numpy(dtype=float) if len(table) else np.array([])
        out[meth] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else None,
                     "ci95": list(ci95(boot[col]) or (None, None)) if col in boot else [None, None],
                     "n_incidents": int(np.isfinite(values).sum())}
    return out


def _figures(table: pd.DataFrame, boot: dict[str, np.ndarray], tally: _Tally) -> dict:
    """The report's measured figures: metrics per method, the combined - rules difference, the ordering rules' checks."""
    diff = table["ndcg5_diff"].to_numpy(dtype=float) if len(table) else np.array([])
    by_call_type = {}
    if len(table):
        for call_type, part in table.groupby("call_type"):
            by_call_type[call_type] = {"n_incidents": int(part["ndcg_at_5:rules"].notna().sum()),
                                       **{meth: float(part[f"ndcg_at_5:{meth}"].mean()) for meth in METHODS}}
    diff_ci = list(ci95(boot["ndcg5_diff"]) or (None, None)) if "ndcg5_diff" in boot else [None, None]
    return {
        "ndcg_at_5": _metric_block(table, boot, "ndcg_at_5"),
        "ndcg_at_3": _metric_block(table, boot, "ndcg_at_3"),
        "map": _metric_block(table, boot, "map"),
        "combined_minus_rules": float(np.nanmean(diff)) if np.isfinite(diff).any() else None,
        "combined_minus_rules_ci95": diff_ci,
        "combined_beats_rules": bool("ndcg5_diff" in boot and diff_ci[0] is not None and diff_ci[0] > 0),
        "safety_pin_recall": (tally.pin_hits / tally.pin_incidents) if tally.pin_incidents else None,
        "safety_pin_incidents": tally.pin_incidents,
        "safety_pin_misses": tally.pin_misses[:20],
        "expired_shown": tally.expired_shown,
        "unverified_danger_top1": tally.doubtful_top1["combined"],
        "unverified_danger_top1_by_method": tally.doubtful_top1,
        "ndcg_at_5_by_call_type": by_call_type,
    }


def _ids_hash(ids) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def format_ci(entry: dict) -> str:
    """`mean [lo, hi]` of one method's figure (`n/a` without a mean)."""
    lo, hi = entry["ci95"]
    mean = entry["mean"]
    if mean is None:
        return "n/a"
    return f"{mean:.4f} [{lo:.4f}, {hi:.4f}]" if lo is not None else f"{mean:.4f}"


def render_text(report: dict) -> str:
    """A readable table for the terminal."""
    n = report["n_incidents"]
    lines = [f"incidents: {n['total']:,} ({n['train']:,} train, {n['test']:,} test; {n['test_ranked']:,} test incidents "
             f"ranked, {n['test_persons']:,} persons)   rules {report['rules_version']}",
             f"scorecard: C={report['model']['C']}, rank weight {report['model']['rank_weight']}, "
             f"{report['model']['training_rows']:,} feedback rows, held-out AUC "
             f"{(report['model']['metrics'].get('auc') or float('nan')):.3f}, trained in {report['model']['train_seconds']:.2f}s",
             "",
             f"{'metric':<10} {'rules':>26} {'model':>26} {'rules + model':>26}"]
    for metric in ("ndcg_at_3", "ndcg_at_5", "map"):
        b = report[metric]
        lines.append(f"{metric:<10} {format_ci(b['rules']):>26} {format_ci(b['model']):>26} {format_ci(b['combined']):>26}")
    lo, hi = report["combined_minus_rules_ci95"]
    diff = report["combined_minus_rules"]
    recall = report["safety_pin_recall"]
    lines += ["",
              f"NDCG@5 combined - rules: {diff:+.4f}  95% CI [{lo:+.4f}, {hi:+.4f}]"
              f"  -> {'combined beats rules' if report['combined_beats_rules'] else 'no significant gain'}"
              if diff is not None and lo is not None else "NDCG@5 combined - rules: n/a",
              f"safety-pin recall: {'n/a' if recall is None else f'{recall:.3f}'} ({report['safety_pin_incidents']} incidents)",
              f"expired items shown: {report['expired_shown']}",
              f"unverified danger label ranked first: {report['unverified_danger_top1']}"]
    return "\n".join(lines)

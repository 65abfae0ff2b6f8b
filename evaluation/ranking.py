"""`briefing eval ranking`: how well rules, the feedback-trained scorecard, and both together order
a person's items, measured against the hidden relevance on incidents the scorecard never saw.

`evaluate_ranking(county_dir, seed, test_share, bootstrap)`:

1. **Split** the incidents (all of `incidents.csv`, seeded permutation, `test_share` of them to test).
2. **Train** the scorecard (`scoring.ranker.train_scorecard`) on the feedback rows of the *train*
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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.item import ContextItem
from scoring.rank import rank
from scoring.ranker import Examples, ItemScorecard, agencies_for, feedback_examples, live, train_scorecard
from scoring.rules import Rules

METHODS = ("rules", "model", "combined")
METRICS = ("ndcg_at_3", "ndcg_at_5", "map")
RELEVANT = 2


class RankingDataError(ValueError):
    """A county directory lacks a file or column the ranking needs: the message names the file."""


# --------------------------------------------------------------------------- data


def _read(directory: Path, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    path = directory / name
    if not path.is_file():
        raise RankingDataError(f"{path}: no such file (the ranking needs {name} in {directory})")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RankingDataError(f"{path}: not a readable CSV: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RankingDataError(f"{path}:1: needs column(s) {', '.join(missing)}; found {', '.join(frame.columns) or 'none'}")
    return frame


@dataclass
class CountyContext:
    """What ranking evaluation and training read from a synthetic county directory."""

    incidents: pd.DataFrame                              # incident_id, call_type, received_at, person_key
    when: dict[str, tuple[str, datetime]]                # incident id -> (call type, received time)
    items: dict[str, ContextItem]                        # items of incident subjects, by id
    person_of_item: dict[str, str]
    person_items: dict[str, list[ContextItem]]
    feedback: pd.DataFrame
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


def examples_for(ctx: CountyContext, incident_ids=None, rules: Rules | None = None) -> Examples:
    """Feedback examples of `incident_ids` (all when None); with `rules`, `rows["rules_score"]` too."""
    fb = ctx.feedback if incident_ids is None else ctx.feedback[ctx.feedback["incident_id"].isin(set(incident_ids))]
    ex = feedback_examples(fb, ctx.when, ctx.items, ctx.person_items, ctx.person_of_item)
    if rules is not None:
        scores = []
        for incident_id, item_id, call_type in ex.rows[["incident_id", "item_id", "call_type"]].itertuples(index=False):
            item, now = ctx.items[item_id], ctx.when[incident_id][1]
            agencies = agencies_for(item, ctx.person_items.get(ctx.person_of_item[item_id], ()), now)
            scores.append(sum(v for _, v in rules.terms(item, call_type, now, agencies)))
        ex.rows["rules_score"] = np.asarray(scores, dtype=float)
    return ex


def fit_ranker(ctx: CountyContext, incident_ids=None, rules: Rules | None = None, seed: int = 0,
               rank_weight: float | str = "auto", C: float | str = "auto") -> ItemScorecard:
    """Train the scorecard on the feedback of `incident_ids` (all when None)."""
    rules = rules or Rules.load()
    ex = examples_for(ctx, incident_ids, rules)
    if len(ex) == 0:
        raise RankingDataError(f"{ctx.files.get('dir', '')}: no feedback rows to train on")
    model = train_scorecard(ex, C=C, seed=seed, rules_scores=ex.rows["rules_score"].to_numpy(), rank_weight=rank_weight)
    model.training_["rules_version"] = rules.version
    return model


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


def _ci(values: np.ndarray) -> list[float | None]:
    values = values[np.isfinite(values)]
    if not len(values):
        return [None, None]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _bootstrap_means(table: pd.DataFrame, columns: list[str], replicates: int, seed: int) -> dict[str, np.ndarray]:
    """Per column, `replicates` means over resampled persons (each with all their rows); NaN rows skipped."""
    persons = pd.Categorical(table["person_key"])
    n = len(persons.categories)
    rng = np.random.default_rng([seed, 1])
    draws = np.zeros((replicates, n))
    for r in range(replicates):
        draws[r] = np.bincount(rng.integers(0, n, n), minlength=n)
    out = {}
    for col in columns:
        v = table[col].to_numpy(dtype=float)
        ok = np.isfinite(v)
        sums = np.bincount(persons.codes[ok], weights=v[ok], minlength=n)
        counts = np.bincount(persons.codes[ok], minlength=n).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[col] = (draws @ sums) / (draws @ counts)
    return out


# --------------------------------------------------------------------------- evaluation


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

    relevance = ctx.relevance
    test_set = set(test_ids)
    rel = relevance[relevance["incident_id"].isin(test_set)]
    grade_of = {(i, j): int(r) for i, j, r in rel[["incident_id", "item_id", "relevance"]].itertuples(index=False)}
    person_of_incident = dict(zip(ctx.incidents["incident_id"], ctx.incidents["person_key"]))
    evaluated = sorted(set(rel["incident_id"]))
    say(f"ranking {len(evaluated):,} test incidents three ways")

    rows, expired_shown, doubtful_top1 = [], 0, {m: 0 for m in METHODS}
    pin_incidents, pin_hits, pin_misses = 0, 0, []
    started = time.perf_counter()
    for incident_id in evaluated:
        call_type, now = ctx.when[incident_id]
        person = person_of_incident[incident_id]
        items = ctx.person_items.get(person, [])
        by_id = {i.item_id: i for i in items}
        rankings = {
            "rules": rank(items, call_type, "certain", now, rules),
            "model": rank(items, call_type, "certain", now, rules, model=model, use_rules=False),
            "combined": rank(items, call_type, "certain", now, rules, model=model),
        }
        row = {"incident_id": incident_id, "person_key": person, "call_type": call_type,
               "lines": len(rankings["rules"])}
        for method, ranked in rankings.items():
            gains = [max(grade_of.get((incident_id, s["item_id"]), 0) for s in line.sources) for line in ranked]
            row[f"ndcg_at_3:{method}"] = ndcg(gains, 3)
            row[f"ndcg_at_5:{method}"] = ndcg(gains, 5)
            row[f"map:{method}"] = average_precision(gains)
            expired_shown += sum(1 for line in ranked for s in line.sources if not live(by_id[s["item_id"]], now))
            if ranked and rules.is_doubtful_danger(by_id[ranked[0].item_id], now) and \
                    any(line.category != ranked[0].category for line in ranked):
                doubtful_top1[method] += 1
        row["ndcg5_diff"] = row["ndcg_at_5:combined"] - row["ndcg_at_5:rules"]
        pinnable = [i for i in items if live(i, now) and rules.is_pinnable(i, now)]
        if pinnable:
            pin_incidents += 1
            latest = max(pinnable, key=lambda i: (i.observed_at or i.last_verified_at, i.last_verified_at, i.item_id))
            position = next(k for k, line in enumerate(rankings["combined"])
                            if latest.item_id in {s["item_id"] for s in line.sources})
            if position < int(rules.safety_pin["top"]):
                pin_hits += 1
            else:
                pin_misses.append({"incident_id": incident_id, "item_id": latest.item_id, "position": position + 1})
        rows.append(row)
    rank_seconds = time.perf_counter() - started

    table = pd.DataFrame(rows)
    columns = [f"{m}:{meth}" for m in METRICS for meth in METHODS] + ["ndcg5_diff"]
    say(f"bootstrap ({bootstrap:,} replicates over persons)")
    boot = _bootstrap_means(table, columns, bootstrap, seed) if len(table) and bootstrap > 0 else {}

    def block(metric: str) -> dict:
        out = {}
        for meth in METHODS:
            col = f"{metric}:{meth}"
            values = table[col].to_numpy(dtype=float) if len(table) else np.array([])
            out[meth] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else None,
                         "ci95": _ci(boot[col]) if col in boot else [None, None],
                         "n_incidents": int(np.isfinite(values).sum())}
        return out

    diff = table["ndcg5_diff"].to_numpy(dtype=float) if len(table) else np.array([])
    by_call_type = {}
    if len(table):
        for call_type, part in table.groupby("call_type"):
            by_call_type[call_type] = {"n_incidents": int(part["ndcg_at_5:rules"].notna().sum()),
                                       **{meth: float(part[f"ndcg_at_5:{meth}"].mean()) for meth in METHODS}}
    training = dict(model.training_)
    report = {
        "county_dir": str(county_dir),
        "seed": seed,
        "test_share": test_share,
        "rules_version": rules.version,
        "n_incidents": {"total": int(len(ctx.incidents)), "train": len(train_ids), "test": len(test_ids),
                        "test_ranked": len(evaluated),
                        "train_with_feedback": int(training["incidents"]),
                        "test_persons": int(table["person_key"].nunique()) if len(table) else 0},
        "ndcg_at_5": block("ndcg_at_5"),
        "ndcg_at_3": block("ndcg_at_3"),
        "map": block("map"),
        "combined_minus_rules": float(np.nanmean(diff)) if np.isfinite(diff).any() else None,
        "combined_minus_rules_ci95": _ci(boot["ndcg5_diff"]) if "ndcg5_diff" in boot else [None, None],
        "combined_beats_rules": bool("ndcg5_diff" in boot and _ci(boot["ndcg5_diff"])[0] is not None
                                     and _ci(boot["ndcg5_diff"])[0] > 0),
        "safety_pin_recall": (pin_hits / pin_incidents) if pin_incidents else None,
        "safety_pin_incidents": pin_incidents,
        "safety_pin_misses": pin_misses[:20],
        "expired_shown": expired_shown,
        "unverified_danger_top1": doubtful_top1["combined"],
        "unverified_danger_top1_by_method": doubtful_top1,
        "ndcg_at_5_by_call_type": by_call_type,
        "model": {"C": model.C, "rank_weight": model.rank_weight, "features": len(model.feature_names_),
                  "training_rows": training["rows"], "training_data_sha256": training["data_sha256"],
                  "metrics": training["metrics"], "train_seconds": round(train_seconds, 3)},
        "rank_seconds": round(rank_seconds, 3),
        "bootstrap": {"replicates": bootstrap, "unit": "person (all of a person's test incidents together)"},
        "definitions": {
            "gain": "relevance 0-3 (linear), a merged line takes the max over its items, no row = 0",
            "ndcg": "DCG@k / ideal DCG@k over the same lines; incidents with all gains 0 left out",
            "map": f"average precision with relevant = relevance >= {RELEVANT}; incidents without a relevant line left out",
            "safety_pin_recall": "test incidents whose person has a live pinnable item (Rules.is_pinnable): the most "
                                 "recent one (by event date) is in the top 3 of the combined ranking",
            "unverified_danger_top1": "test incidents whose combined top line is a doubtful danger label "
                                      "(Rules.is_doubtful_danger) while another category is ranked",
            "expired_shown": "lines, over all three rankings, carrying an expired or inactive item",
        },
        "split": {"train_incident_ids_sha256": _ids_hash(train_ids), "test_incident_ids_sha256": _ids_hash(test_ids)},
    }
    return report


def _ids_hash(ids) -> str:
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


def _fmt_ci(entry: dict) -> str:
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
        lines.append(f"{metric:<10} {_fmt_ci(b['rules']):>26} {_fmt_ci(b['model']):>26} {_fmt_ci(b['combined']):>26}")
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


# --------------------------------------------------------------------------- model card


def model_card(manifest: dict, evaluation: dict | None = None, provenance: str = "") -> str:
    """`models/RANKER.md`: intended use, data, features, metrics, caveats (from the model file's content
    (`manifest`: `models/ranker.json` as a dict) and, when given, an `eval ranking` JSON measured on
    held-out incidents)."""
    m = manifest.get("metrics", {}) or {}
    tr = manifest.get("training", {}) or {}
    coef = manifest.get("coefficients", {}) or {}
    fmt = lambda v, d=4: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [
        "# Ranker model card",
        "",
        f"Model file: `ranker.json` (JSON, never a pickle; loading checks its SHA-256 `{str(manifest.get('sha256'))[:12]}…`) "
        f"— format `{manifest.get('format')}`, scikit-learn {manifest.get('sklearn_version')}, created "
        f"{manifest.get('created')}.",
        "",
        "## Intended use",
        "Ordering the context items of a person *already resolved* for an incident, together with the declarative",
        "rules (`scoring/rules.toml`): rank score = rules terms + rank weight × model terms, each term shown to the",
        "responder. The model estimates how likely responders are to mark an item as helpful at this kind of call.",
        "It never decides access (the access policy runs first), never overrides the ordering rules (doubtful danger",
        "labels sink; the safety pin holds), and is not a risk score about a person.",
        "",
        "## Training data",
        provenance or "Responder feedback (`feedback.csv`: incident, item, helped 0/1) of a synthetic county.",
        "",
        f"- feedback rows: {tr.get('rows', 'n/a'):,} from {tr.get('incidents', 'n/a'):,} incidents; "
        f"helped share {fmt(tr.get('helped_share'), 3)}" if isinstance(tr.get("rows"), int) else "- feedback rows: n/a",
        f"- training-data hash (sha256 of the sorted `incident_id,item_id,helped` rows): `{manifest.get('training_data_sha256')}`",
        f"- rules version used to choose the rank weight: `{tr.get('rules_version', 'n/a')}`",
        "",
        "## Model",
        f"{manifest.get('model')}; C = {manifest.get('params', {}).get('C')} (chosen by held-out log loss), "
        f"rank weight = {manifest.get('params', {}).get('rank_weight')} (chosen by held-out AUC of rules + weight × "
        "log-odds). Units: natural-log odds.",
        "",
        f"### Features ({manifest.get('n_features')}) — no demographic attribute",
        "Category one-hot; call type × category; source type one-hot; legal category one-hot; ln(1 + days since last",
        "verified, else observed); date seen unknown; verified; past review date; unverified / stale / vague danger label;",
        "unspecific danger code; corroborating agencies. Nothing about the person: no race/ethnicity, sex, age or birth",
        "year, name or postcode (demographics exist only in evaluation fixtures; a test checks the model file).",
        "",
        "Largest weights (log-odds):",
        "",
        "| feature | weight |",
        "|---|---|",
    ]
    for name, w in sorted(coef.items(), key=lambda kv: -abs(kv[1]))[:15]:
        lines.append(f"| `{name}` | {w:+.3f} |")
    lines += [
        "",
        "## Metrics",
        f"On a held-out {int(100 * m.get('holdout_share_of_incidents', 0))} % of the training incidents "
        f"({m.get('holdout_rows', 'n/a')} feedback rows; model fitted on the rest with the same settings): "
        f"log loss {fmt(m.get('log_loss'))} (base rate {fmt(m.get('base_rate_log_loss'))}), AUC {fmt(m.get('auc'))} "
        f"(rules score alone: AUC {fmt(m.get('rules_auc'))}).",
    ]
    if evaluation:
        n = evaluation["n_incidents"]
        lines += [
            "",
            f"Ranking quality on held-out incidents (`briefing eval ranking`, split seed {evaluation['seed']}): a scorecard "
            f"trained the same way on the feedback of {n['train']:,} train incidents only (C = {evaluation['model']['C']}, "
            f"rank weight {evaluation['model']['rank_weight']}), measured on {n['test_ranked']:,} test incidents against the "
            f"hidden relevance; 95 % bootstrap CIs over persons; rules `{evaluation['rules_version']}`:",
            "",
            "| metric | rules | model | rules + model |",
            "|---|---|---|---|",
        ]
        for metric, label in (("ndcg_at_3", "NDCG@3"), ("ndcg_at_5", "NDCG@5"), ("map", "MAP (rel ≥ 2)")):
            b = evaluation[metric]
            lines.append(f"| {label} | " + " | ".join(_fmt_ci(b[k]) for k in METHODS) + " |")
        lo, hi = evaluation["combined_minus_rules_ci95"]
        diff = evaluation["combined_minus_rules"]
        lines += [
            "",
            f"NDCG@5 rules + model − rules: {diff:+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}). Safety-pin recall "
            f"{fmt(evaluation['safety_pin_recall'], 3)} over {evaluation['safety_pin_incidents']} incidents; expired items "
            f"shown {evaluation['expired_shown']}; unverified danger label ranked first {evaluation['unverified_danger_top1']}.",
        ] if diff is not None and lo is not None else []
    lines += [
        "",
        "## Caveats",
        "- Trained and measured on synthetic feedback (`evaluation/SYNTH.md` §7). Responders' marks carry biases (approach",
        "  guidance liked, danger labels and legal status marked unhelpful more than their relevance says): the model learns",
        "  them, which is one reason it is added to the rules rather than replacing them, and why the ordering rules",
        "  (doubtful danger labels sink, the safety pin) are applied after scoring.",
        "- Feedback is small (a few thousand rows): call type × category weights are shrunk towards zero by L2",
        "  regularisation; rare pairs mostly fall back on the category weight.",
        "- Feedback was shown in random order (no position bias). Real feedback on a ranked screen would need",
        "  position-bias correction before training.",
        "- Re-train when the rules file, the item vocabulary or the feature list changes; the model file's feature list",
        "  must match the code's or loading fails (so must its content digest: an edited file is refused).",
    ]
    return "\n".join(lines) + "\n"

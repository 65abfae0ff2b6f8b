"""`models/RANKER.md`, the ranker's model card: intended use, training data, features, metrics, caveats.

Written by `briefing train-ranker` beside the model file, from the file's content and, when given,
the held-out figures of `briefing eval ranking` (`evaluation.ranking.evaluate.evaluate_ranking`).
"""

from __future__ import annotations

from evaluation.ranking.evaluate import METHODS, format_ci


def model_card(manifest: dict, evaluation: dict | None = None, provenance: str = "") -> str:
    """`models/RANKER.md`: intended use, data, features, metrics, caveats (from the model file's content
    (`manifest`: `models/ranker.json` as a dict) and, when given, an `eval ranking` JSON measured on
    held-out incidents)."""
    lines = _card_use_and_data(manifest, provenance) + _card_model(manifest) + _card_metrics(manifest)
    if evaluation:
        lines += _card_evaluation(evaluation)
    lines += CARD_CAVEATS
    return "\n".join(lines) + "\n"


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _card_use_and_data(manifest: dict, provenance: str) -> list[str]:
    """The card's title, model file line, intended use and training data."""
    tr = manifest.get("training", {}) or {}
    return [
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
        f"helped share {_fmt(tr.get('helped_share'), 3)}" if isinstance(tr.get("rows"), int) else "- feedback rows: n/a",
        f"- training-data hash (sha256 of the sorted `incident_id,item_id,helped` rows): `{manifest.get('training_data_sha256')}`",
        f"- rules version used to choose the rank weight: `{tr.get('rules_version', 'n/a')}`",
        "",
    ]


def _card_model(manifest: dict) -> list[str]:
    """The card's model, features and largest weights."""
    coef = manifest.get("coefficients", {}) or {}
    lines = [
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
    return lines


def _card_metrics(manifest: dict) -> list[str]:
    """The card's held-out metrics of the training run."""
    m = manifest.get("metrics", {}) or {}
    return [
        "",
        "## Metrics",
        f"On a held-out {int(100 * m.get('holdout_share_of_incidents', 0))} % of the training incidents "
        f"({m.get('holdout_rows', 'n/a')} feedback rows; model fitted on the rest with the same settings): "
        f"log loss {_fmt(m.get('log_loss'))} (base rate {_fmt(m.get('base_rate_log_loss'))}), AUC {_fmt(m.get('auc'))} "
        f"(rules score alone: AUC {_fmt(m.get('rules_auc'))}).",
    ]


def _card_evaluation(evaluation: dict) -> list[str]:
    """The card's ranking quality on held-out incidents, from an `eval ranking` report."""
    n = evaluation["n_incidents"]
    lines = [
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
        lines.append(f"| {label} | " + " | ".join(format_ci(b[k]) for k in METHODS) + " |")
    lo, hi = evaluation["combined_minus_rules_ci95"]
    diff = evaluation["combined_minus_rules"]
    lines += [
        "",
        f"NDCG@5 rules + model − rules: {diff:+.4f} (95 % CI {lo:+.4f} to {hi:+.4f}). Safety-pin recall "
        f"{_fmt(evaluation['safety_pin_recall'], 3)} over {evaluation['safety_pin_incidents']} incidents; expired items "
        f"shown {evaluation['expired_shown']}; unverified danger label ranked first {evaluation['unverified_danger_top1']}.",
    ] if diff is not None and lo is not None else []
    return lines


#: The card's caveats: the same for every model trained on synthetic feedback.
CARD_CAVEATS = [
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

"""Production training of the ranker: responder feedback -> examples -> a fitted `ItemScorecard`.

`FeedbackData` is what training reads, as plain typed data from any source (a synthetic county's
CSVs: `evaluation.ranking.county.load_county`; a live store's feedback later): the feedback rows and the
incidents, items and persons they name. `examples_for` turns it into `Examples` (features per
`scoring.ranker_features`, with each row's rules score when given the rules); `train_scorecard` fits
a scorecard on examples, choosing C and the rank weight on a held-out share of the incidents;
`fit_ranker` does both for the `briefing train-ranker` command and the ranking evaluation, and
records the rules version it was tuned against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from scoring.item import ContextItem
from scoring.ranker import ItemScorecard
from scoring.ranker_features import FEATURES, agencies_for, feature_matrix, item_features
from scoring.rules import Rules


@dataclass
class FeedbackData:
    """Responder feedback and what it refers to (the ranker's training data)."""

    when: Mapping[str, tuple[str, datetime]]             # incident id -> (call type, received time)
    items: Mapping[str, ContextItem]                     # the items feedback may name, by id
    person_of_item: Mapping[str, str]
    person_items: Mapping[str, Sequence[ContextItem]]    # person -> all that person's items
    feedback: pd.DataFrame                               # incident_id, item_id, helped (0/1)


@dataclass
class Examples:
    """Feedback turned into features: `X` (DataFrame over FEATURES), `y` (helped), `rows` (incident_id,
    item_id, helped, call_type, rules_score if computed) — aligned row by row."""

    X: pd.DataFrame
    y: np.ndarray
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.y)


def feedback_examples(feedback: pd.DataFrame, incidents: Mapping[str, tuple[str, datetime]],
                      items: Mapping[str, ContextItem], person_items: Mapping[str, Sequence[ContextItem]],
                      person_of_item: Mapping[str, str]) -> Examples:
    """One example per feedback row (`incident_id, item_id, helped`).

    `incidents`: incident id → (call type, received time); `items`: item id → item;
    `person_of_item`: item id → person; `person_items`: person → all that person's items (for the
    corroboration count). Rows whose incident or item is unknown are an error (the message names one).
    """
    dicts, ys, keep = [], [], []
    for row in feedback[["incident_id", "item_id", "helped"]].itertuples(index=False):
        if row.incident_id not in incidents:
            raise ValueError(f"feedback names incident {row.incident_id}, which is not in the incidents")
        if row.item_id not in items:
            raise ValueError(f"feedback names item {row.item_id}, which is not in the context items")
        call_type, now = incidents[row.incident_id]
        item = items[row.item_id]
        agencies = agencies_for(item, person_items.get(person_of_item.get(row.item_id), ()), now)
        dicts.append(item_features(item, call_type, now, agencies))
        ys.append(int(row.helped))
        keep.append((row.incident_id, row.item_id, int(row.helped), call_type))
    X = pd.DataFrame(feature_matrix(dicts) if dicts else np.zeros((0, len(FEATURES))), columns=list(FEATURES))
    rows = pd.DataFrame(keep, columns=["incident_id", "item_id", "helped", "call_type"])
    return Examples(X, np.asarray(ys, dtype=int), rows)


def feedback_hash(rows: pd.DataFrame) -> str:
    """sha256 of the feedback rows used (`incident_id,item_id,helped`, sorted, one per line)."""
    lines = sorted(f"{r.incident_id},{r.item_id},{int(r.helped)}" for r in rows[["incident_id", "item_id", "helped"]].itertuples())
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _holdout_split(groups: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded `share` of the distinct groups (incidents)."""
    distinct = np.array(sorted(set(groups)))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(distinct, size=max(1, int(round(share * len(distinct)))), replace=False)) if len(distinct) > 1 else set()
    return np.array([g in held for g in groups])


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(y, score)) if len(set(y)) == 2 else None


def train_scorecard(examples: Examples, C: float | str = "auto", holdout: float = 0.2, seed: int = 0,
                    rules_scores: np.ndarray | None = None, rank_weight: float | str = 1.0,
                    C_grid: Sequence[float] = (0.03, 0.1, 0.3, 1.0, 3.0),
                    weight_grid: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
                    ) -> ItemScorecard:
    """Fit a scorecard on `examples` and record provenance and held-out metrics in `training_`.

    A seeded `holdout` share of the incidents is held out: the scorecard is fitted on the rest and
    its log loss and AUC measured there (the manifest's metrics); `C="auto"` picks C from `C_grid`
    by that held-out log loss. With `rank_weight="auto"` (needs `rules_scores`, the rules score of
    each example) the factor on the model's terms is the one in `weight_grid` whose rules +
    weight × log-odds best separates helped from not helped (AUC) on the held-out incidents.
    The final scorecard is refitted on every example. Only `examples` are ever read.
    """
    groups = examples.rows["incident_id"].to_numpy()
    held = _holdout_split(groups, holdout, seed)
    y = examples.y
    X = examples.X
    fit_rows, test_rows = ~held, held
    usable = len(set(y[fit_rows])) == 2 and test_rows.any()
    metrics: dict = {"holdout_share_of_incidents": holdout, "holdout_rows": int(test_rows.sum()),
                     "fit_rows": int(fit_rows.sum())}
    chosen_C = C
    candidates = list(C_grid) if C == "auto" else [float(C)]
    if usable:
        losses = {}
        for c in candidates:
            inner = ItemScorecard(C=c).fit(X[fit_rows], y[fit_rows])
            p = inner.predict_proba(X[test_rows])[:, 1]
            losses[c] = float(log_loss(y[test_rows], p, labels=[0, 1]))
        chosen_C = min(losses, key=lambda c: (losses[c], -c)) if C == "auto" else float(C)
        inner = ItemScorecard(C=chosen_C).fit(X[fit_rows], y[fit_rows])
        logit = inner.decision_function(X[test_rows])
        metrics.update({"log_loss": losses[chosen_C], "auc": _auc(y[test_rows], logit),
                        "base_rate_log_loss": float(log_loss(y[test_rows], np.full(test_rows.sum(), y[fit_rows].mean()),
                                                             labels=[0, 1])),
                        "log_loss_by_C": {str(c): v for c, v in losses.items()} if C == "auto" else None})
        if rules_scores is not None:
            metrics["rules_auc"] = _auc(y[test_rows], rules_scores[test_rows])
        if rank_weight == "auto":
            if rules_scores is None:
                raise ValueError('rank_weight="auto" needs the rules score of each example')
            aucs = {w: _auc(y[test_rows], rules_scores[test_rows] + w * logit) for w in weight_grid}
            rank_weight = max(aucs, key=lambda w: (aucs[w] or 0.0, -w))
            metrics["auc_by_rank_weight"] = {str(w): v for w, v in aucs.items()}
    else:
        chosen_C = 1.0 if C == "auto" else float(C)
        if rank_weight == "auto":
            rank_weight = 1.0
    model = ItemScorecard(C=float(chosen_C), rank_weight=float(rank_weight)).fit(X, y)
    return model.note_training(
        data_sha256=feedback_hash(examples.rows),
        rows=int(len(y)),
        incidents=int(len(set(groups))),
        helped_share=float(y.mean()) if len(y) else None,
        seed=seed,
        metrics=metrics,
    )


def examples_for(data: FeedbackData, incident_ids=None, rules: Rules | None = None) -> Examples:
    """Feedback examples of `incident_ids` (all when None); with `rules`, `rows["rules_score"]` too."""
    fb = data.feedback if incident_ids is None else data.feedback[data.feedback["incident_id"].isin(set(incident_ids))]
    ex = feedback_examples(fb, data.when, data.items, data.person_items, data.person_of_item)
    if rules is not None:
        scores = []
        for incident_id, item_id, call_type in ex.rows[["incident_id", "item_id", "call_type"]].itertuples(index=False):
            item, now = data.items[item_id], data.when[incident_id][1]
            agencies = agencies_for(item, data.person_items.get(data.person_of_item[item_id], ()), now)
            scores.append(sum(v for _, v in rules.terms(item, call_type, now, agencies)))
        ex.rows["rules_score"] = np.asarray(scores, dtype=float)
    return ex


def fit_ranker(data: FeedbackData, incident_ids=None, rules: Rules | None = None, seed: int = 0,
               rank_weight: float | str = "auto", C: float | str = "auto") -> ItemScorecard:
    """Train the scorecard on the feedback of `incident_ids` (all when None); ValueError when there is none."""
    rules = rules or Rules.load()
    ex = examples_for(data, incident_ids, rules)
    if len(ex) == 0:
        raise ValueError("no feedback rows to train on")
    model = train_scorecard(ex, C=C, seed=seed, rules_scores=ex.rows["rules_score"].to_numpy(), rank_weight=rank_weight)
    return model.note_training(rules_version=rules.version)

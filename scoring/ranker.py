"""The learned half of an item's score: a logistic scorecard trained on responder feedback.

`ItemScorecard` follows scikit-learn's conventions (parameters in `__init__`, `fit(X, y)`, learned
state with a trailing underscore, `predict_proba`, `decision_function`) and wraps a
`sklearn.linear_model.LogisticRegression` over a fixed, documented feature list (`FEATURES`,
built per item by `item_features`). It is also a `scoring.rank.ItemModel`: `terms(item,
call_type, now, agencies)` names every non-zero feature's contribution, so

    rank(items, call_type, grade, now, rules, model=scorecard)

shows next to each line which rules *and* which learned features put it there.

**Units.** A term is `rank_weight × coefficient × feature value`, in natural-log odds of
"a responder marked this item as helpful" (`rank_weight` is 1.0 unless the scorecard was trained
with `rank_weight="auto"`, see `train_scorecard`). With `rank_weight = 1` the terms of an item sum
to `decision_function(item) − intercept_`; the intercept is the same for every item and never
changes an order, so it is not a term.

**No demographics.** The features describe the *item* (category, source, legal category, age,
verification, corroboration) and the *incident's call type*; nothing about the person. The
list is fixed in code, written to the model file, and `tests/test_ranker.py` checks that no feature
name mentions a demographic attribute (race/ethnicity, sex, age or birth year of the person, names,
postcode) and that `item_features` never reads anything but the item, call type, time and count.
"Age" below is the age of the *information* (days since it was last verified or observed).

**Files.** `save(path)` writes one JSON document (`models/ranker.json`: format, parameters, feature
list, intercept and coefficients, training-data hash, metrics, scikit-learn version, creation time
and the SHA-256 of its canonical content); `load(path)` checks it and rebuilds the fitted estimator
from it. A scorecard is data, never a pickle: nothing that is loaded can run code
(`scoring.ranker_file` has the format and the checks).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from scoring.item import Category, ContextItem, LegalCategory, Status

FORMAT = "briefing.ranker/2"           # /1 was a joblib pickle beside a JSON manifest; /2 is one JSON file
DEFAULT_PATH = Path("models/ranker.json")

CALL_TYPES = ("disturbance", "welfare_check", "overdose", "suicidal_person", "mental_health_crisis", "trespass",
              "domestic", "medical", "missing_person", "other")
CATEGORIES = tuple(c.value for c in Category)
SOURCE_TYPES = ("clinician", "caregiver", "self", "officer", "dispatcher", "system")
LEGAL_CATEGORIES = tuple(c.value for c in LegalCategory)

# Danger labels: the same notions as rules.toml's [danger] section, fixed here so the model's
# features do not change when the rules file is edited.
DANGER_CATEGORIES = frozenset({"safety_flag"})
VAGUE_CODES = frozenset({"SAFE_CAUTION_GENERAL", "SAFE_CAUTION_PREMISE", "SAFE_UNKNOWN", "SAFE_OFFICER_SAFETY"})
STALE_DANGER_DAYS = 365


def _feature_list() -> tuple[str, ...]:
    names = [f"category={c}" for c in CATEGORIES]
    names += [f"call_type×category={t}×{c}" for t in CALL_TYPES for c in CATEGORIES]
    names += [f"source_type={s}" for s in SOURCE_TYPES]
    names += [f"legal_category={c}" for c in LEGAL_CATEGORIES]
    names += ["log_days_since_seen", "seen_date_unknown", "verified", "past_review_due", "unverified_danger",
              "vague_danger_code", "corroborating_agencies"]
    return tuple(names)


#: The scorecard's features, in column order. Every one is a property of the item or the call type:
#:
#: - `category=<c>`: one-hot item category (12).
#: - `call_type×category=<t>×<c>`: 1 when the incident's call type is t and the item's category c (120).
#: - `source_type=<s>`: one-hot source of the item (6; none when the source is unknown).
#: - `legal_category=<l>`: one-hot legal category (5).
#: - `log_days_since_seen`: ln(1 + days since the item was last verified, else observed), at the incident time.
#: - `seen_date_unknown`: 1 when the item has neither date.
#: - `verified`: 1 when the item was ever verified.
#: - `past_review_due`: 1 when its review date has passed ("unverified since").
#: - `unverified_danger`: 1 for a danger label (safety_flag) never verified, vague, or not verified for > 365 days.
#: - `vague_danger_code`: 1 for an unspecific danger code (`SAFE_CAUTION_*` and the like).
#: - `corroborating_agencies`: agencies holding the same (category, code) for the person, minus one.
FEATURES: tuple[str, ...] = _feature_list()
_INDEX = {name: k for k, name in enumerate(FEATURES)}


def item_features(item: ContextItem, call_type: str, now: datetime, agencies: int = 1) -> dict[str, float]:
    """The non-zero features of one item at an incident of `call_type` received at `now`.

    `agencies`: how many agencies hold the same (category, code) for this person (as `rank` counts).
    Only the item, the call type, the time and that count are read; never anything about the person.
    """
    out = dict.fromkeys(_static_features(call_type, item.category.value, item.source_type, item.legal_category.value), 1.0)
    out.update(_dynamic_features(item, now, agencies))
    return out


def _static_features(call_type: str, category: str, source_type: str | None, legal_category: str) -> tuple[str, ...]:
    """The one-hot features (value 1) fixed by the call type and the item's category, source and legal category."""
    names = [f"category={category}"]
    if call_type in CALL_TYPES:
        names.append(f"call_type×category={call_type}×{category}")
    if source_type in SOURCE_TYPES:
        names.append(f"source_type={source_type}")
    names.append(f"legal_category={legal_category}")
    return tuple(names)


def _dynamic_features(item: ContextItem, now: datetime, agencies: int) -> list[tuple[str, float]]:
    """The features that depend on the item's dates, code and corroboration at `now`."""
    out = []
    seen = item.last_verified_at or item.observed_at
    if seen is None:
        out.append(("seen_date_unknown", 1.0))
    else:
        days = (now - seen).total_seconds() / 86400.0
        if days > 0:
            out.append(("log_days_since_seen", math.log1p(days)))
    if item.last_verified_at is not None:
        out.append(("verified", 1.0))
    if item.review_due is not None and item.review_due <= now:
        out.append(("past_review_due", 1.0))
    if item.category.value in DANGER_CATEGORIES:
        vague = item.code in VAGUE_CODES
        if vague:
            out.append(("vague_danger_code", 1.0))
        if (vague or item.last_verified_at is None
                or (now - item.last_verified_at).total_seconds() / 86400.0 > STALE_DANGER_DAYS):
            out.append(("unverified_danger", 1.0))
    if agencies > 1:
        out.append(("corroborating_agencies", float(agencies - 1)))
    return out


def feature_matrix(X) -> np.ndarray:
    """`X` as a float matrix with one column per `FEATURES` entry.

    Accepts such a matrix, a DataFrame with (a subset of) those columns, or a sequence of feature
    dicts (from `item_features`); a feature that is absent is 0, an unknown name is an error.
    """
    if isinstance(X, pd.DataFrame):
        unknown = [c for c in X.columns if c not in _INDEX]
        if unknown:
            raise ValueError(f"unknown feature column(s): {', '.join(map(str, unknown[:5]))}")
        return X.reindex(columns=list(FEATURES), fill_value=0.0).to_numpy(dtype=float)
    if isinstance(X, (list, tuple)) and (not X or isinstance(X[0], Mapping)):
        out = np.zeros((len(X), len(FEATURES)))
        for row, features in enumerate(X):
            for name, value in features.items():
                if name not in _INDEX:
                    raise ValueError(f"unknown feature: {name}")
                out[row, _INDEX[name]] = value
        return out
    out = np.asarray(X, dtype=float)
    if out.ndim != 2 or out.shape[1] != len(FEATURES):
        raise ValueError(f"expected a matrix with {len(FEATURES)} feature columns, got shape {out.shape}")
    return out


def _term_name(name: str, item: ContextItem, now: datetime, agencies: int) -> str:
    kind, _, value = name.partition("=")
    if kind == "category":
        return f"model: category {value}"
    if kind == "call_type×category":
        call_type, category = value.split("×")
        return f"model: {category} at {call_type}"
    if kind == "source_type":
        return f"model: source {value}"
    if kind == "legal_category":
        return f"model: legal category {value}"
    if name == "log_days_since_seen":
        verified = item.last_verified_at is not None
        seen = item.last_verified_at or item.observed_at
        days = (now - seen).total_seconds() / 86400.0
        return f"model: {days:.0f} days since {'verified' if verified else 'observed'}"
    return {
        "seen_date_unknown": "model: date seen unknown",
        "verified": "model: verified",
        "past_review_due": "model: past review date",
        "unverified_danger": "model: unverified or stale danger label",
        "vague_danger_code": "model: unspecific danger label",
        "corroborating_agencies": f"model: corroborated by {agencies} agencies",
    }.get(name, f"model: {name}")


_STATIC_NAMES = {name: _term_name(name, None, None, 0) for name in FEATURES
                 if name not in ("log_days_since_seen", "corroborating_agencies")}


class ItemScorecard(ClassifierMixin, BaseEstimator):
    """Logistic scorecard: P(a responder marks the item as helpful) from `FEATURES`.

    Parameters
    ----------
    C : inverse L2 regularisation strength of the logistic regression.
    class_weight : passed to `LogisticRegression`.
    max_iter, solver : passed to `LogisticRegression` (newton-cholesky: exact and fast for ~150 features).
    rank_weight : factor applied to every model term when the scorecard ranks (`terms`); 1.0 means
        plain log-odds. Not used by `fit` / `predict_proba`.

    Learned state: `coef_` (one weight per feature), `intercept_`, `classes_`, `n_features_in_`,
    `feature_names_` (= `FEATURES`), `estimator_` (the fitted LogisticRegression); `training_`
    (provenance and metrics) when trained by `train_scorecard`; `file_sha256_` (the model file's
    content digest) when read by `load`.
    """

    def __init__(self, C: float = 1.0, class_weight=None, max_iter: int = 1000, solver: str = "newton-cholesky",
                 rank_weight: float = 1.0):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.solver = solver
        self.rank_weight = rank_weight

    # ------------------------------------------------------------------ scikit-learn API
    def fit(self, X, y, sample_weight=None) -> "ItemScorecard":
        matrix = feature_matrix(X)
        y = np.asarray(y).astype(int)
        if matrix.shape[0] != len(y):
            raise ValueError(f"X has {matrix.shape[0]} rows but y has {len(y)}")
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError("feedback must hold both helped = 0 and helped = 1 to train a scorecard")
        self.estimator_ = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter,
                                             solver=self.solver)
        self.estimator_.fit(matrix, y, sample_weight=sample_weight)
        self.coef_ = self.estimator_.coef_[0].copy()
        self.intercept_ = float(self.estimator_.intercept_[0])
        self.n_features_in_ = matrix.shape[1]
        self.feature_names_ = list(FEATURES)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Log-odds (natural log) of "helped"."""
        check_is_fitted(self, "coef_")
        return feature_matrix(X) @ self.coef_ + self.intercept_

    def predict_proba(self, X) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    # ------------------------------------------------------------------ ranking
    def terms(self, item: ContextItem, call_type: str, now: datetime, agencies: int = 1) -> list[tuple[str, float]]:
        """(readable name, rank_weight × coefficient × value) for each non-zero feature with a non-zero weight.

        The same features as `item_features`; the one-hot part is looked up once per (call type, category,
        source, legal category) and cached, so ranking 200 items stays well under a millisecond.
        """
        weights, static_cache = self._weights()
        key = (call_type, item.category, item.source_type, item.legal_category)
        static = static_cache.get(key)
        if static is None:
            static = [(_STATIC_NAMES[name], weights[name])
                      for name in _static_features(call_type, item.category.value, item.source_type, item.legal_category.value)
                      if weights[name] != 0.0]
            static_cache[key] = static
        out = list(static)
        for name, value in _dynamic_features(item, now, agencies):
            contribution = weights[name] * value
            if contribution != 0.0:
                out.append((_STATIC_NAMES.get(name) or _term_name(name, item, now, agencies), contribution))
        return out

    def score_many(self, items: Sequence[ContextItem], call_type: str, now: datetime,
                   agencies: Sequence[int]) -> list[float]:
        """The sum of `terms` for each item, without naming them (the ranking's fast path)."""
        weights, static_cache = self._weights()
        out = []
        for item, count in zip(items, agencies):
            key = ("sum", call_type, item.category, item.source_type, item.legal_category)
            static = static_cache.get(key)
            if static is None:
                static = static_cache[key] = sum(
                    weights[name] for name in _static_features(call_type, item.category.value, item.source_type,
                                                               item.legal_category.value))
            out.append(static + sum(weights[name] * value for name, value in _dynamic_features(item, now, count)))
        return out

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_weights_cache", None)
        return state

    def _weights(self) -> tuple[dict[str, float], dict]:
        """(rank_weight × coef_ as a plain dict, a cache of one-hot terms), kept per (coef_ array, rank_weight):
        numpy scalar indexing and `check_is_fitted` are slow on the ranking path. Assign a new `coef_` rather
        than editing it in place."""
        cache = self.__dict__.get("_weights_cache")
        coef = self.__dict__.get("coef_")
        if cache is None or cache[0] is not coef or cache[1] != self.rank_weight:
            check_is_fitted(self, "coef_")
            weights = {name: self.rank_weight * float(w) for name, w in zip(FEATURES, coef)}
            cache = (coef, self.rank_weight, weights, {})
            self.__dict__["_weights_cache"] = cache
        return cache[2], cache[3]

    def coefficients(self) -> dict[str, float]:
        check_is_fitted(self, "coef_")
        return {name: float(w) for name, w in zip(FEATURES, self.coef_)}

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path = DEFAULT_PATH) -> Path:
        """Write the scorecard as its JSON model file (see `scoring.ranker_file`); returns `path`."""
        from scoring import ranker_file

        check_is_fitted(self, "coef_")
        return ranker_file.write(self, path)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> "ItemScorecard":
        """Read a scorecard written by `save`; refuses (ValueError) a file that is not one, or whose digest,
        format, features or weights do not check out. Never unpickles anything."""
        from scoring import ranker_file

        return ranker_file.read(path)


# --------------------------------------------------------------------------- training data


@dataclass
class Examples:
    """Feedback turned into features: `X` (DataFrame over FEATURES), `y` (helped), `rows` (incident_id,
    item_id, helped, call_type, rules_score if computed) — aligned row by row."""

    X: pd.DataFrame
    y: np.ndarray
    rows: pd.DataFrame

    def __len__(self) -> int:
        return len(self.y)


def live(item: ContextItem, now: datetime) -> bool:
    """Active and not expired at `now` (what `rank` keeps)."""
    return item.status == Status.active and (item.expires_at is None or item.expires_at > now)


def agencies_for(item: ContextItem, person_items: Iterable[ContextItem], now: datetime) -> int:
    """Distinct agencies among the person's live items with the item's (category, code), as `rank` merges them."""
    same = {i.record_agency or i.record_id for i in person_items
            if i.category == item.category and i.code == item.code and live(i, now)}
    same.add(item.record_agency or item.record_id)
    return len(same)


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
    from sklearn.metrics import roc_auc_score

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
    from sklearn.metrics import log_loss

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
    model.training_ = {
        "data_sha256": feedback_hash(examples.rows),
        "rows": int(len(y)),
        "incidents": int(len(set(groups))),
        "helped_share": float(y.mean()) if len(y) else None,
        "seed": seed,
        "metrics": metrics,
    }
    return model

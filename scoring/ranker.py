"""The learned half of an item's score: a logistic scorecard trained on responder feedback.

`ItemScorecard` follows scikit-learn's conventions (parameters in `__init__`, `fit(X, y)`, learned
state with a trailing underscore, `predict_proba`, `decision_function`) and wraps a
`sklearn.linear_model.LogisticRegression` over a fixed, documented feature list (`FEATURES`,
built per item by `item_features`: `scoring.ranker_features`). It is also a `scoring.rank.ItemModel`:
`terms(item, call_type, now, agencies)` names every non-zero feature's contribution, so

    rank(items, call_type, grade, now, rules, model=scorecard)

shows next to each line which rules *and* which learned features put it there.

**Units.** A term is `rank_weight × coefficient × feature value`, in natural-log odds of
"a responder marked this item as helpful" (`rank_weight` is 1.0 unless the scorecard was trained
with `rank_weight="auto"`, see `scoring.ranker_fit.train_scorecard`). With `rank_weight = 1` the terms
of an item sum to `decision_function(item) − intercept_`; the intercept is the same for every item and
never changes an order, so it is not a term.

**No demographics.** The features describe the *item* and the *incident's call type*; nothing about
the person (`scoring.ranker_features`).

**Training.** `scoring.ranker_fit` turns feedback into examples and fits a scorecard on them
(`train_scorecard`, `fit_ranker`); provenance and held-out metrics go to `training_` by `note_training`.

**Files.** `save(path)` writes one JSON document (`models/ranker.json`: format, parameters, feature
list, intercept and coefficients, training-data hash, metrics, scikit-learn version, creation time
and the SHA-256 of its canonical content); `load(path)` checks it and rebuilds the fitted estimator
from it. A scorecard is data, never a pickle: nothing that is loaded can run code
(`scoring.ranker_file` has the format and the checks).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

import models
from scoring import ranker_file
from scoring.item import ContextItem
from scoring.ranker_features import FEATURES, STATIC_TERM_NAMES, dynamic_features, feature_matrix, static_features, term_name

DEFAULT_PATH = models.RANKER


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
    (provenance and metrics, recorded by `note_training`: `scoring.ranker_fit.train_scorecard` does);
    `file_sha256_` (the model file's content digest) when read by `load`.
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
            static = [(STATIC_TERM_NAMES[name], weights[name])
                      for name in static_features(call_type, item.category.value, item.source_type, item.legal_category.value)
                      if weights[name] != 0.0]
            static_cache[key] = static
        out = list(static)
        for name, value in dynamic_features(item, now, agencies):
            contribution = weights[name] * value
            if contribution != 0.0:
                out.append((STATIC_TERM_NAMES.get(name) or term_name(name, item, now, agencies), contribution))
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
                    weights[name] for name in static_features(call_type, item.category.value, item.source_type,
                                                               item.legal_category.value))
            out.append(static + sum(weights[name] * value for name, value in dynamic_features(item, now, count)))
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

    def note_training(self, **facts) -> "ItemScorecard":
        """Add provenance and metrics to `training_` (written to the model file by `save`); returns self."""
        check_is_fitted(self, "coef_")
        self.training_ = {**(getattr(self, "training_", None) or {}), **facts}
        return self

    def coefficients(self) -> dict[str, float]:
        check_is_fitted(self, "coef_")
        return {name: float(w) for name, w in zip(FEATURES, self.coef_)}

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the scorecard as its JSON model file (see `scoring.ranker_file`); returns `path`."""
        check_is_fitted(self, "coef_")
        return ranker_file.write(self, path)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> "ItemScorecard":
        """Read a scorecard written by `save`; refuses (ValueError) a file that is not one, or whose digest,
        format, features or weights do not check out. Never unpickles anything."""
        return cls._rebuild(ranker_file.read(path, cls().get_params()))

    @classmethod
    def _rebuild(cls, saved: ranker_file.SavedScorecard) -> "ItemScorecard":
        """A fitted scorecard (and its LogisticRegression) with exactly the saved weights."""
        model = cls(**saved.params)
        estimator = LogisticRegression(C=model.C, class_weight=model.class_weight, max_iter=model.max_iter,
                                       solver=model.solver)
        estimator.coef_ = saved.coef.reshape(1, -1).copy()
        estimator.intercept_ = np.array([saved.intercept])
        estimator.classes_ = np.array([0, 1])
        estimator.n_features_in_ = len(FEATURES)
        estimator.n_iter_ = np.array([0], dtype=np.int32)
        model.estimator_ = estimator
        model.coef_ = saved.coef
        model.intercept_ = saved.intercept
        model.classes_ = np.array([0, 1])
        model.n_features_in_ = len(FEATURES)
        model.feature_names_ = list(FEATURES)
        model.training_ = saved.training
        model.file_sha256_ = saved.digest
        return model

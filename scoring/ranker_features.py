"""The scorecard's features (`FEATURES`): what the learned half of an item's score may look at.

Every feature is a property of the *item* (category, source, legal category, age, verification,
corroboration) or of the *incident's call type*; nothing about the person. The list is fixed in
code and written to the model file (`scoring.ranker_file`), which must name exactly this list to
load, so a feature's name never changes (`tests/test_ranker.py` checks that none mentions a
demographic attribute and that `item_features` reads nothing but the item, call type, time and
count). "Age" below is the age of the *information* (days since it was last verified or observed).

`item_features` builds one item's features; `feature_matrix` turns items' features (or a
DataFrame) into the estimator's matrix; `static_features` / `dynamic_features` are the two halves
`ItemScorecard.terms` looks up and caches separately, and `term_name` / `STATIC_TERM_NAMES` the
names a responder sees next to each term. `live` and `agencies_for` say which items `rank` keeps
and how many agencies corroborate one, as `rank` counts them.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from scoring.item import CallType, Category, ContextItem, LegalCategory, Status

CALL_TYPES = tuple(t.value for t in CallType)
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
    out = dict.fromkeys(static_features(call_type, item.category.value, item.source_type, item.legal_category.value), 1.0)
    out.update(dynamic_features(item, now, agencies))
    return out


def static_features(call_type: str, category: str, source_type: str | None, legal_category: str) -> tuple[str, ...]:
    """The one-hot features (value 1) fixed by the call type and the item's category, source and legal category."""
    names = [f"category={category}"]
    if call_type in CALL_TYPES:
        names.append(f"call_type×category={call_type}×{category}")
    if source_type in SOURCE_TYPES:
        names.append(f"source_type={source_type}")
    names.append(f"legal_category={legal_category}")
    return tuple(names)


def dynamic_features(item: ContextItem, now: datetime, agencies: int) -> list[tuple[str, float]]:
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


def term_name(name: str, item: ContextItem, now: datetime, agencies: int) -> str:
    """The readable name of a feature's term for one item (`ItemScorecard.terms`)."""
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


#: The names of the terms that do not depend on the item's values (all but age and corroboration).
STATIC_TERM_NAMES = {name: term_name(name, None, None, 0) for name in FEATURES
                     if name not in ("log_days_since_seen", "corroborating_agencies")}


def live(item: ContextItem, now: datetime) -> bool:
    """Active and not expired at `now` (what `rank` keeps)."""
    return item.status == Status.active and (item.expires_at is None or item.expires_at > now)


def agencies_for(item: ContextItem, person_items: Iterable[ContextItem], now: datetime) -> int:
    """Distinct agencies among the person's live items with the item's (category, code), as `rank` merges them."""
    same = {i.record_agency or i.record_id for i in person_items
            if i.category == item.category and i.code == item.code and live(i, now)}
    same.add(item.record_agency or item.record_id)
    return len(same)

"""The ranker's model file: one JSON document (`models/ranker.json`), never a pickle.

A pickle (joblib included) runs code when it is loaded, so a scorecard is stored as data and rebuilt
from it: `write` saves the format, the model description, the parameters, the feature list, the
classes, the intercept and one coefficient per feature (by name, in `FEATURES` order), the training
block (data hash, metrics, provenance), the scikit-learn version, the creation time, and `sha256`:
the SHA-256 of the file's canonical content (every other field as JSON with sorted keys, no spaces,
UTF-8; floats are written exactly, so a file read and written again has the same digest).

`read` refuses, with a `ValueError` naming the file and the reason, anything that is not such a
document: bytes that are not UTF-8 JSON (a pickle is recognised and never unpickled), a digest
missing or not matching the content (the file was edited or corrupted after it was saved), another
format, a feature list or coefficient set that is not this code's `FEATURES`, a non-finite or
non-numeric weight, unknown or out-of-range parameters. It returns the checked content
(`SavedScorecard`), from which `ItemScorecard.load` (`scoring.ranker`) rebuilds the fitted estimator
with the same weights, so `predict_proba`, `decision_function` and `terms` give exactly what the saved
model gave; `file_sha256_` is the digest (the service reports its first 12 characters as the ranker's
version). This module knows the file, not the estimator: `scoring.ranker` imports it, never the reverse.

The digest detects corruption and edits by anyone who does not recompute it; it is not a signature.
What it cannot do, the format does: whoever can write the file can change weights, never run code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import sklearn

from scoring.ranker_features import FEATURES

FORMAT = "briefing.ranker/2"           # /1 was a joblib pickle beside a JSON manifest; /2 is one JSON file
MODEL = "ItemScorecard (sklearn.linear_model.LogisticRegression, L2)"
UNITS = "natural-log odds of helped; rank terms = rank_weight x coefficient x value"
PICKLE_MAGIC = b"\x80"                 # protocol 2+ pickles (joblib's too) start with PROTO
SOLVERS = frozenset({"lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga"})


def canonical(content: dict) -> str:
    """The JSON the digest is taken over: sorted keys, no spaces, UTF-8 text, no NaN or infinity."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_digest(content: dict) -> str:
    """SHA-256 (hex) of `canonical(content)`; `content` is the file without its `sha256` field."""
    return hashlib.sha256(canonical(content).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SavedScorecard:
    """A ranker file's checked content: what `ItemScorecard.load` rebuilds the fitted scorecard from."""

    params: dict
    coef: np.ndarray
    intercept: float
    training: dict
    digest: str


def describe(model) -> dict:
    """Everything the file holds about a fitted `model` (a `scoring.ranker.ItemScorecard`) except the digest."""
    coefficients = model.coefficients()
    training = dict(getattr(model, "training_", {}) or {})
    return {
        "format": FORMAT,
        "model": MODEL,
        "params": model.get_params(),
        "features": list(FEATURES),
        "n_features": len(FEATURES),
        "classes": [int(c) for c in model.classes_],
        "units": UNITS,
        "training_data_sha256": training.pop("data_sha256", None),
        "metrics": training.pop("metrics", {}),
        "training": training,
        "intercept": float(model.intercept_),
        "coefficients": coefficients,
        "sklearn_version": sklearn.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write(model, path: str | Path) -> Path:
    """Write `model` to `path` (atomically: a temporary file beside it, then renamed); returns `path`."""
    path = Path(path)
    content = describe(model)
    document = {**content, "sha256": content_digest(content)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _number(value, what: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {what} must be a finite number, not {value!r}")
    return float(value)


def _params(raw, path: Path, names: Iterable[str]) -> dict:
    """The scorecard's parameters from the file, checked: exactly `names` (`ItemScorecard`'s), each in range."""
    expected = set(names)
    if not isinstance(raw, dict) or set(raw) != expected:
        raise ValueError(f"{path}: params must name exactly {sorted(expected)}")
    C = _number(raw["C"], "params.C", path)
    rank_weight = _number(raw["rank_weight"], "params.rank_weight", path)
    max_iter = raw["max_iter"]
    if C <= 0 or rank_weight < 0 or isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1 \
            or raw["solver"] not in SOLVERS:
        raise ValueError(f"{path}: params out of range (C > 0, rank_weight >= 0, max_iter >= 1, a known solver)")
    class_weight = raw["class_weight"]
    if isinstance(class_weight, dict):
        if set(class_weight) - {"0", "1"}:
            raise ValueError(f"{path}: params.class_weight may weigh only classes 0 and 1")
        class_weight = {int(k): _number(v, "params.class_weight", path) for k, v in class_weight.items()}
    elif class_weight not in (None, "balanced"):
        raise ValueError(f"{path}: params.class_weight must be null, \"balanced\" or a mapping of class to weight")
    return {"C": C, "class_weight": class_weight, "max_iter": max_iter, "solver": raw["solver"],
            "rank_weight": rank_weight}


def _parse(path: Path) -> dict:
    """The file as a JSON object; a pickle or anything else that is not UTF-8 JSON is refused unread."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    raw = path.read_bytes()
    never = ("a ranker is read only from its JSON file, never unpickled: train one with `briefing train-ranker` "
             "(it writes models/ranker.json)")
    if raw.startswith(PICKLE_MAGIC) or path.suffix in (".joblib", ".pkl", ".pickle"):
        raise ValueError(f"{path}: looks like a pickle (joblib) file; {never}")
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a JSON ranker file ({exc}); {never}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a JSON ranker file (the top level is not an object); {never}")
    return document


def read(path: str | Path, param_names: Iterable[str]) -> SavedScorecard:
    """The scorecard saved at `path` by `write`, checked (see the module docstring); `param_names`: the
    estimator's parameters, which the file must name exactly."""
    path = Path(path)
    document = _parse(path)
    stated = document.pop("sha256", None)
    if not isinstance(stated, str):
        raise ValueError(f"{path}: no content digest (sha256); refusing to load a ranker file that cannot be checked")
    try:
        actual = content_digest(document)
    except ValueError as exc:
        raise ValueError(f"{path}: content cannot be canonicalised ({exc})") from None
    if not hmac.compare_digest(stated, actual):
        raise ValueError(f"{path}: content digest mismatch: the file states {stated[:12]}…, its content hashes to "
                         f"{actual[:12]}… (edited or corrupted after it was saved); refusing to load it")
    if document.get("format") != FORMAT:
        raise ValueError(f"{path}: format {document.get('format')!r}, expected {FORMAT}")
    if document.get("features") != list(FEATURES):
        raise ValueError(f"{path}: trained on a different feature list than this code's FEATURES")
    coefficients = document.get("coefficients")
    if not isinstance(coefficients, dict) or list(coefficients) != list(FEATURES):
        raise ValueError(f"{path}: coefficients must give one weight per feature, in FEATURES order")
    coef = np.array([_number(coefficients[name], f"coefficients[{name!r}]", path) for name in FEATURES])
    intercept = _number(document.get("intercept"), "intercept", path)
    if document.get("classes") != [0, 1]:
        raise ValueError(f"{path}: classes must be [0, 1] (not helped, helped)")
    training = document.get("training") or {}
    if not isinstance(training, dict) or not isinstance(document.get("metrics") or {}, dict):
        raise ValueError(f"{path}: training and metrics must be objects")
    return SavedScorecard(_params(document.get("params"), path, param_names), coef, intercept, {
        "data_sha256": document.get("training_data_sha256"), "metrics": document.get("metrics") or {}, **training},
        actual)

"""The matcher file: a trained Splink model plus Briefing's operating thresholds.

Splink refuses unknown keys in its settings, so the file wraps them:

    {"format": "briefing.matcher/1",
     "splink": {...},            # a complete Splink 5 model: Linker(df, model["splink"]) loads it
     "thresholds": {...},        # link / review band / grade boundaries (see Thresholds)
     "training": {...}}          # rows, fields, seed, timings, data hash, measured accuracy

`load` also accepts a bare Splink model JSON (thresholds then take their defaults).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "briefing.matcher/1"
GRADES = ("certain", "probable", "possible")


@dataclass(frozen=True)
class Thresholds:
    """Operating points on match probability.

    - `link`: pairs at or above it join one person in batch linking.
    - `review_low`: pairs in [review_low, link) go to the steward review queue.
    - `certain` / `probable` / `possible`: lower bounds of the grades a resolved candidate gets;
      below `possible` a candidate is not returned.
    `chosen_by` says whether they were chosen from labels (and `measured` holds the precision and
    recall at each) or are defaults for a model trained without labels.
    """

    link: float = 0.95
    review_low: float = 0.50
    certain: float = 0.99
    probable: float = 0.90
    possible: float = 0.50
    chosen_by: str = "default: no labels were available"
    measured: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("link", "review_low", "certain", "probable", "possible"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"threshold {name} must be strictly between 0 and 1, got {value}")
        if not self.possible <= self.probable <= self.certain:
            raise ValueError("grade thresholds must satisfy possible <= probable <= certain")
        if self.review_low > self.link:
            raise ValueError("review_low must not exceed link")

    def grade(self, probability: float) -> str | None:
        """The grade of a match probability, or None below `possible`."""
        if probability >= self.certain:
            return "certain"
        if probability >= self.probable:
            return "probable"
        if probability >= self.possible:
            return "possible"
        return None


@dataclass
class MatcherModel:
    """A trained matcher as stored on disk."""

    splink: dict[str, Any]
    thresholds: Thresholds = field(default_factory=Thresholds)
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """Short content hash of the Splink parameters and thresholds: names the model in audit logs."""
        payload = json.dumps({"splink": self.splink, "thresholds": asdict(self.thresholds)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def for_population(self, n_records: int) -> "MatcherModel":
        """This model with its match prior rescaled to a population of `n_records` records.

        The prior (probability that two random records match) is about (true pairs) / (all
        pairs); true pairs grow with the number of records and all pairs with its square, so a
        model trained on N0 records overstates every match's odds by about N / N0 on N records
        (a 100k-trained model at 1M: ten times, precision 0.996 -> 0.979 measured). Returns self
        when the training size is unknown or equal.
        """
        trained_on = self.training.get("records")
        if not trained_on or n_records < 2 or trained_on == n_records:
            return self
        splink = json.loads(json.dumps(self.splink))
        prior = splink["probability_two_random_records_match"] * (trained_on - 1) / (n_records - 1)
        splink["probability_two_random_records_match"] = min(prior, 0.5)
        training = {**self.training, "prior_rescaled": {"from_records": trained_on, "to_records": n_records,
                                                        "base_version": self.version}}
        return MatcherModel(splink=splink, thresholds=self.thresholds, training=training)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "splink": self.splink,
                "thresholds": asdict(self.thresholds), "training": self.training}

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash never leaves a half-written model."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "MatcherModel":
        """Read a matcher file (or a bare Splink model JSON); ValueError with the path on anything else."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable matcher model ({exc})") from exc
        if isinstance(data, dict) and data.get("format") == FORMAT:
            thresholds = data.get("thresholds") or {}
            return cls(splink=data["splink"], thresholds=Thresholds(**thresholds), training=data.get("training", {}))
        if isinstance(data, dict) and "comparisons" in data:
            return cls(splink=data)
        raise ValueError(f"{path}: not a Briefing matcher ({FORMAT}) nor a Splink model")

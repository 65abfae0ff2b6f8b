"""Batch linking: standardise, (train,) predict, cluster, and write the run's files.

`link_records` is the library entry point (DataFrames in, a `LinkResult` out); `write_link_outputs`
writes the run directory atomically: everything is first written to a temporary sibling and
moved into place only when complete, so a failed run leaves nothing half-written under --out.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from matching.attested import Identities
from matching.calibration import expected_of_linked
from matching.cluster import Clustering, RecordPairs, check_constraints, cluster, record_pairs
from matching.model import MatcherModel
from matching.standardise import available_fields, standardise
from matching.train import Matcher, predict_pairs

Progress = Callable[[str], None]


@dataclass
class LinkResult:
    """The outcome of one batch link. `must_link` / `cannot_link`: the steward decisions it respected;
    `identities`: the records' identity columns, which every (re-)clustering checks merges against."""

    clustering: Clustering
    pairs: pd.DataFrame
    model: MatcherModel
    summary: dict = field(default_factory=dict)
    must_link: list[tuple[str, str]] = field(default_factory=list)
    cannot_link: list[tuple[str, str]] = field(default_factory=list)
    identities: Identities | None = None


def missing_fields_note(model: MatcherModel, fields: set[str]) -> list[str]:
    """A warning (in a list, empty when none) naming the comparisons of `model` that no record of the input
    can feed: `fields` are the standardised columns with some value (`matching.standardise.available_fields`)."""
    compared = {c["output_column_name"] for c in model.splink.get("comparisons", [])}
    missing = sorted(compared - _compared_fields(fields))
    if not missing:
        return []
    return [f"the model compares {', '.join(missing)} but the input has no values for them (treated as missing)"]


def link_records(
    records: pd.DataFrame,
    model: MatcherModel | None = None,
    threshold: float | None = None,
    floor: float = 0.01,
    previous: pd.DataFrame | None = None,
    matcher: Matcher | None = None,
    progress: Progress | None = None,
    warnings: list[str] | None = None,
    must_link: RecordPairs | None = None,
    cannot_link: RecordPairs | None = None,
    engine: str = "duckdb",
    spark_master: str | None = None,
) -> LinkResult:
    """Deduplicate `records` (canonical columns) across all agencies into persons.

    Without `model`, trains one on these records first (`matcher` sets the training parameters).
    `threshold` overrides the model's link threshold; `floor` is the lowest probability kept in
    the returned pairs; `previous` (record_id, person_id) keeps person ids stable.
    `must_link` / `cannot_link` are steward decisions, (record_id, record_id) pairs: joined
    whatever their probability / never in one person (see `matching.cluster.components`); pairs
    naming a record not in `records` are ignored and counted in `summary["constraints"]`.
    Raises ValueError if the decisions contradict each other (must-links joining a cannot-link pair).
    `engine` ("duckdb" or "spark", `spark_master` default local[2]) is where Splink's SQL runs when
    training (`matching.engine`); to link with a model on Spark, `matching.spark_link.link_on_spark` keeps
    the records, pairs and persons on the executors (ValueError here).
    """
    if model is not None and engine == "spark":
        raise ValueError("to link with a model on Spark, use matching.spark_link.link_on_spark")
    step = progress or (lambda label: None)
    timings: dict[str, float] = {}
    notes = list(warnings or [])
    must_link, cannot_link = record_pairs(must_link), record_pairs(cannot_link)

    started = time.perf_counter()
    step("standardising")
    std = standardise(records)
    timings["standardise"] = time.perf_counter() - started
    if must_link or cannot_link:
        check_constraints(must_link, cannot_link, std["unique_id"])  # contradictions fail before scoring

    linker = scored = None
    if model is None:
        t0 = time.perf_counter()
        fitted = (matcher or Matcher(engine=engine, spark_master=spark_master)).fit(std, progress=step)
        model, linker, scored = fitted.model_, fitted.linker_, fitted.predictions_
        timings["train"] = time.perf_counter() - t0
    else:
        notes += missing_fields_note(model, available_fields(std))
        model = model.for_population(len(std))

    link_at = model.thresholds.link if threshold is None else threshold
    floor = min(floor, model.thresholds.review_low, link_at)
    t0 = time.perf_counter()
    step("scoring candidate pairs")
    pairs = predict_pairs(std, model, floor=floor, linker=linker, engine=engine, spark_master=spark_master, scored=scored)
    timings["predict"] = time.perf_counter() - t0
    result = LinkResult(clustering=Clustering(clusters=pd.DataFrame()), pairs=pairs, model=model,
                        identities=Identities.of(std),
                        summary={"records": int(len(std)), "agencies": int(std["agency"].nunique(dropna=True)),
                                 "model_trained_here": "train" in timings, "warnings": notes,
                                 "engine": matcher.engine if matcher is not None and "train" in timings else engine})
    result.summary["seconds"] = timings  # recluster adds its clustering time to this same dict
    recluster(result, record_ids=std["unique_id"], threshold=link_at, previous=previous, progress=step,
              must_link=must_link, cannot_link=cannot_link)
    timings["total"] = time.perf_counter() - started
    result.summary["seconds"] = {k: round(v, 2) for k, v in timings.items()}
    return result


def recluster(result: LinkResult, record_ids: pd.Series | None = None, threshold: float | None = None,
              previous: pd.DataFrame | None = None, progress: Progress | None = None,
              must_link: RecordPairs | None = None, cannot_link: RecordPairs | None = None) -> LinkResult:
    """Cluster `result.pairs` (again) at `threshold` (default: the model's link threshold) and refresh the summary.

    Used after thresholds are re-chosen: the pairs are already scored down to the floor, so
    only clustering is repeated. `must_link` / `cannot_link` default to the decisions the result
    was linked with (pass [] to drop them).
    """
    link_at = result.model.thresholds.link if threshold is None else threshold
    if not 0.0 < link_at < 1.0:
        raise ValueError(f"threshold must be strictly between 0 and 1, got {link_at}")
    ids = record_ids if record_ids is not None else result.clustering.clusters["record_id"]
    t0 = time.perf_counter()
    (progress or (lambda label: None))("clustering")
    if must_link is not None:
        result.must_link = record_pairs(must_link)
    if cannot_link is not None:
        result.cannot_link = record_pairs(cannot_link)
    result.clustering = cluster(ids, result.pairs, link_at, previous=previous, must_link=result.must_link,
                                cannot_link=result.cannot_link, identities=result.identities)
    pairs, thresholds = result.pairs, result.model.thresholds
    sizes = result.clustering.clusters.groupby("person_id").size()
    probabilities = pairs["match_probability"].to_numpy()
    linked = probabilities[probabilities >= link_at]
    figures = ClusteringFigures(
        persons=int(len(sizes)), singleton_persons=int((sizes == 1).sum()), largest_person=int(sizes.max()) if len(sizes) else 0,
        pairs=int(len(pairs)), pairs_linked=int(len(linked)), linked_probability_sum=float(linked.sum()),
        pairs_in_review_band=int(pairs["match_probability"].between(thresholds.review_low, link_at, inclusive="left").sum()),
        lowest_probability=float(probabilities.min()) if len(pairs) else None, records=len(ids),
        held_apart=result.clustering.held_apart["reason"].value_counts().sort_index().to_dict())
    result.summary.update(clustering_summary(figures, result.model, link_at, result.clustering.events,
                                             result.clustering.constraints, result.clustering.identity_conflicts))
    seconds = result.summary.setdefault("seconds", {})
    seconds["cluster"] = round(seconds.get("cluster", 0.0) + time.perf_counter() - t0, 2)
    return result


@dataclass
class ClusteringFigures:
    """What a summary reports of one clustering, counted by whichever engine holds the pairs and persons."""

    persons: int
    singleton_persons: int
    largest_person: int
    pairs: int
    pairs_linked: int
    linked_probability_sum: float
    pairs_in_review_band: int
    lowest_probability: float | None
    records: int
    held_apart: dict


def clustering_summary(figures: ClusteringFigures, model: MatcherModel, link_at: float, events: pd.DataFrame,
                       constraints: dict, identity_conflicts: dict) -> dict:
    """The clustering part of `summary.json` (persons, pairs, thresholds, what the model expects, events)."""
    thresholds = model.thresholds
    prior = model.splink["probability_two_random_records_match"]
    return {
        "persons": figures.persons,
        "singleton_persons": figures.singleton_persons,
        "largest_person_records": figures.largest_person,
        "pairs_scored_at_or_above_floor": figures.pairs,
        "pairs_linked": figures.pairs_linked,
        "pairs_in_review_band": figures.pairs_in_review_band,
        "thresholds": {"link": link_at, "lowest_pair_kept": figures.lowest_probability,
                       "review_band": [thresholds.review_low, link_at], "certain": thresholds.certain,
                       "probable": thresholds.probable, "possible": thresholds.possible, "chosen_by": thresholds.chosen_by},
        "model_version": model.version,
        **expected_of_linked(figures.pairs_linked, figures.linked_probability_sum, prior, figures.records),
        "prior": prior,
        "prior_rescaled": model.training.get("prior_rescaled"),
        "events": events["event"].value_counts().to_dict() if len(events) else {},
        "events_caused_by_stewards": int((events["cause"] != "scores").sum()) if len(events) else 0,
        "constraints": constraints,
        "edges_refused_for_conflicting_identity": dict(sorted(identity_conflicts.items())),
        "persons_held_apart": figures.held_apart,
    }


def _compared_fields(fields: set[str]) -> set[str]:
    """Map standardised fields to comparison output names (address covers street, postcode and city; dob covers birth_year)."""
    out = set(fields)
    if fields & {"street", "postcode"}:
        out.add("address")
    if "birth_year" in fields:
        out.add("dob")
    return out


#: How every run file's CSV is written, whichever engine made it (Arrow's writer: several times faster than
#: pandas' on a few hundred thousand pairs).
CSV_OPTIONS = pacsv.WriteOptions(quoting_style="needed")
#: The order of pairs.csv and held_apart.csv: strongest first, then by record ids.
BY_STRENGTH = (["match_probability", "record_id_l", "record_id_r"], [False, True, True])


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path, write_options=CSV_OPTIONS)


def write_link_outputs(result: LinkResult, out_dir: str | Path) -> Path:
    """Write clusters.csv, pairs.csv, held_apart.csv, model.json, summary.json (and events.csv with a previous
    run) atomically. held_apart.csv: per two persons that scores joined but clustering kept apart, the
    strongest pair of records and why (`matching.cluster.Clustering.held_apart`), for a steward to look at."""
    def fill(staging: Path) -> None:
        _write_csv(result.clustering.clusters, staging / "clusters.csv")
        columns, ascending = BY_STRENGTH
        _write_csv(result.pairs.sort_values(columns, ascending=ascending), staging / "pairs.csv")
        _write_csv(result.clustering.held_apart.sort_values(columns, ascending=ascending), staging / "held_apart.csv")
        write_run_files(staging, result.model, result.summary, result.clustering.events)

    return publish_run(out_dir, fill)


def write_run_files(staging: Path, model: MatcherModel, summary: dict, events: pd.DataFrame) -> None:
    """model.json, summary.json and (when there are any) events.csv of a run, into its staging directory."""
    model.save(staging / "model.json")
    if len(events):
        events.to_csv(staging / "events.csv", index=False)
    (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def publish_run(out_dir: str | Path, fill: Callable[[Path], None]) -> Path:
    """Make `out_dir` hold what `fill` writes into a temporary sibling, moved into place only once complete,
    so a failed run leaves nothing half-written; an events.csv of an earlier run that this one lacks goes."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fill(staging)
        has_events = (staging / "events.csv").exists()
        if not out.exists():
            os.replace(staging, out)
        else:
            for item in staging.iterdir():
                os.replace(item, out / item.name)
            stale = out / "events.csv"
            if not has_events and stale.exists():
                stale.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out

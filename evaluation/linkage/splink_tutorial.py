"""Plain Splink 5, exactly as Splink's own person-deduplication example does it, on canonical records.

    python -m evaluation.linkage.splink_tutorial RECORDS.csv --out DIR

writes DIR/pairs.csv (record_id_l, record_id_r, match_probability, match_weight: every blocked pair
predicted at match probability >= 0.01), DIR/clusters.csv (record_id, person_id: Splink's own
`cluster_pairwise_predictions_at_threshold` at 0.95) and DIR/summary.json (estimated prior, the
blocking rules' SQL, what was dropped, seconds per step).

Source, followed call for call. Splink's example "Linking a dataset of real historical persons"
(docs/demos/examples/duckdb/deduplicate_50k_synthetic, Splink 5 API:
https://moj-analytical-services.github.io/splink/demos/examples/duckdb/deduplicate_50k_synthetic.html,
source github.com/moj-analytical-services/splink docs/demos/examples/duckdb/deduplicate_50k_synthetic.nb.py),
the worked deduplication of the historical_50k persons:

- blocking: the example's ten `block_on` rules (substr(first_name,1,3)+substr(surname,1,4);
  surname+dob; first_name+dob; postcode+first_name; postcode+surname; dob+birth_place;
  substr(postcode,1,3)+dob / +first_name / +surname; substr(first_name,1,2)+substr(surname,1,2)+
  substr(dob,1,4));
- comparisons: `ForenameSurnameComparison(first_name, surname, forename_surname_concat_col_name=...)`
  (Jaro-Winkler 0.92 / 0.88 on both names, swapped names, exact on either; term frequencies on the
  full name, from a `first_name || ' ' || surname` column derived as the example derives it),
  `DateOfBirthComparison(dob, input_is_string=True)`, `PostcodeComparison(postcode_fake)`,
  `ExactMatch(birth_place)` with term frequencies;
- training: `estimate_probability_two_random_records_match` with the example's three deterministic
  rules (first_name+surname+dob; substr(first_name,1,2)+surname+substr(postcode,1,2); dob+postcode)
  at recall 0.6; `estimate_u_using_random_sampling(max_pairs=1e7)` (the example's figure; the
  fake_1000 tutorial uses 2e6); expectation maximisation blocked on first_name+surname, then on
  dob, both `estimate_without_term_frequencies=True`; `predict()`; clustering at 0.95.

Changed: column names only (first_name -> given_name, surname -> family_name, dob -> dob,
postcode_fake -> postcode, birth_place -> city; occupation dropped, Briefing has no such field).
Added: `EmailComparison(email)` when the input has e-mail addresses, the comparison Splink's
fake_1000 tutorial ("Specifying and estimating a linkage model",
https://moj-analytical-services.github.io/splink/demos/tutorials/04_Estimating_model_parameters.html)
uses for its email column; the historical example has none. Not added: phone, street, state,
ssn_last4, sex. Neither tutorial compares a phone, a street line or an identifier, so there is no
tutorial pattern to copy. That costs plain Splink FEBRL's soc_sec_id, which Briefing uses (as
ssn_last4). Also added: a seed for u sampling (reproducibility) and a prediction threshold of 0.01
(so that the benchmark can sweep thresholds over pairs.csv).
Comparisons, blocking rules, deterministic rules and EM rounds that need a column with no value
in the input are left out (listed in summary.json). PostcodeComparison's sector / district / area
levels are UK-format regexes: on other postcodes (FEBRL's Australian 4-digit codes, US ZIPs) they
never fire and the comparison is effectively exact-or-not, as it would be for a user of the example.

The input is read as plain CSV (strings; whitespace stripped; empty = null) without Briefing's
reader or standardisation: this is what a Splink user would have.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from matching.splink_internals import linker_prior   # instrumentation only: the prior the tutorial estimated

#: Briefing's canonical column for each column of the tutorial.
TUTORIAL_COLUMNS = {"first_name": "given_name", "surname": "family_name", "dob": "dob",
                    "postcode_fake": "postcode", "birth_place": "city", "email": "email"}
COLUMNS = tuple(TUTORIAL_COLUMNS.values())
CONCAT = "given_name_family_name_concat"   # the tutorial's first_name_surname_concat

BLOCKING_RULES: tuple[tuple[str, ...], ...] = (
    ("substr(given_name,1,3)", "substr(family_name,1,4)"),
    ("family_name", "dob"),
    ("given_name", "dob"),
    ("postcode", "given_name"),
    ("postcode", "family_name"),
    ("dob", "city"),
    ("substr(postcode,1,3)", "dob"),
    ("substr(postcode,1,3)", "given_name"),
    ("substr(postcode,1,3)", "family_name"),
    ("substr(given_name,1,2)", "substr(family_name,1,2)", "substr(dob,1,4)"),
)
DETERMINISTIC_RULES: tuple[tuple[str, ...], ...] = (
    ("given_name", "family_name", "dob"),
    ("substr(given_name,1,2)", "family_name", "substr(postcode,1,2)"),
    ("dob", "postcode"),
)
PRIOR_RECALL = 0.6
EM_RULES: tuple[tuple[str, ...], ...] = (("given_name", "family_name"), ("dob",))
MAX_PAIRS_U = 1e7
SEED = 42
FLOOR = 0.01
CLUSTER_AT = 0.95


def _columns_of(expressions: tuple[str, ...]) -> set[str]:
    """The input columns some block_on expressions use ("substr(postcode,1,3)" -> postcode)."""
    return {c for c in (*COLUMNS, CONCAT) for e in expressions if re.search(rf"\b{c}\b", e)}


def tutorial_frame(records_path: str | Path) -> pd.DataFrame:
    """The records as the tutorial's linker sees them: unique_id, the tutorial's columns (our names),
    and the concatenated full name; strings, None for empty. Columns absent from the file are all None."""
    raw = pd.read_csv(records_path, dtype=str, keep_default_na=False)
    frame = pd.DataFrame({"unique_id": raw["record_id"].str.strip()})
    for col in COLUMNS:
        values = raw[col].str.strip() if col in raw.columns else pd.Series("", index=raw.index)
        frame[col] = values.where(values != "", None)
    # first_name || ' ' || surname, as the tutorial derives it in DuckDB: null when either is null
    both = frame["given_name"].notna() & frame["family_name"].notna()
    frame[CONCAT] = (frame["given_name"].fillna("") + " " + frame["family_name"].fillna("")).where(both, None)
    return frame


def present_columns(frame: pd.DataFrame) -> set[str]:
    return {c for c in (*COLUMNS, CONCAT) if c in frame.columns and frame[c].notna().any()}


def _comparisons(present: set[str]) -> tuple[list, list[str]]:
    library = [
        ({"given_name", "family_name", CONCAT}, "given_name_family_name",
         lambda: cl.ForenameSurnameComparison("given_name", "family_name", forename_surname_concat_col_name=CONCAT)),
        ({"dob"}, "dob", lambda: cl.DateOfBirthComparison("dob", input_is_string=True)),
        ({"postcode"}, "postcode", lambda: cl.PostcodeComparison("postcode")),
        ({"city"}, "city", lambda: cl.ExactMatch("city").configure(term_frequency_adjustments=True)),
        ({"email"}, "email", lambda: cl.EmailComparison("email")),
    ]
    kept = [make() for needs, _, make in library if needs <= present]
    dropped = [name for needs, name, _ in library if not needs <= present]
    return kept, dropped


def _rules(candidates: tuple[tuple[str, ...], ...], present: set[str]) -> tuple[list, list[str]]:
    kept = [block_on(*cols) for cols in candidates if _columns_of(cols) <= present]
    dropped = [" + ".join(cols) for cols in candidates if not _columns_of(cols) <= present]
    return kept, dropped


def blocking_rule_sql(present: set[str]) -> list[str]:
    """The prediction blocking rules kept for data with `present` columns, as DuckDB SQL on l. / r."""
    rules, _ = _rules(BLOCKING_RULES, present)
    return [r.get_blocking_rule("duckdb").blocking_rule_sql for r in rules]


def run(records_path: str | Path, out_dir: str | Path, max_pairs_u: float = MAX_PAIRS_U, seed: int = SEED) -> dict:
    """Train, predict and cluster as the tutorial does; write pairs.csv, clusters.csv, summary.json; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    frame = tutorial_frame(records_path)
    present = present_columns(frame)
    comparisons, dropped_comparisons = _comparisons(present)
    if not comparisons:
        raise SystemExit(f"{records_path}: none of the tutorial's columns ({', '.join(COLUMNS)}) has a value")
    blocking, dropped_blocking = _rules(BLOCKING_RULES, present)
    deterministic, dropped_deterministic = _rules(DETERMINISTIC_RULES, present)
    em_rules = [cols for cols in EM_RULES if _columns_of(cols) <= present]
    used = sorted(present)
    seconds["read"] = time.perf_counter() - started

    settings = SettingsCreator(
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=blocking,
        comparisons=comparisons,
        retain_intermediate_calculation_columns=True,
    )
    db_api = DuckDBAPI()
    df_sdf = db_api.register(frame[["unique_id", *used]])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        linker = Linker(df_sdf, settings)
        logging.getLogger("splink").setLevel(logging.ERROR)
        prior_deterministic = None
        if deterministic:
            linker.training.estimate_probability_two_random_records_match(deterministic, recall=PRIOR_RECALL)
            prior_deterministic = linker_prior(linker)
        linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs_u, seed=seed)
        for cols in em_rules:
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on(*cols), estimate_without_term_frequencies=True)
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df_predict = linker.inference.predict(threshold_match_probability=FLOOR)
    con = db_api.duckdb_con
    n_pairs = con.execute(f"SELECT count(*) FROM {df_predict.physical_name}").fetchone()[0]
    con.execute(f"""COPY (SELECT unique_id_l AS record_id_l, unique_id_r AS record_id_r, match_probability, match_weight
                          FROM {df_predict.physical_name} ORDER BY match_probability DESC, record_id_l, record_id_r)
                    TO '{_sql_path(out / "pairs.csv")}' (HEADER, DELIMITER ',')""")
    seconds["predict"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            df_predict, threshold_match_probability=CLUSTER_AT)
    con.execute(f"""COPY (SELECT unique_id AS record_id, cluster_id AS person_id FROM {clusters.physical_name} ORDER BY record_id)
                    TO '{_sql_path(out / "clusters.csv")}' (HEADER, DELIMITER ',')""")
    n_clusters = con.execute(f"SELECT count(DISTINCT cluster_id) FROM {clusters.physical_name}").fetchone()[0]
    seconds["cluster"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started

    model = linker.misc.save_model_to_json()
    summary = {
        "records": int(len(frame)),
        "prior_from_deterministic_rules": prior_deterministic,
        "prior": model["probability_two_random_records_match"],
        "blocking_rules": [r["blocking_rule"] for r in model["blocking_rules_to_generate_predictions"]],
        "comparisons": [c["output_column_name"] for c in model["comparisons"]],
        "em_blocking_rules": [" + ".join(cols) for cols in em_rules],
        "dropped": {"comparisons": dropped_comparisons, "blocking_rules": dropped_blocking,
                    "deterministic_rules": dropped_deterministic},
        "max_pairs_u": max_pairs_u, "seed": seed,
        "pairs_at_or_above_floor": int(n_pairs), "floor": FLOOR,
        "cluster_threshold": CLUSTER_AT, "persons": int(n_clusters),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    (out / "model.json").write_text(json.dumps(model, indent=2) + "\n", encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _sql_path(path: Path) -> str:
    return str(path.resolve()).replace("'", "''")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.linkage.splink_tutorial",
                                     description="plain Splink 5 as its person-deduplication example does it")
    parser.add_argument("records", help="records.csv (canonical columns)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--max-pairs-u", type=float, default=MAX_PAIRS_U)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    summary = run(args.records, args.out, args.max_pairs_u, args.seed)
    print(json.dumps({k: summary[k] for k in ("records", "persons", "prior", "pairs_at_or_above_floor", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write `models/MATCHER.md` from the model file and measured figures (model-card style).

    python -m evaluation.linkage.model_card --model models/matcher.json --eval held_out.json --out models/MATCHER.md

`--eval` is the JSON of `briefing eval linkage --json` on a county the model was not trained on.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from matching.model import MatcherModel


def _weight(level: dict) -> str:
    m, u = level.get("m_probability"), level.get("u_probability")
    if level.get("is_null_level") or not m or not u:
        return "0 (null)" if level.get("is_null_level") else "n/a"
    return f"{math.log2(m / u):+.2f}"


def _comparisons_table(model: MatcherModel) -> list[str]:
    lines = ["| field | level | m | u | weight (bits) | TF |", "|---|---|---|---|---|---|"]
    for comparison in model.splink["comparisons"]:
        for level in comparison["comparison_levels"]:
            m, u = level.get("m_probability"), level.get("u_probability")
            lines.append(
                f"| {comparison['output_column_name']} | {level.get('label_for_charts', '')} | "
                f"{'' if m is None else f'{m:.4g}'} | {'' if u is None else f'{u:.4g}'} | {_weight(level)} | "
                f"{'yes' if level.get('tf_adjustment_column') else ''} |"
            )
    return lines


def _groups_table(evaluation: dict) -> list[str]:
    lines = []
    for grouping, block in evaluation.get("by_group", {}).items():
        lines += ["", f"**By {grouping}** (FNMR max/min ratio: {block['false_non_match_rate_ratio'] or 'n/a'})", "",
                  "| group | persons | false-non-match rate | false-match rate | pairwise precision |", "|---|---|---|---|---|"]
        for row in block["rows"]:
            fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
            note = "" if row["sufficient"] else " (insufficient data)"
            lines.append(f"| {row['group']}{note} | {row['persons']:,} | {fmt(row['false_non_match_rate'])} | "
                         f"{fmt(row['false_match_rate'])} | {fmt(row['pairwise_precision'])} |")
    return lines


def render(model: MatcherModel, evaluation: dict | None, provenance: str) -> str:
    t, tr = model.thresholds, model.training
    lines = [
        "# Matcher model card",
        "",
        f"Model file: `models/matcher.json` — format `briefing.matcher/1`, version `{model.version}`.",
        "",
        "## Intended use",
        "Deduplicating and resolving people across police, EMS, behavioural-health, crisis-line and voluntary-",
        "registry records so that responders see context about the right person. A false match shows a",
        "stranger's history to a responder, so thresholds favour precision. Not for: identifying people from",
        "demographic attributes (none are features), or any decision without the grade and explanation.",
        "",
        "## Training data",
        provenance,
        "",
        f"- records: {tr.get('records', 'n/a'):,}" if isinstance(tr.get("records"), int) else "- records: n/a",
        f"- standardised fields available: {', '.join(tr.get('fields', []))}",
        f"- data hash (record ids): `{tr.get('data_hash', 'n/a')}`; u sampling: {tr.get('max_pairs_u')} pairs, seed {tr.get('seed')}",
        f"- EM blocking rules: {'; '.join(f'`{r}`' for r in tr.get('em_blocking_rules', []))}",
        f"- training time: {tr.get('seconds', 'n/a')} s",
        "",
        "## Settings",
        "Splink 5 (DuckDB), `dedupe_only`. Prediction blocking rules (chosen for the data's size, with their pair counts):",
        "",
    ]
    for rule in tr.get("prediction_blocking_rules", []):
        count = "pair count not computed" if rule["pairs"] is None else f"{rule['pairs']:,} pairs"
        lines.append(f"- `{rule['rule']}` ({count})")
    dropped = tr.get("blocking_rules_dropped_for_size", [])
    if dropped:
        lines += ["", "Dropped for size: " + "; ".join(f"`{r['rule']}` ({r['pairs']:,})" for r in dropped)]
    lines += ["", f"Prior probability two random records match: {model.splink.get('probability_two_random_records_match'):.3g}", ""]
    lines += _comparisons_table(model)
    repaired = tr.get("levels_made_neutral", [])
    if repaired:
        lines += ["", "Levels training could not estimate, repaired before use (`matching.train.neutralise_unobserved_levels`:"
                  " never observed, or never among matches, gives m = u, weight 0; an m driven to almost zero is raised"
                  " to a floor, so no single field vetoes a match):", ""]
        lines += [f"- {label}" for label in repaired]
    lines += [
        "",
        "## Operating thresholds (stored machine-readably in the model file under `thresholds`)",
        f"Chosen by: {t.chosen_by}.",
        "",
        "| threshold | match probability | meaning |",
        "|---|---|---|",
        f"| link | {t.link:.4g} | batch linking joins pairs at or above this |",
        f"| review band | [{t.review_low:.4g}, {t.link:.4g}) | pairs here go to stewards |",
        f"| certain | {t.certain:.4g} | grade: precision of pairs at or above >= 0.999 (floor 0.99) |",
        f"| probable | {t.probable:.4g} | grade: precision >= 0.99 (floor 0.90) |",
        f"| possible | {t.possible:.4g} | grade: precision >= 0.90 (floor 0.50); below, a candidate is not returned |",
    ]
    at_link = t.measured.get("at_link")
    if at_link:
        lines += ["", f"On the training county at the link threshold: precision {at_link['precision']:.5f}, "
                      f"recall {at_link['recall']:.5f}, F1 {at_link['f1']:.5f}."]
    if evaluation:
        o = evaluation["overall"]
        lines += [
            "",
            "## Measured accuracy on a held-out county (not used for training or thresholds)",
            f"{o['n_records']:,} records, {o['n_persons_true']:,} true persons: pairwise precision {o['pairwise_precision']:.5f}, "
            f"recall {o['pairwise_recall']:.5f}, F1 {o['pairwise_f1']:.5f}; B-cubed F1 {o['bcubed_f1']:.5f}.",
        ]
        lines += _groups_table(evaluation)
    lines += [
        "",
        "## Caveats",
        "- Measured on synthetic data (see `evaluation/SYNTH.md`); real agency data will differ, so re-choose thresholds",
        "  from steward labels once they exist.",
        "- Group labels in evaluation are the generator's, not self-reported; small groups are marked insufficient.",
        "- Name comparisons use Census-derived name frequencies and an English-centric nickname lexicon: transliterated",
        "  names depend on fuzzy and phonetic levels only.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.linkage.model_card")
    parser.add_argument("--model", required=True)
    parser.add_argument("--eval", help="eval linkage JSON on a held-out county")
    parser.add_argument("--provenance", default="A synthetic county from `briefing synth` (see the Makefile's `model` target).")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    model = MatcherModel.load(args.model)
    evaluation = json.loads(Path(args.eval).read_text()) if args.eval else None
    Path(args.out).write_text(render(model, evaluation, args.provenance), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

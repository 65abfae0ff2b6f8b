"""`briefing eval linkage`: one dictionary of every figure, and a readable text rendering."""

from __future__ import annotations

import math

import pandas as pd

from evaluation.stats import fnmr_bootstrap
from evaluation.linkage.metrics import error_rate_ratio, group_error_rates
from matching.accuracy import linkage_metrics

GROUPINGS = ("race_ethnicity", "sex", "age_band")


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def linkage_report(clusters: pd.DataFrame, truth: pd.DataFrame, demographics: pd.DataFrame | None = None,
                   min_persons: int = 30) -> dict:
    """Pairwise and B-cubed accuracy; with demographics, error rates per group and the FNMR max/min ratio."""
    report: dict = {"overall": linkage_metrics(clusters, truth).to_dict()}
    if demographics is None:
        return report
    report["by_group"] = {}
    for grouping in GROUPINGS:
        if grouping not in demographics.columns and not (grouping == "age_band" and "birth_year" in demographics.columns):
            continue
        table = group_error_rates(clusters, truth, demographics, grouping, min_persons=min_persons)
        report["by_group"][grouping] = {
            "rows": [{k: _clean(v) for k, v in row.items()} for row in table.to_dict(orient="records")],
            "false_non_match_rate_ratio": _clean(error_rate_ratio(table, "false_non_match_rate")),
            "false_match_rate_ratio": _clean(error_rate_ratio(table, "false_match_rate")),
            "min_persons_for_a_sufficient_group": min_persons,
        }
        if grouping in demographics.columns:
            report["by_group"][grouping]["fnmr_bootstrap"] = fnmr_bootstrap(clusters, truth, demographics, grouping, min_persons)
    return report


def _pct(value) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}%"


def render_text(report: dict) -> str:
    """A plain-text summary for the terminal."""
    o = report["overall"]
    lines = [
        f"records {o['n_records']:,}  true persons {o['n_persons_true']:,}  predicted persons {o['n_clusters']:,}",
        f"pairwise  precision {o['pairwise_precision']:.5f}  recall {o['pairwise_recall']:.5f}  F1 {o['pairwise_f1']:.5f}",
        f"B-cubed   precision {o['bcubed_precision']:.5f}  recall {o['bcubed_recall']:.5f}  F1 {o['bcubed_f1']:.5f}",
    ]
    for grouping, block in report.get("by_group", {}).items():
        lines.append("")
        lines.append(f"by {grouping}:  {'group':<18} {'persons':>8} {'FNMR':>8} {'FMR':>8} {'precision':>10}")
        for row in block["rows"]:
            flag = "" if row["sufficient"] else "  (insufficient data)"
            lines.append(f"{'':>{len(grouping) + 5}}{row['group']:<18} {row['persons']:>8,} {_pct(row['false_non_match_rate'])} "
                         f"{_pct(row['false_match_rate'])} {_pct(row['pairwise_precision']):>10}{flag}")
        ratio = block["false_non_match_rate_ratio"]
        ci = (block.get("fnmr_bootstrap") or {}).get("ratio_ci95")
        ci_text = f"  (95% CI over persons {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
        lines.append(f"{'':>{len(grouping) + 5}}FNMR max/min ratio: {'n/a' if ratio is None else f'{ratio:.3f}'}{ci_text}")
    return "\n".join(lines)

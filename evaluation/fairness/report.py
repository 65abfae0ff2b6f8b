"""The fairness audit's report: one HTML page, one JSON of every figure, the model cards' disaggregated results.

`write_report(sections, out_dir, facts, cards=...)` writes

- `OUT/report.html`: self-contained (inline CSS, figures as inline SVG text, no script, no link, no
  external reference: it opens offline). It opens with the verdict table — each measure, its threshold,
  its figure with the 95 % interval, pass / fail / insufficient data — then one part per section (matcher,
  ranker) with the group tables behind every measure and the figures, then the caveats.
- `OUT/report.json`: `{"facts", "verdicts", "sections": [Section.to_dict() ...], "caveats"}`; NaN is
  written as null.
- only when asked, the "Disaggregated results" section of each model card named in `cards` (`{"matcher":
  path, "ranker": path}`; by default nothing is written outside OUT), between the markers `<!-- fairness-audit:begin -->` and `<!-- fairness-audit:end -->`: replaced
  in place when present, else inserted before the card's `## Caveats` heading (or appended). The rest of
  the card (intended use, data, metrics, caveats) is left as its generator wrote it; the section holds
  nothing that changes between two runs on the same input, so refreshing twice gives the same file.

The figures arrive as SVG text (`evaluation.fairness.plots`); `inline_svg` prefixes their ids so that
several sit in one page.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

from evaluation.measures import MIN_PERSONS, Figure, Measure, Section

BEGIN, END = "<!-- fairness-audit:begin -->", "<!-- fairness-audit:end -->"
GENERAL_CAVEATS = [
    "Synthetic data: every figure is measured on a generated county (evaluation/SYNTH.md), whose group "
    "differences are the generator's; real agency data will differ and must be audited in its own right.",
    "Group labels are the generator's (race/ethnicity drawn with surname/first-name probabilities), not "
    "self-reported; in real data such labels are missing or noisy, and imputed labels (e.g. BISG) blur differences.",
    f"Small cells: a group or intersection with fewer than {MIN_PERSONS} persons is reported as insufficient "
    "data, never as passing; intervals are percentile bootstraps over persons and are wide for small groups.",
    "A ratio passes when its point estimate lies inside the band; the interval is shown beside it and may "
    "reach outside the band for small groups (read it before acting on a pass).",
]
VERDICT_TEXT = {"pass": "pass", "fail": "fail", "insufficient": "insufficient data"}


# --------------------------------------------------------------------------- formatting


def _is_share(measure: Measure) -> bool:
    return "%" in measure.threshold


def fmt_value(value, share: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)     # 38,800 persons; the year 2026
    if isinstance(value, float):
        return f"{100 * value:.2f}%" if share else f"{value:.3f}"
    return str(value)


def fmt_figure(value, ci, share: bool = False) -> str:
    text = fmt_value(value, share)
    if ci and ci[0] is not None and ci[1] is not None and value is not None:
        text += f" [{fmt_value(ci[0], share)}, {fmt_value(ci[1], share)}]"
    return text


def verdict_rows(sections: list[Section]) -> list[dict]:
    """One row per measure, in section order: what the verdict table shows (and report.json's `verdicts`)."""
    return [{"section": s.name, "name": m.name, "title": m.title, "threshold": m.threshold, "value": m.value,
             "ci95": list(m.ci95) if m.ci95 else None, "verdict": m.verdict,
             "figure": fmt_figure(m.value, m.ci95, _is_share(m)), "note": m.note}
            for s in sections for m in s.measures]


def render_verdict_text(sections: list[Section]) -> str:
    """The verdict table as plain text (for the terminal)."""
    rows = verdict_rows(sections)
    if not rows:
        return "no measures"
    width = max(len(r["name"]) for r in rows)
    fig = max(len(r["figure"]) for r in rows)
    lines = [f"{'measure':<{width}}  {'figure [95% CI]':<{fig}}  {'verdict':<17}  threshold"]
    lines += [f"{r['name']:<{width}}  {r['figure']:<{fig}}  {VERDICT_TEXT[r['verdict']]:<17}  {r['threshold']}"
              for r in rows]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICT_TEXT}
    lines.append(f"{counts['pass']} pass, {counts['fail']} fail, {counts['insufficient']} insufficient data")
    return "\n".join(lines)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()                       # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1b1b;margin:0;background:#fff}
main{max-width:72rem;margin:0 auto;padding:1rem 1.5rem 3rem}
h1{font-size:1.7rem;margin:.5rem 0}h2{font-size:1.35rem;margin-top:2.2rem;border-bottom:2px solid #ccd}
h3{font-size:1.08rem;margin-top:1.6rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #c8c8d0;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eef0f5}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
caption{text-align:left;font-weight:600;padding:.25rem 0}
.scroll{overflow-x:auto}
.verdict{font-weight:700;white-space:nowrap}
.pass{color:#0b6b2b}.fail{color:#a4161a}.insufficient{color:#7a5b00}
tr.fail td{background:#fdf0f0}tr.insufficient td{background:#fdf9ea}
figure{margin:1rem 0;max-width:44rem}figure svg{width:100%;height:auto}
figcaption{font-size:.85rem;color:#444}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;font-size:.9rem}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
.note{font-size:.88rem;color:#333}
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _facts_html(facts: dict) -> str:
    rows = [(k, v) for k, v in facts.items() if isinstance(v, (str, int, float, bool)) or v is None]
    return "<dl class=\"facts\">" + "".join(f"<dt>{_esc(k.replace('_', ' '))}</dt><dd>{_esc(fmt_value(v))}</dd>"
                                             for k, v in rows) + "</dl>"


def _verdict_table(sections: list[Section]) -> str:
    head = "".join(f'<th scope="col">{h}</th>' for h in ("Section", "Measure", "Threshold", "Figure [95% CI]", "Verdict"))
    body = []
    for r in verdict_rows(sections):
        body.append(f'<tr class="{r["verdict"]}"><td>{_esc(r["section"])}</td>'
                    f'<th scope="row"><a href="#{_anchor(r["name"])}">{_esc(r["title"])}</a><br>'
                    f'<code>{_esc(r["name"])}</code></th>'
                    f'<td>{_esc(r["threshold"])}</td><td class="num">{_esc(r["figure"])}</td>'
                    f'<td class="verdict {r["verdict"]}">{_esc(VERDICT_TEXT[r["verdict"]])}</td></tr>')
    return (f'<div class="scroll"><table class="verdicts"><caption>Verdict table: every measure of the audit</caption>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def _group_table(measure: Measure) -> str:
    if not measure.groups:
        return ""
    share = _is_share(measure)
    keys = []
    for g in measure.groups:
        for k, v in g.extra.items():
            if k.endswith("_ci95") or k in ("reference", "judged") or isinstance(v, (list, dict, tuple)) or k in keys:
                continue
            keys.append(k)
    attrs = list(dict.fromkeys(a for g in measure.groups for a in g.group))
    head = "".join(f'<th scope="col">{_esc(h)}</th>' for h in
                   [*attrs, "persons", "value [95% CI]", *(k.replace("_", " ") for k in keys), "judged"])
    rows = []
    for g in measure.groups:
        label = " · ".join(str(g.group.get(a, "")) for a in attrs)
        ref = " (reference)" if g.extra.get("reference") else ""
        cells = [f'<th scope="row">{_esc(g.group.get(a, ""))}{ref if a == attrs[-1] else ""}</th>' if i == 0
                 else f"<td>{_esc(g.group.get(a, ''))}{ref if a == attrs[-1] else ''}</td>" for i, a in enumerate(attrs)]
        cells.append(f'<td class="num">{g.persons:,}</td><td class="num">{_esc(fmt_figure(g.value, g.ci95, share))}</td>')
        for k in keys:
            v = g.extra.get(k)
            shown = fmt_figure(v, g.extra.get(k + "_ci95")) if isinstance(v, float) else fmt_value(v)
            cells.append(f'<td class="num">{_esc(shown)}</td>')
        judged = ("yes" if g.sufficient and g.extra.get("judged") is not False else
                  "not judged: interval too wide" if g.sufficient else f"insufficient data (&lt; {MIN_PERSONS} persons)")
        cells.append(f"<td>{judged}</td>")
        rows.append(f'<tr aria-label="{_esc(label)}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table><caption>{_esc(measure.title)}: by group</caption>'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def inline_svg(figure: Figure, prefix: str) -> str:
    """A figure's SVG ready to sit beside others in one page: every id (and every reference to one) prefixed, so two
    figures never share an id; an accessible name (role img, aria-label, <title>) added when the SVG has none."""
    svg = figure.svg
    prefix = _anchor(prefix)
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{prefix}-{m.group(1)})", svg)
    svg = re.sub(r'((?:xlink:)?href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"', svg)
    head = svg[:svg.index(">") + 1] if "<svg" in svg else ""
    if head and "aria-label" not in head:
        title = _esc(figure.title)
        svg = svg.replace("<svg", f'<svg role="img" aria-label="{title}"', 1)
        svg = svg.replace(">", f"><title>{title}</title>", 1)
    return svg


def _section_html(section: Section) -> str:
    parts = [f'<section id="section-{_anchor(section.name)}" aria-labelledby="h-{_anchor(section.name)}">',
             f'<h2 id="h-{_anchor(section.name)}">{_esc(section.name.capitalize())}</h2>', _facts_html(section.facts)]
    for m in section.measures:
        ref = ", ".join(f"{k} = {v}" for k, v in (m.reference or {}).items())
        parts += [f'<h3 id="{_anchor(m.name)}">{_esc(m.title)}</h3>',
                  f'<p><span class="verdict {m.verdict}">{_esc(VERDICT_TEXT[m.verdict])}</span> — '
                  f'{_esc(fmt_figure(m.value, m.ci95, _is_share(m)))}; threshold: {_esc(m.threshold)}'
                  f'{"; reference group: " + _esc(ref) if ref else ""}.</p>',
                  f'<p class="note">{_esc(m.note)}</p>' if m.note else "", _group_table(m)]
    for f in section.figures:
        parts.append(f'<figure id="figure-{_anchor(f.name)}">{inline_svg(f, f"{section.name}-{f.name}")}'
                     f'<figcaption><strong>{_esc(f.title)}.</strong> {_esc(f.caption)}</figcaption></figure>')
    if section.caveats:
        parts.append(f"<h3>Caveats of the {_esc(section.name)} audit</h3><ul>" +
                     "".join(f"<li>{_esc(c)}</li>" for c in section.caveats) + "</ul>")
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def render_html(sections: list[Section], facts: dict) -> str:
    counts = {v: sum(m.verdict == v for s in sections for m in s.measures) for v in VERDICT_TEXT}
    caveats = GENERAL_CAVEATS + list(facts.get("caveats", []))
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Briefing fairness audit</title>", f"<style>{CSS}</style>", "</head>", "<body>", "<main>",
        "<h1>Briefing fairness audit</h1>",
        f"<p>{counts['pass']} measures pass, {counts['fail']} fail, {counts['insufficient']} have insufficient data. "
        "The verdicts are findings about the data and the models; read each with its interval and its caveats.</p>",
        '<section aria-labelledby="h-verdicts"><h2 id="h-verdicts">Verdicts</h2>', _verdict_table(sections),
        "<h3>This run</h3>", _facts_html(facts), "</section>",
        *(_section_html(s) for s in sections),
        '<section aria-labelledby="h-caveats"><h2 id="h-caveats">Caveats</h2><ul>',
        *(f"<li>{_esc(c)}</li>" for c in dict.fromkeys(caveats)), "</ul></section>",
        "</main>", "</body>", "</html>", ""])


# --------------------------------------------------------------------------- model cards


def card_section(section: Section, facts: dict) -> str:
    """The markdown "Disaggregated results" block of one section, between the markers."""
    f = section.facts
    described = ", ".join(f"{k.replace('_', ' ')} {fmt_value(v)}" for k, v in f.items()
                          if k in ("persons_with_records", "persons_evaluated", "incidents_evaluated", "records", "persons",
                                   "pairs", "rules_version", "replicates", "seed") and v is not None)
    county = Path(str(facts.get("county_dir", f.get("county_dir", "")))).name or "?"
    lines = [BEGIN, "## Disaggregated results (fairness audit)", "",
             f"Generated by `briefing eval fairness … --cards` (`make audit`) on the synthetic county `{county}` ({described}); refreshed in place "
             "between the `fairness-audit` markers, the rest of this card is not touched. 95 % intervals: bootstrap over "
             "persons. The full report (HTML, JSON of every figure) is written by the same command.", "",
             "| measure | threshold | figure [95 % CI] | verdict |", "|---|---|---|---|"]
    for m in section.measures:
        figure = fmt_figure(m.value, m.ci95, _is_share(m))
        lines.append(f"| {m.title} | {m.threshold} | {figure} | {VERDICT_TEXT[m.verdict]} |")
    tables: dict[tuple, list[Measure]] = {}
    for m in section.measures:
        if m.groups and any("ratio" in g.extra for g in m.groups):
            tables.setdefault(tuple(m.groups[0].group), []).append(m)
    for attrs, measures in tables.items():              # one table per attribute: a column per measure
        strip = lambda t: re.sub(r"\s*(by|\()\s*" + re.escape(" × ".join(attrs)) + r"\)?", "", t)  # noqa: E731
        rows = list(dict.fromkeys(tuple(g.group.items()) for m in measures for g in m.groups))
        lines += ["", f"**By {' × '.join(attrs)}** — ratio to the reference group "
                      f"({', '.join(map(str, (measures[0].reference or {}).values())) or 'n/a'}) [95 % CI]", "",
                  "| group | persons | " + " | ".join(strip(m.title) for m in measures) + " |",
                  "|---|---|" + "---|" * len(measures)]
        for row in rows:
            cells = {m.name: next((g for g in m.groups if tuple(g.group.items()) == row), None) for m in measures}
            first = next(g for g in cells.values() if g is not None)
            figures = (fmt_figure(g.extra.get("ratio"), g.extra.get("ratio_ci95")) if g else "" for g in cells.values())
            lines.append(f"| {' · '.join(str(v) for _, v in row)}{'' if first.sufficient else ' (insufficient data)'} | "
                         f"{first.persons:,} | " + " | ".join(figures) + " |")
    for m in section.measures:                          # several ratios per group (raw beside ranked): one row per ratio
        if not m.groups or any("ratio" in g.extra for g in m.groups):
            continue
        keys = list(dict.fromkeys(k for g in m.groups for k, v in g.extra.items()
                                  if k.endswith("_ratio") and isinstance(v, (int, float))))
        if keys:
            labels = [" · ".join(map(str, g.group.values())) + ("" if g.sufficient else " (insufficient data)")
                      for g in m.groups]
            ref = ", ".join(map(str, (m.reference or {}).values())) or "n/a"
            lines += ["", f"**{m.title}**: ratios to the reference ({ref})", "",
                      "| ratio | " + " | ".join(f"{label} ({g.persons:,})" for label, g in zip(labels, m.groups)) + " |",
                      "|---|" + "---|" * len(m.groups)]
            lines += [f"| {k.replace('_', ' ')} | " + " | ".join(fmt_value(g.extra.get(k)) for g in m.groups) + " |"
                      for k in keys]
    if section.caveats:
        lines += ["", "Caveats of this audit:", ""] + [f"- {c}" for c in section.caveats]
    lines.append(END)
    return "\n".join(lines)


def refresh_card(path: Path, block: str) -> bool:
    """Replace the marked block of `path` (or insert it before `## Caveats`, else append); True when the file changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        start, end = text.index(BEGIN), text.index(END) + len(END)
        new = text[:start] + block + text[end:]
    elif "\n## Caveats" in text:
        at = text.index("\n## Caveats") + 1
        new = text[:at] + block + "\n\n" + text[at:]
    else:
        new = text.rstrip("\n") + "\n\n" + block + "\n"
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def write_report(sections: list[Section], out_dir, facts: dict, cards: dict | None = None) -> dict[str, Path]:
    """Write OUT/report.html and OUT/report.json; refresh the cards named in `cards` ({section name: card path};
    None or {}: none) for the sections present. Returns the paths written or refreshed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    caveats = list(dict.fromkeys(GENERAL_CAVEATS + [c for s in sections for c in s.caveats]))
    document = {"facts": facts, "verdicts": verdict_rows(sections), "sections": [s.to_dict() for s in sections],
                "caveats": caveats}
    paths = {"json": out / "report.json", "html": out / "report.html"}
    paths["json"].write_text(json.dumps(_jsonable(document), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                             encoding="utf-8")
    paths["html"].write_text(render_html(sections, facts), encoding="utf-8")
    for section in sections:
        card = (cards or {}).get(section.name)
        if card is not None and Path(card).is_file():
            refresh_card(Path(card), card_section(section, facts))
            paths[f"card_{section.name}"] = Path(card)
    return paths

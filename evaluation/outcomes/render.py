"""The referral outcomes report as files: `write_report(report, out)` writes OUT/report.json and OUT/report.html.

report.html is self-contained, as the fairness report is (evaluation/fairness/report.py, whose stylesheet and
formatting it shares): inline CSS, charts as inline SVG text drawn with matplotlib's object API
(`evaluation.fairness.plots.svg_text`: no namespace URLs, deterministic ids), no script, no link, nothing
fetched. It holds the counts, the delays, the closure shares, the repeat-contact comparison (labelled
"descriptive, not an effect") and the groups, each table with its chart, then the caveats.
report.json is `evaluation.outcomes.report.as_json`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from evaluation.fairness.plots import bars_plot, svg_text
from evaluation.fairness.report import CSS, fmt_figure, inline_svg
from evaluation.measures import MIN_PERSONS, Figure
from evaluation.outcomes.report import KINDS, QUANTILES, Contacts, OutcomesReport, Share, as_json

LABELS = {"all": "all", "responder": "responder referrals", "rule": "rule tasks"}
COLOURS = {"all": "#444444", "responder": "#1f4e9c", "rule": "#b5541c"}
EXTRA_CSS = ".effect{border:2px solid #b5541c;padding:.5rem .8rem;background:#fff6ef;font-weight:600}"
CAVEATS = [
    "Descriptive figures of one store: no comparison group, no adjustment. Nothing here is an effect of a program.",
    "Repeat contacts: people are referred after a 911 call, often at a peak of their calls, and the call a "
    "referral came from falls in the window before, so fewer calls afterwards are expected without any program "
    "(regression to the mean). Incidents count only when a responder's briefing resolved the person, and a "
    "steward's merge moves a person's referrals but not their briefings, which stay under the former person id "
    "(counted in the facts as engaged persons without incidents).",
    "Delays count only the referrals that reached the step by the report's date; still-open referrals are left "
    "out of the quartiles (counted as not reached), which shortens the distribution of recent referrals.",
    f"Intervals: Wilson 95 % for shares; percentile 95 % from a bootstrap over persons for quartiles and means. "
    f"A group of fewer than {MIN_PERSONS} persons is shown with its counts and no rate.",
]


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _hours(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _interval(value, ci, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.{digits}f}"
    return text + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _share(s: Share | None) -> str:
    return "insufficient data" if s is None else f"{s.count} / {s.total}: " + fmt_figure(s.value, s.ci95, share=True)


def _table(caption: str, head: list[str], rows: list[list], numeric_from: int = 1) -> str:
    header = "".join(f'<th scope="col">{_esc(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f'<th scope="row">{_esc(c)}</th>' if k == 0 else
                                    f'<td{" class=num" if k >= numeric_from else ""}>{_esc(c)}</td>'
                                    for k, c in enumerate(row)) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table><caption>{_esc(caption)}</caption><thead><tr>{header}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure as MplFigure

    figure = MplFigure(figsize=(width, height))
    FigureCanvasSVG(figure)
    return figure


# --------------------------------------------------------------------------- charts


def counts_chart(report: OutcomesReport, dimension: str) -> str:
    values = sorted(report.counts["all"][dimension], key=lambda v: -report.counts["all"][dimension][v])
    series = {LABELS[k]: [report.counts[k][dimension].get(v, 0) for v in values] for k in KINDS[1:]}
    title = f"Referrals and tasks by {dimension.replace('_', ' ')}"
    return bars_plot(f"counts-{dimension}", title, values or ["(none)"], series if values else
                     {LABELS[k]: [0] for k in KINDS[1:]}, "referrals")


def delays_chart(report: OutcomesReport) -> str:
    """Per step: histograms of hours (log scale) by kind above a box plot of each kind (whiskers 5th-95th)."""
    figure = _new_figure(7.6, 4.8)
    axes = figure.subplots(2, 2, sharex="col", gridspec_kw={"height_ratios": [3, 1.4]})
    for col, (name, label) in enumerate((("acceptance", "to acceptance"), ("first_contact", "to first contact"))):
        data = {k: np.asarray(report.delays[name][k].hours) for k in KINDS[1:]}
        every = np.concatenate([d for d in data.values()] + [np.zeros(0)])
        positive = every[every > 0]
        low, high = (positive.min(), positive.max()) if len(positive) else (0.1, 10.0)
        lower = max(low, 1e-2)                                # steps taken within seconds share the first bin
        bins = np.geomspace(lower / 1.05, max(high, lower * 2) * 1.05, 30)
        hist, box = axes[0][col], axes[1][col]
        for k, values in data.items():
            if len(values):
                hist.hist(np.clip(values, bins[0], None), bins=bins, histtype="step", lw=1.6, color=COLOURS[k],
                          label=f"{LABELS[k]} (n={len(values)})")
        hist.set_xscale("log")
        hist.set_title(f"Hours {label}", fontsize=10)
        hist.set_ylabel("referrals")
        if hist.get_legend_handles_labels()[0]:
            hist.legend(fontsize=7, frameon=False)
        shown = [(k, np.clip(v, bins[0], None)) for k, v in data.items() if len(v)]
        if shown:
            box.boxplot([v for _, v in shown], orientation="horizontal", whis=(5, 95), showfliers=False, widths=0.6)
            box.set_yticks(range(1, len(shown) + 1), [LABELS[k] for k, _ in shown], fontsize=7)
        box.set_xlabel("hours (log scale)")
    figure.tight_layout()
    return svg_text(figure, "delays", title="Hours from referral to acceptance and to first contact")


def closure_chart(report: OutcomesReport) -> str:
    """Shares of closed referrals by status and by outcome, per kind, with their Wilson intervals."""
    names = [("status", s) for s in report.closure["all"].by_status] + \
            [("outcome", o) for o in report.closure["all"].by_outcome]
    figure = _new_figure(6.6, 0.32 * len(names) + 1.4)
    ax = figure.add_subplot()
    for k, kind in enumerate(KINDS[1:]):
        c = report.closure[kind]
        for y, (what, name) in enumerate(names):
            s = (c.by_status if what == "status" else c.by_outcome)[name]
            if s.value is None:
                continue
            offset = (k - 0.5) * 0.3
            ax.plot([s.ci95[0], s.ci95[1]], [y + offset] * 2, color=COLOURS[kind], lw=2)
            ax.plot([s.value], [y + offset], "o", color=COLOURS[kind], label=LABELS[kind] if y == 0 else None)
    ax.set_yticks(range(len(names)), [f"{what}: {name}" for what, name in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of closed referrals (Wilson 95 % interval)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False, loc="lower right")
    figure.tight_layout()
    return svg_text(figure, "closure", title="Closed referrals by status and outcome")


def contacts_chart(rows: list[tuple[str, Contacts]]) -> str:
    """Mean distinct 911 incidents per person in the 90 days before and after first engagement, with intervals."""
    shown = [(label, c) for label, c in rows if c.before.value is not None]
    figure = _new_figure(6.6, 0.42 * max(1, len(shown)) + 1.5)
    ax = figure.add_subplot()
    for y, (label, c) in enumerate(shown):
        for offset, (name, mean, colour, marker) in zip((-0.15, 0.15), (("before", c.before, "#8a8a8a", "s"),
                                                                        ("after", c.after, "#1f4e9c", "o"))):
            if mean.ci95:
                ax.plot(list(mean.ci95), [y + offset] * 2, color=colour, lw=2)
            ax.plot([mean.value], [y + offset], marker, color=colour, label=f"{name} (90 days)" if y == 0 else None)
    ax.set_yticks(range(len(shown)), [f"{label} (n={c.included})" for label, c in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("mean distinct 911 incidents per person (95 % interval)")
    ax.set_title("Descriptive, not an effect", fontsize=9)
    if shown:
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16 - 0.6 / (len(shown) + 3)),
                  ncol=2)
    figure.tight_layout()
    return svg_text(figure, "contacts", title="Repeat 911 contacts before and after first engagement")


# --------------------------------------------------------------------------- page


def _figure_html(name: str, title: str, svg: str, caption: str) -> str:
    return (f'<figure id="figure-{_esc(name)}">{inline_svg(Figure(name, title, svg, caption), name)}'
            f"<figcaption><strong>{_esc(title)}.</strong> {_esc(caption)}</figcaption></figure>")


def _counts_html(report: OutcomesReport) -> list[str]:
    parts = ['<h2 id="h-counts">Referrals and tasks</h2>',
             f"<p>{report.facts['referrals']} referrals by responders and {report.facts['tasks']} tasks opened by "
             f"follow-up rules, about {report.facts['persons_referred']} persons.</p>",
             _table("Opened by", ["opened by", "count"], [[k, v] for k, v in report.opened_by.items()])]
    for dimension in ("reason", "program", "call_type"):
        label = dimension.replace("_", " ")
        rows = [[v, report.counts["responder"][dimension].get(v, 0), report.counts["rule"][dimension].get(v, 0), n]
                for v, n in report.counts["all"][dimension].items()]
        parts += [_table(f"By {label}", [label, LABELS["responder"], LABELS["rule"], "all"], rows),
                  _figure_html(f"counts-{dimension}", f"Referrals and tasks by {label}", counts_chart(report, dimension),
                               "Counts of every referral and task in the store as of the report's date.")]
    return parts


def _delays_html(report: OutcomesReport) -> list[str]:
    rows = []
    for name, label in (("acceptance", "to acceptance"), ("first_contact", "to first contact")):
        for kind in KINDS:
            d = report.delays[name][kind]
            rows.append([f"{label}: {LABELS[kind]}", d.reached, d.not_reached,
                         *(_interval(d.quantiles[q], d.ci95[q], 1) for q in QUANTILES)])
    return ['<h2 id="h-delays">Time to acceptance and to first contact</h2>',
            "<p>Hours from a referral's creation to its first <code>accept</code> event, and to its first "
            "<code>contact_attempted</code> or <code>engaged</code> event, over the referrals that reached the step.</p>",
            _table("Hours to the step: quartiles [95 % interval]",
                   ["step", "reached", "not reached", "first quartile", "median", "third quartile"], rows),
            _figure_html("delays", "Hours to acceptance and to first contact", delays_chart(report),
                         "Histograms (log scale) of the hours to each step by kind; below, box plots (box: quartiles, "
                         "whiskers: 5th to 95th percentile).")]


def _closure_html(report: OutcomesReport) -> list[str]:
    parts = ['<h2 id="h-closure">Engagement and closure</h2>',
             _table("Referrals that reached engagement (an engaged event, or completed as engaged in services), "
                    "of all referrals [Wilson 95 % interval]", ["kind", "engaged", "open", "closed"],
                    [[LABELS[k], _share(report.closure[k].engaged), report.closure[k].open, report.closure[k].closed]
                     for k in KINDS])]
    for what in ("by_status", "by_outcome"):
        keys = list(getattr(report.closure["all"], what))
        rows = [[key, *(_share(getattr(report.closure[k], what)[key]) for k in KINDS)] for key in keys]
        parts.append(_table(f"Closed referrals {what.replace('_', ' ')}: count / closed, share [Wilson 95 % interval]",
                            [what.removeprefix("by_"), *(LABELS[k] for k in KINDS)], rows))
    parts.append(_figure_html("closure", "Closed referrals by status and outcome", closure_chart(report),
                              "Share of the closed referrals of each kind, with Wilson 95 % intervals. A closed "
                              "referral that was not completed (rejected, cancelled, failed) has no outcome."))
    return parts


def _contacts_rows(contacts: Contacts) -> list[list]:
    c = contacts
    return [["engaged persons", c.engaged_persons], ["compared (both windows inside the data)", c.included],
            ["left out: a window cut by the data's edges", c.excluded], ["  of which the window before is cut", c.cut_at_start],
            ["  of which the window after is cut", c.cut_at_end], ["incidents in the 90 days before (total)", c.before_total],
            ["incidents in the 90 days after (total)", c.after_total],
            ["mean per person before [95 % interval]", _interval(c.before.value, c.before.ci95)],
            ["mean per person after [95 % interval]", _interval(c.after.value, c.after.ci95)],
            ["mean change per person, after - before [95 % interval]", _interval(c.change.value, c.change.ci95)]]


def _contacts_html(report: OutcomesReport) -> list[str]:
    c = report.contacts
    rows = [("all persons compared", c)] + [(f"{g.attribute}: {g.group}", g.contacts) for g in report.groups or []]
    return ['<h2 id="h-contacts">Repeat 911 contacts around first engagement</h2>',
            '<p class="effect">Descriptive, not an effect: these figures compare a person\'s calls before and after '
            "they first engaged with a program. They have no comparison group and are expected to fall without any "
            "program (people are referred at a peak of their calls).</p>",
            f"<p>Distinct incidents per person (briefings resolved to them) in the {report.facts['window_days']} days "
            f"before their first engagement and the {report.facts['window_days']} days from it, for persons whose two "
            "windows lie between the first "
            f"incident in the data ({_esc(report.facts['data_start'])}) and the report's date ({_esc(report.as_of)}). "
            f"{c.excluded} of {c.engaged_persons} engaged persons are left out for a window cut by those edges.</p>",
            _table("Repeat 911 contacts (descriptive, not an effect)", ["", "value"], _contacts_rows(c)),
            _figure_html("contacts", "Repeat 911 contacts before and after first engagement", contacts_chart(rows),
                         f"Means per person with 95 % intervals; groups of fewer than {MIN_PERSONS} persons compared "
                         "are not drawn. Descriptive, not an effect.")]


def _groups_html(report: OutcomesReport) -> list[str]:
    parts = ['<h2 id="h-groups">By group</h2>']
    if report.groups is None:
        return parts + ["<p>No demographics were given (<code>--county DIR</code>, a county from <code>briefing "
                        "synth</code> with truth.csv and demographics.csv): nothing is disaggregated by group.</p>"]
    parts.append(f"<p>Groups from {_esc(report.facts['demographics'])}, as in the fairness audit. Groups of fewer than "
                 f"{MIN_PERSONS} persons show counts only (insufficient data).</p>")
    for attribute in dict.fromkeys(g.attribute for g in report.groups):
        rows = [[g.group, g.persons_referred, g.referrals, g.persons_engaged,
                 fmt_figure(g.engaged_share.value, g.engaged_share.ci95, share=True) if g.engaged_share
                 else "insufficient data",
                 g.contacts.included, g.contacts.excluded, g.contacts.before_total, g.contacts.after_total,
                 _interval(g.contacts.before.value, g.contacts.before.ci95) if g.contacts.before.value is not None
                 else "insufficient data", _interval(g.contacts.after.value, g.contacts.after.ci95)
                 if g.contacts.after.value is not None else "insufficient data"]
                for g in report.groups if g.attribute == attribute]
        parts.append(_table(f"By {attribute.replace('_', ' ')}",
                            [attribute.replace("_", " "), "persons referred", "referrals", "persons engaged",
                             "engaged share of persons referred", "persons compared", "left out", "incidents before",
                             "incidents after", "mean before", "mean after"], rows))
    return parts


def render_html(report: OutcomesReport) -> str:
    facts = "".join(f"<dt>{_esc(k.replace('_', ' '))}</dt><dd>{_esc(v)}</dd>" for k, v in report.facts.items())
    return "\n".join([
        "<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Briefing referral outcomes</title>", f"<style>{CSS}{EXTRA_CSS}</style>", "</head>", "<body>", "<main>",
        "<h1>Briefing referral outcomes</h1>",
        f"<p>What became of the referrals and follow-up tasks in the store, as of {_esc(report.as_of)}. "
        "Descriptive figures: none of them is an effect of a program.</p>",
        f'<dl class="facts">{facts}</dl>', *_counts_html(report), *_delays_html(report), *_closure_html(report),
        *_contacts_html(report), *_groups_html(report),
        '<h2 id="h-caveats">Caveats</h2><ul>', *(f"<li>{_esc(c)}</li>" for c in CAVEATS), "</ul>",
        "</main>", "</body>", "</html>", ""])


def write_report(report: OutcomesReport, out_dir) -> dict[str, Path]:
    """Write OUT/report.json and OUT/report.html; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "html": out / "report.html"}
    document = {**as_json(report), "caveats": CAVEATS}
    paths["json"].write_text(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths

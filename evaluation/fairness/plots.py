"""The fairness audit's plots, as inline SVG text for the self-contained report.

`svg_text` turns a matplotlib figure into SVG text that sits inside an HTML page (deterministic ids,
no prologue, metadata or namespace URLs); every figure of the audit goes through it. `ratio_plot`,
`paired_plot` and `bars_plot` draw with matplotlib's object API on the Agg/SVG canvas (no pyplot
state) and return SVG text with a `<title>` for screen readers.
"""

from __future__ import annotations

import html
import io
import math
import re

from evaluation.measures import RATIO_BAND


def svg_text(figure, salt: str, fonttype: str = "none", title: str | None = None, plain_href: bool = False) -> str:
    """A matplotlib `Figure` as inline SVG text: deterministic ids (salted by `salt`), no XML prologue, metadata or
    namespace URLs (HTML5 inline). `fonttype`: "none" keeps text as text, "path" draws glyphs as paths; `title`: an
    accessible name (role img, aria-label and a `<title>`); `plain_href`: `xlink:href` written as `href`."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": fonttype, "svg.hashsalt": salt}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text)
    if plain_href:
        text = text.replace("xlink:href=", "href=")
    if title is None:
        return text
    safe = html.escape(title)
    return text.replace("<svg", f'<svg role="img" aria-label="{safe}"', 1).replace(
        ">", f"><title>{safe}</title>", 1)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasSVG(figure)
    return figure


def _log_ratio_axis(ax) -> None:
    """A log x axis labelled with plain ratios (0.5, 0.8, 1, 1.25, 2, ...)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ticks = [t for t in (0.1, 0.2, 0.33, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0) if low <= t <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks or [1.0]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def ratio_plot(name: str, title: str, rows: list[tuple[str, float | None, tuple | None, bool]],
               band: tuple[float, float] = RATIO_BAND, xlabel: str = "ratio to the reference group") -> str:
    """Dot-and-interval plot of ratios (label, ratio, (low, high), sufficient) with the pass band shaded."""
    figure = _figure(6.4, 0.45 * len(rows) + 1.2)
    ax = figure.add_subplot()
    ax.axvspan(band[0], band[1], color="#e3f1e3", zorder=0, label=f"pass band {band[0]:.2f}–{band[1]:.2f}")
    ax.axvline(1.0, color="#777777", lw=0.8)
    for y, (label, ratio, ci, sufficient) in enumerate(rows):
        if ratio is None or not math.isfinite(ratio):
            continue
        colour = "#1f4e9c" if sufficient else "#999999"
        if ci and ci[0] is not None and ci[1] is not None:
            ax.plot([ci[0], ci[1]], [y, y], color=colour, lw=2)
        ax.plot([ratio], [y], "o", color=colour, mfc=colour if sufficient else "white")
    ax.set_yticks(range(len(rows)), [r[0] + ("" if r[3] else " (insufficient)") for r in rows])
    ax.invert_yaxis()
    _log_ratio_axis(ax)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    figure.tight_layout()
    return svg_text(figure, name, title=title)


def paired_plot(name: str, title: str, rows: list[tuple], labels=("raw data", "ranked")) -> str:
    """Several ratios per group side by side (e.g. raw disparity, content-blind, ranked exposure), against 1.0:
    `rows` are (label, value for each of `labels` ...)."""
    figure = _figure(6.4, 0.5 * len(rows) + 1.3)
    ax = figure.add_subplot()
    ax.axvline(1.0, color="#777777", lw=0.8)
    styles = ((("#b5541c", "s"), ("#8a8a8a", "D"), ("#1f4e9c", "o"))[-len(labels):] if len(labels) <= 3
              else [(f"C{k}", "o") for k in range(len(labels))])
    for k, (label, (colour, marker)) in enumerate(zip(labels, styles)):
        offset = (k - (len(labels) - 1) / 2) * 0.22
        points = [(r[1 + k], y + offset) for y, r in enumerate(rows) if r[1 + k] is not None and r[1 + k] > 0]
        ax.plot([x for x, _ in points], [y for _, y in points], marker, color=colour, label=label, ls="none")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    _log_ratio_axis(ax)
    ax.set_xlabel("ratio to the reference group")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    figure.tight_layout()
    return svg_text(figure, name, title=title)


def bars_plot(name: str, title: str, categories: list[str], series: dict[str, list[float]], xlabel: str) -> str:
    """Horizontal grouped bars: one bar per series for every category."""
    figure = _figure(6.4, 0.35 * len(categories) * max(1, len(series)) / 1.6 + 1.3)
    ax = figure.add_subplot()
    height = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series.items()):
        ax.barh([y + k * height for y in range(len(categories))], values, height=height, label=label)
    ax.set_yticks([y + 0.4 - height / 2 for y in range(len(categories))], categories)
    ax.invert_yaxis()
    ax.axvline(0.0, color="#777777", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    return svg_text(figure, name, title=title)

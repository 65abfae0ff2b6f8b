"""The fairness report: a self-contained HTML page opening with the verdict table, a JSON of every figure, model
cards refreshed in place (idempotently), `briefing eval fairness` end to end, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from evaluation.measures import Figure, GroupFigure, Measure, Section
from evaluation.fairness.plots import ratio_plot
from evaluation.fairness.report import BEGIN, END, card_section, refresh_card, render_verdict_text, write_report
from evaluation.synth.county import generate_county
from tests.cli_run import run_briefing

MODELS = Path(__file__).resolve().parents[1] / "models"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _section(name: str, worst: float = 1.1) -> Section:
    race = "race_ethnicity"
    groups = [GroupFigure({race: "white"}, 900, 0.02, (0.018, 0.022), {"ratio": 1.0, "ratio_ci95": [1, 1], "reference": True}),
              GroupFigure({race: "black"}, 300, 0.022, (0.02, 0.025), {"ratio": worst, "ratio_ci95": [0.9, 1.3],
                                                                        "reference": False}),
              GroupFigure({race: "native"}, 12, 0.05, None, {"ratio": float("nan"), "ratio_ci95": None, "reference": False})]
    band = "ratio to the largest group within 0.80–1.25"
    rows = [(g.group["race_ethnicity"], g.extra["ratio"], g.extra["ratio_ci95"], g.sufficient) for g in groups]
    return Section(name, measures=[
        Measure(f"{name}.rate.ratio.race_ethnicity", f"{name} error rate by race/ethnicity", band, worst, (0.9, 1.3),
                "pass" if worst <= 1.25 else "fail", groups, {race: "white"}, "Not judged: native (12)."),
        Measure(f"{name}.invariance", "Invariance", "100% of rankings identical", 1.0, None, "pass"),
        Measure(f"{name}.intersection", "Intersections", band, None, None, "insufficient"),
    ], figures=[Figure(f"{name}_ratios", f"{name} ratios", ratio_plot(f"{name}_ratios", f"{name} ratios", rows),
                       "A caption.")],
        facts={"county_dir": "/tmp/county", "persons_evaluated": 1212, "replicates": 100, "seed": 0},
        caveats=[f"{name}: a caveat of its own."])


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]


def _parse(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    return parser


def _assert_self_contained(text: str) -> _Tags:
    parsed = _parse(text)
    assert "http://" not in text and "https://" not in text                    # not even a namespace URL or a plain link
    assert not {"script", "link", "img", "iframe", "object", "embed", "base"} & set(parsed.tags)
    assert "@import" not in text
    assert all(ref.startswith("#") for ref in re.findall(r"url\(\s*['\"]?([^)'\"]*)", text))   # SVG clip paths in the page
    for tag, key, value in parsed.attrs:
        if key in ("src", "href", "xlink:href", "action", "srcset"):
            assert value.startswith("#"), (tag, key, value)                      # in-page anchors and SVG references only
    return parsed


# --------------------------------------------------------------------------- HTML and JSON


def test_html_is_self_contained_and_opens_with_the_verdict_table(tmp_path):
    sections = [_section("matcher", 1.4), _section("ranker")]
    paths = write_report(sections, tmp_path, {"county_dir": "/tmp/county", "replicates": 100}, cards={})
    text = paths["html"].read_text(encoding="utf-8")
    parsed = _assert_self_contained(text)
    assert text.startswith("<!doctype html>") and '<html lang="en">' in text and "<title>" in text
    verdicts = text.index('<table class="verdicts">')
    assert verdicts < text.index('id="section-matcher"') < text.index('id="section-ranker"') < text.index('id="h-caveats"')
    table = text[verdicts:text.index("</table>", verdicts)]
    for header in ("Measure", "Threshold", "Figure [95% CI]", "Verdict"):
        assert f'<th scope="col">{header}</th>' in table
    assert table.count("<tr class=") == 6
    assert 'class="verdict fail">fail<' in table and 'class="verdict pass">pass<' in table and "insufficient data" in table
    assert "1.400 [0.900, 1.300]" in table and "100.00%" in table
    assert "ratio to the largest group within 0.80–1.25" in table
    assert parsed.tags.count("svg") == 2 and parsed.tags.count("figure") == 2 and parsed.tags.count("figcaption") == 2
    assert ("svg", "role", "img") in parsed.attrs and text.count("<title>") >= 3
    assert ("svg", "aria-label", "matcher ratios") in parsed.attrs
    assert {"h1", "h2", "h3", "caption"} <= set(parsed.tags)
    assert "insufficient data (&lt; 30 persons)" in text                        # the 12-person group
    for caveat in ("Synthetic data", "Group labels", "Small cells", "matcher: a caveat of its own."):
        assert caveat in text


def test_json_has_every_figure_and_no_nan(tmp_path):
    sections = [_section("matcher"), _section("ranker")]
    write_report(sections, tmp_path, {"county_dir": "/tmp/county"}, cards={})
    raw = (tmp_path / "report.json").read_text(encoding="utf-8")
    assert "NaN" not in raw
    report = json.loads(raw)
    assert [v["name"] for v in report["verdicts"]] == [m.name for s in sections for m in s.measures]
    assert report["sections"][0]["measures"][0]["groups"][2]["extra"]["ratio"] is None    # NaN written as null
    figure = report["sections"][1]["figures"][0]
    assert figure == {"name": "ranker_ratios", "title": "ranker ratios", "caption": "A caption."}              # no SVG
    assert report["facts"]["county_dir"] == "/tmp/county" and len(report["caveats"]) >= 5
    assert "pass" in render_verdict_text(sections) and "insufficient data" in render_verdict_text(sections)


# --------------------------------------------------------------------------- model cards


def _outside(text: str) -> str:
    """The card without its generated block (and the blank line the insertion added)."""
    if BEGIN not in text:
        return text
    return text[:text.index(BEGIN)] + text[text.index(END) + len(END):].removeprefix("\n\n")


def test_model_cards_refreshed_in_place_and_idempotent(tmp_path):
    cards = {}
    for name, file in (("matcher", "MATCHER.md"), ("ranker", "RANKER.md")):
        shutil.copy(MODELS / file, tmp_path / file)
        cards[name] = tmp_path / file
    originals = {n: _outside(p.read_text(encoding="utf-8")) for n, p in cards.items()}
    write_report([_section("matcher"), _section("ranker")], tmp_path / "out", {"county_dir": "/tmp/county"}, cards=cards)
    first = {n: p.read_text(encoding="utf-8") for n, p in cards.items()}
    for name, text in first.items():
        assert text.count(BEGIN) == 1 and text.count(END) == 1
        assert _outside(text) == originals[name]                                 # the rest of the card untouched
        block = text[text.index(BEGIN):text.index(END)]
        assert "## Disaggregated results" in block and f"{name} error rate by race/ethnicity" in block
        assert text.index(END) < text.index("## Caveats")                        # model-card order: results, then caveats
    write_report([_section("matcher"), _section("ranker")], tmp_path / "out", {"county_dir": "/tmp/county"}, cards=cards)
    assert {n: p.read_text(encoding="utf-8") for n, p in cards.items()} == first  # running twice: the same file
    write_report([_section("ranker", 1.5)], tmp_path / "out", {"county_dir": "/tmp/county"}, cards=cards)
    again = cards["ranker"].read_text(encoding="utf-8")
    assert again.count(BEGIN) == 1 and "1.500 [0.900, 1.300]" in again and _outside(again) == originals["ranker"]
    assert cards["matcher"].read_text(encoding="utf-8") == first["matcher"]      # a section not audited is left as it was


def test_refresh_appends_when_the_card_has_no_caveats_heading(tmp_path):
    card = tmp_path / "CARD.md"
    card.write_text("# A card\n\nSome text.\n", encoding="utf-8")
    block = card_section(_section("ranker"), {})
    assert refresh_card(card, block) and card.read_text().startswith("# A card\n\nSome text.\n\n" + BEGIN)
    assert not refresh_card(card, block)


# --------------------------------------------------------------------------- the command, on a county


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    county = tmp_path_factory.mktemp("fairness_report_county")
    generate_county(2000, 3, county, progress=False)
    out, cards = tmp_path_factory.mktemp("fairness_report_out"), tmp_path_factory.mktemp("fairness_report_cards")
    for file in ("MATCHER.md", "RANKER.md"):
        shutil.copy(MODELS / file, cards / file)
    argv = ["eval", "fairness", str(county), "--out", str(out), "--replicates", "60", "--sample", "40",
            "--cards", str(cards), "--quiet"]
    status, err = run_briefing(argv)
    assert status == 0, err
    return county, out, cards, argv


def test_eval_fairness_writes_the_report_and_refreshes_the_cards(audited):
    county, out, cards, argv = audited
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    names = [s["name"] for s in report["sections"]]
    assert names == ["matcher", "ranker"]
    ranker = next(s for s in report["sections"] if s["name"] == "ranker")
    assert len(ranker["measures"]) == 15 and len(ranker["figures"]) == 4
    text = (out / "report.html").read_text(encoding="utf-8")
    _assert_self_contained(text)
    for measure in ranker["measures"]:
        assert f'id="{re.sub(r"[^a-z0-9]+", "-", measure["name"].lower()).strip("-")}"' in text
    for name in names:
        card = (cards / f"{name.upper()}.md").read_text(encoding="utf-8")
        assert card.count(BEGIN) == 1 and card.count(END) == 1 and "## Disaggregated results" in card
        assert _outside(card) == _outside((MODELS / f"{name.upper()}.md").read_text(encoding="utf-8"))
    assert "Demographic invariance" in (cards / "RANKER.md").read_text(encoding="utf-8")
    before = (cards / "RANKER.md").read_text(encoding="utf-8")
    status, err = run_briefing(argv)
    assert status == 0, err
    assert (cards / "RANKER.md").read_text(encoding="utf-8") == before           # idempotent on the same input
    for name in names:                                                            # one block, replaced in place
        card = (cards / f"{name.upper()}.md").read_text(encoding="utf-8")
        original = (MODELS / f"{name.upper()}.md").read_text(encoding="utf-8")
        assert card.count(BEGIN) == 1 and _outside(card) == _outside(original)


def test_eval_fairness_writes_nothing_outside_out_without_cards(audited, tmp_path, monkeypatch):
    """Without --cards the model cards are left alone, even the ones at models/ of the working directory."""
    county = audited[0]
    (tmp_path / "models").mkdir()
    for file in ("MATCHER.md", "RANKER.md"):
        shutil.copy(MODELS / file, tmp_path / "models" / file)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    status, err = run_briefing(["eval", "fairness", str(county), "--out", str(out), "--replicates", "20", "--sample", "10",
                                "--matcher-model", str(MODELS / "matcher.json"), "--ranker-model",
                                str(MODELS / "ranker.json"), "--quiet"])
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
    for file in ("MATCHER.md", "RANKER.md"):
        assert (tmp_path / "models" / file).read_bytes() == (MODELS / file).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "out"]


def test_eval_fairness_bad_input_is_exit_2_naming_the_file(tmp_path, audited):
    county = audited[0]
    status, err = run_briefing(["eval", "fairness", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert status == 2 and "nowhere" in err
    partial = tmp_path / "partial"
    shutil.copytree(county, partial)
    (partial / "relevance.csv").unlink()
    status, err = run_briefing(["eval", "fairness", str(partial), "--out", str(tmp_path / "o")])
    assert status == 2 and "relevance.csv" in err and "no such file" in err
    assert not (tmp_path / "o" / "report.html").exists()


def test_report_opens_offline_in_headless_chromium_with_every_section(audited, tmp_path):
    for program in (CHROMIUM, CHROMEDRIVER):
        if not (shutil.which(program) and os.access(program, os.X_OK)):
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true: the browser test must run, but {program} is missing")
            pytest.skip(f"{program} is not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1800",
                     "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",     # every network fetch fails
                     f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get((audited[1] / "report.html").resolve().as_uri())
        assert driver.title == "Briefing fairness audit"
        headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h2")]
        assert headings[0] == "Verdicts" and "Ranker" in headings and headings[-1] == "Caveats"
        rows = driver.find_elements(By.CSS_SELECTOR, "table.verdicts tbody tr")
        assert len(rows) >= 15 and all(r.is_displayed() for r in rows)
        figures = driver.find_elements(By.CSS_SELECTOR, "figure svg")
        assert len(figures) >= 4 and all(f.size["width"] > 200 and f.size["height"] > 100 for f in figures)
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    finally:
        driver.quit()

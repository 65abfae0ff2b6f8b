"""The review page's evidence is Splink's: per field the level `predict()` gives the pair, in total the stored weight.

A pair page re-scores its pair with the resolver's native scorer (api.review.decisions.pair_detail); the pair itself was
scored by the batch link (Splink's `predict()`, matching.link). For every queued pair of a county loaded the way
the review tests load one, the page must show, per comparison, the level Splink's own `predict()` assigns (read
from its gamma columns), and a total equal to the stored pair's match weight. And the resolver, asked for the
left record, must explain the right one the same way.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from api.service.keys import create_key
from api.service.person_data import index_frames
from api.service.store import records, review_pairs
from api.web.app import create_app
from matching.model import MatcherModel
from matching.query import SUBJECT_FIELDS
from matching.resolve import Resolver
from matching.standardise import standardise
from matching.train import linker_for
from scoring.item import Role
from tests.loaded_county import loaded_county

MODEL = MatcherModel.load("models/matcher.json")


# The counties of tests/test_review.py (600 persons, seed 11) and of the pages' tests (300, seed 7: the browser
# test's screenshot, pair "JEFF BEKK" against "JFEFREY BECK").
@pytest.fixture(scope="module", params=[(600, 11), (300, 7)], ids=["review-600-11", "pages-300-7"])
def county(request, tmp_path_factory):
    persons, seed = request.param
    directory = tmp_path_factory.mktemp(f"review-levels-{persons}-{seed}")
    db, store = loaded_county(directory, persons, seed)
    key = create_key(store, "st-levels", Role.steward, "COUNTY", [])
    app = create_app(db)
    yield app.test_client(), key, store, app.extensions["briefing"]
    store.engine.dispose()


def _splink_levels(store) -> tuple[dict, list]:
    """Splink's own predict() over the stored records (the batch link's input) with the committed model.

    Returns {(record_id_l, record_id_r): row} (gamma_<field> columns and match_weight) and, per comparison,
    (field, {gamma value: level label}).
    """
    with store.engine.connect() as connection:
        frame = pd.read_sql(select(records), connection)
    std = standardise(frame)
    model = MODEL.for_population(len(std))                    # as matching.link.link_records scores the batch
    settings = {**model.splink, "retain_intermediate_calculation_columns": True, "retain_matching_columns": True}
    linker = linker_for(std, settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictions = linker.inference.predict(threshold_match_probability=model.thresholds.review_low / 2)
    table = predictions.as_pandas_dataframe()
    rows = {(r["unique_id_l"], r["unique_id_r"]): r for r in table.to_dict("records")}
    comparisons = [(c.output_column_name, {lv.comparison_vector_value: lv.label_for_charts for lv in c.comparison_levels})
                   for c in linker._settings_obj.comparisons]
    return rows, comparisons


def test_every_queued_pair_shows_splinks_levels_and_the_stored_weight(county):
    client, key, store, service = county
    queue = client.get("/v1/review/queue", query_string={"limit": 200}, headers={"Authorization": f"Bearer {key}"})
    assert queue.status_code == 200, queue.get_json()
    queued = queue.get_json()["pairs"]
    assert len(queued) > 5
    with store.engine.connect() as connection:
        stored = {r.pair_id: r for r in connection.execute(select(review_pairs))}
    splink, comparisons = _splink_levels(store)
    wrong = []
    for pair in queued:
        detail = client.get(f"/v1/review/pairs/{pair['pair_id']}", headers={"Authorization": f"Bearer {key}"}).get_json()
        assert sum(e["weight"] for e in detail["explanation"]) == pytest.approx(detail["match_weight"], abs=1e-4)
        shown = {e["field"]: e["level"] for e in detail["explanation"][1:]}
        ids = (pair["record_id_l"], pair["record_id_r"])
        row = splink.get(ids) or splink.get(ids[::-1])
        assert row is not None, f"pair {pair['pair_id']} {ids}: Splink's predict() does not score it"
        expected = {name: labels[int(row[f"gamma_{name}"])] for name, labels in comparisons}
        levels = {f: (shown.get(f), expected[f]) for f in expected if shown.get(f) != expected[f]}
        probability = stored[pair["pair_id"]].match_probability
        stored_weight = float(np.log2(probability / (1 - probability)))
        totals = {"page": detail["match_weight"], "stored": stored_weight, "splink": float(row["match_weight"])}
        if levels or abs(totals["page"] - stored_weight) > 1e-6 or abs(totals["splink"] - stored_weight) > 1e-6:
            wrong.append({"pair_id": pair["pair_id"], "records": ids, "levels (page, Splink)": levels, **totals})
    assert not wrong, f"{len(wrong)} of {len(queued)} pages differ from Splink's predict() / the stored pair: {wrong}"


def _subject(store, record_id: str) -> dict:
    """Every filled identity field of a stored record, as a subject."""
    with store.engine.connect() as connection:
        row = connection.execute(select(records).where(records.c.record_id == record_id)).mappings().one()
    return {k: row[k] for k in SUBJECT_FIELDS if row[k]}


def test_the_resolver_explains_a_queued_pair_as_its_page_does(county):
    """Asked for the left record (as a subject), the resolver explains the right record as the pair's page does.

    A resolver over the same stored records (so the same term frequencies and prior) in which every record is its
    own person, so that the right record is a candidate of its own even where the left one, an exact match, would
    hide it. The resolver drops a *disagreeing* phone or address of a query (a caller's, a scene's:
    matching.resolve), so those two comparisons are compared only where the page has them agree."""
    client, key, store, service = county
    headers = {"Authorization": f"Bearer {key}"}
    queued = client.get("/v1/review/queue", query_string={"limit": 200}, headers=headers).get_json()["pairs"]
    frame, _ = index_frames(store)
    resolver = Resolver(MODEL, max_candidates=len(frame)).fit(
        frame, pd.DataFrame({"record_id": frame["record_id"], "person_id": frame["record_id"]}))
    assert resolver.scorer_.prior_weight_ == pytest.approx(service.resolver.scorer_.prior_weight_, abs=1e-12)
    missing, wrong = [], []
    for pair in queued:
        detail = client.get(f"/v1/review/pairs/{pair['pair_id']}", headers=headers).get_json()
        page = {e["field"]: (e["level"], e["weight"]) for e in detail["explanation"][1:]}
        resolution = resolver.resolve(_subject(store, pair["record_id_l"]))
        found = next((c for c in resolution.candidates if c.record_id == pair["record_id_r"]), None)
        if found is None:
            missing.append(pair["pair_id"])
            continue
        for part in found.explanation:
            level, weight = page[part["field"]]
            if part["field"] in ("phone", "address") and weight < 0:
                continue
            if part["level"] != level or abs(part["weight"] - weight) > 1e-6:
                wrong.append((pair["pair_id"], part["field"], (level, weight), (part["level"], part["weight"])))
    assert not missing, f"the resolver does not find the right record of pairs {missing}"
    assert not wrong, f"(pair, field, page, resolver) differ: {wrong}"


@pytest.mark.parametrize("county", [(300, 7)], ids=["pages-300-7"], indirect=True)
def test_jeff_bekk_against_jfefrey_beck_is_no_nickname_but_jeffrey_would_be(county):
    """The browser test's pair: CAD "JEFF BEKK" against RMS "JFEFREY BECK" (a transposition, not "JEFFREY").

    JEFF and JFEFREY share no nickname variant, are 0.796 Jaro-Winkler apart (< 0.80) and three letters apart in
    length: "All other comparisons" (-7.11), on the page and in Splink's predict() alike (the test above). The
    "+4.68 Nickname-compatible" is what JEFF scores against JEFFREY, spelt right."""
    client, key, store, service = county
    headers = {"Authorization": f"Bearer {key}"}
    queued = client.get("/v1/review/queue", query_string={"limit": 200}, headers=headers).get_json()["pairs"]
    names = {p["pair_id"]: (_subject(store, p["record_id_l"]), _subject(store, p["record_id_r"])) for p in queued}
    pair_id = next(i for i, (left, right) in names.items() if (left["given_name"], right["given_name"]) == ("JEFF", "JFEFREY"))
    left, right = names[pair_id]
    detail = client.get(f"/v1/review/pairs/{pair_id}", headers=headers).get_json()
    given = next(e for e in detail["explanation"] if e["field"] == "given_name")
    assert (given["level"], round(given["weight"], 2)) == ("All other comparisons", -7.11)
    assert 0.50 < detail["match_probability"] < 0.52
    spelt_right = service.resolver.resolve({**left, "given_name": "JEFFREY", "family_name": right["family_name"]})
    best = spelt_right.candidates[0]
    assert best.record_id == detail["left"]["record_id"]
    given = next(e for e in best.explanation if e["field"] == "given_name")
    assert (given["level"], round(given["weight"], 2)) == ("Nickname-compatible", 4.68)

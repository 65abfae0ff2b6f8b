"""The ranker audit's invariance and proxy checks: the same incident briefed again with the subject's demographics,
postcode or address changed must rank and disclose exactly the same; and the scorecard's features checked for
demographic or address tokens. Definitions: `evaluation.fairness.ranker`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.briefing import brief
from scoring.item import Consent, Principal, Purpose, Role
from scoring.rank import rank

PRINCIPALS = tuple((Principal(name=f"audit-{role.value}", role=role, agency=agency, purposes=(purpose,)), purpose)
                   for role, agency, purpose in ((Role.dispatcher, "COUNTY_911", Purpose.EMERGENCY),
                                                 (Role.officer, "METRO_PD", Purpose.EMERGENCY),
                                                 (Role.co_responder, "COUNTY_BH", Purpose.TREATMENT),
                                                 (Role.ems, "COUNTY_EMS", Purpose.EMERGENCY)))
DEMOGRAPHIC_TOKENS = {"race", "ethnicity", "ethnic", "sex", "gender", "age", "birth", "dob", "born", "name", "given",
                      "family", "surname", "postcode", "zip", "address", "street", "city", "shelter", "location"}
SUBJECT_FIELDS = ("subject_given_name", "subject_middle_name", "subject_family_name", "subject_name_suffix", "subject_dob",
                  "subject_approx_age", "subject_sex")


def _signature(items) -> tuple:
    return tuple((line.item_id, line.score, line.presented_as, tuple(line.flags), line.corroboration,
                  tuple((t["term"], t["contribution"]) for t in line.terms), tuple(s["item_id"] for s in line.sources))
                 for line in items)


def _views(incident: dict, items, consents, rules, model) -> list[tuple]:
    """The unfiltered ranking and the briefing of each audit principal, as comparable tuples."""
    call_type, now = incident["call_type"], incident["_now"]
    out = [_signature(rank(items, call_type, "certain", now, rules, model))]
    for principal, purpose in PRINCIPALS:
        b = brief(principal, purpose, incident, "certain", items, consents, now, rules, model)
        out.append((_signature(b.items), tuple(tuple(sorted(w.items())) for w in b.withheld),
                    tuple((d["item_id"], d["reason"], d["consent_id"]) for d in b.disclosures)))
    return out


def invariance(ctx, directory: Path, records: pd.DataFrame, groups: pd.DataFrame, incident_ids, rules, model,
               sample: int, seed: int) -> dict:
    """Re-brief a seeded sample of incidents with (a) the subject's names, sex, DOB, age, race/ethnicity (and the names in
    its items' texts) taken from a subject of another race/ethnicity, (b) only the postcode changed, (c) the address set
    to a shelter plus a shelter flag; count identical views. `records` carries `person_key`."""
    rng = np.random.default_rng([seed, 99])
    ids = sorted(rng.choice(sorted(incident_ids), size=min(sample, len(incident_ids)), replace=False)) if incident_ids else []
    rows = ctx.incidents.set_index("incident_id")
    mine = records[records["person_key"].isin(set(rows.loc[ids, "person_key"]))]
    names: dict[str, set[str]] = {}
    for col in ("given_name", "middle_name", "family_name", "aliases"):
        for person, value in zip(mine["person_key"], mine[col] if col in mine else ()):
            names.setdefault(person, set()).update(t.upper() for t in re.split(r"[\s|,-]+", value) if len(t) > 2)
    address = records[records["street"] != ""] if {"street", "postcode"} <= set(records.columns) else records.iloc[:0]
    shelters = (address.assign(key=address["street"].str.upper() + "|" + address["postcode"]).groupby("key")["person_key"]
                .nunique().sort_values(ascending=False, kind="stable").head(3).index.tolist()) or ["1 SHELTER WAY|43001"]
    consents: dict[str, list[Consent]] = {}
    if (directory / "consents.csv").is_file():
        person, agency = (dict(zip(records["record_id"], records[c])) for c in ("person_key", "agency"))
        for row in pd.read_csv(directory / "consents.csv", dtype=str, keep_default_na=False).to_dict("records"):
            consent = Consent(**row, record_agency=agency.get(row["record_id"]))
            consents.setdefault(person.get(row["record_id"]), []).append(consent)
    race, sex = groups["race_ethnicity"].to_dict(), groups["sex"].to_dict()
    result = {k: {"compared": 0, "identical": 0, "incidents": len(ids), "views": 1 + len(PRINCIPALS)}
              for k in ("demographic", "postcode", "shelter")}
    renamed_texts = 0
    for n, incident_id in enumerate(ids):
        base = rows.loc[incident_id].to_dict()
        person = base.pop("person_key")
        items, own = ctx.person_items.get(person, []), consents.get(person, [])
        incident = {"incident_id": incident_id, **base, "_now": ctx.when[incident_id][1], "race_ethnicity": race.get(person),
                    "sex": sex.get(person)}
        before = _views(incident, items, own, rules, model)
        donors = [i for i in ids if race.get(rows.at[i, "person_key"]) != race.get(person)] or list(ids)
        donor = rows.loc[donors[(n * 7919) % len(donors)]].to_dict()
        swapped = {**incident, **{c: donor[c] for c in SUBJECT_FIELDS if c in donor},
                   "race_ethnicity": race.get(donor["person_key"]), "sex": sex.get(donor["person_key"])}
        own_names = sorted(names.get(person, ()), key=len, reverse=True)
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, own_names)) + r")\b", re.I) if own_names else None
        new_name = min(names.get(donor["person_key"], ()) or {"ALEX"})
        renamed = [i.model_copy(update={"text": pattern.sub(new_name, i.text)}) if pattern else i for i in items]
        renamed_texts += sum(a.text != b.text for a, b in zip(items, renamed))
        postcode = donor["location_postcode"] if donor["location_postcode"] != base["location_postcode"] else "43999"
        street, shelter_postcode = shelters[n % len(shelters)].split("|")
        variants = {"demographic": (swapped, renamed),
                    "postcode": ({**incident, "subject_postcode": postcode if base.get("subject_postcode") else "",
                                  "location_postcode": postcode}, items),
                    "shelter": ({**incident, "subject_street": street, "subject_postcode": shelter_postcode,
                                 "location_street": street, "location_postcode": shelter_postcode, "shelter": True}, items)}
        for kind, (changed, changed_items) in variants.items():
            after = _views(changed, changed_items, own, rules, model)
            result[kind]["compared"] += len(after)
            result[kind]["identical"] += sum(a == b for a, b in zip(before, after))
    result["demographic"]["item_texts_renamed"] = renamed_texts
    result["shelter_addresses"] = len(shelters)
    return result


def feature_check(model_file: Path | None, model) -> dict:
    """The scorecard's features (those its model file lists, when read from one) and any naming a demographic or
    address token."""
    features = list(getattr(model, "feature_names_", []))
    if model_file is not None and model_file.is_file():
        features = json.loads(model_file.read_text(encoding="utf-8")).get("features", features)
    offending = [f for f in features if set(re.split(r"[^a-z0-9]+", f.lower())) & DEMOGRAPHIC_TOKENS]
    return {"features": features, "n_features": len(features), "demographic_or_address_features": offending}


"""Where a clustering's false matches come from: which kinds of pairs of persons it merged.

A group's false-match rate says how often; this says why. Every person a cluster holds beside the
person with most records there (the cluster's *owner*) was falsely matched to the owner, and the
pair is classed by what the two share (family name: the most common family name of each person's
records, a generational suffix typed into it left out; birth years from the demographics):

- `generation`: one family name, born `GENERATION` or more years apart (a parent and a child, often
  namesakes: Jr and Sr);
- `same_family`: one family name, born closer (siblings, twins, spouses);
- `other`: different family names (unrelated namesakes, a shared address or phone).

Counts are of falsely matched persons, in all and by their sex, so an audit can say which pairs
make a group's rate (`caveat` writes the sentence the model card shows).
"""

from __future__ import annotations

import pandas as pd

from matching.attested import GENERATION
from matching.name import family_and_suffix, joined

KINDS = {"generation": f"one family name, born {GENERATION}+ years apart (parent and child)",
         "same_family": f"one family name, born under {GENERATION} years apart (siblings, twins, spouses)",
         "other": "different family names"}


def false_match_kinds(clusters: pd.DataFrame, truth: pd.DataFrame, records: pd.DataFrame,
                      demographics: pd.DataFrame) -> dict:
    """{kind: {"persons": n, "by_sex": {sex: n}}} for the persons `clusters` (record_id, person_id) merged into
    another's cluster, with `truth` (record_id, person_key), `records` (record_id, family_name) and
    `demographics` (person_key, sex, birth_year)."""
    frame = clusters[["record_id", "person_id"]].astype(str).merge(truth[["record_id", "person_key"]].astype(str),
                                                                   on="record_id")
    family = (records[["record_id", "family_name"]].astype(str).assign(family=lambda f: f["family_name"].map(_family))
              .merge(truth[["record_id", "person_key"]].astype(str), on="record_id").dropna(subset=["family"])
              .groupby("person_key")["family"].agg(lambda s: s.value_counts().index[0]))
    people = demographics.astype({"person_key": str}).set_index("person_key")
    years = pd.to_numeric(people["birth_year"], errors="coerce")
    sizes = frame.groupby(["person_id", "person_key"]).size().rename("n").reset_index()
    sizes = sizes.sort_values(["person_id", "n", "person_key"], ascending=[True, False, True])
    owner = sizes.drop_duplicates("person_id").set_index("person_id")["person_key"]
    merged = sizes[sizes.duplicated("person_id")]
    out = {kind: {"persons": 0, "by_sex": {}} for kind in KINDS}
    for cluster_id, person in zip(merged["person_id"], merged["person_key"]):
        other = owner[cluster_id]
        same_family = family.get(person) is not None and family.get(person) == family.get(other)
        apart = abs(years.get(person, float("nan")) - years.get(other, float("nan"))) >= GENERATION
        kind = "other" if not same_family else "generation" if apart else "same_family"
        sex = str(people["sex"].get(person, "?"))
        out[kind]["persons"] += 1
        out[kind]["by_sex"][sex] = out[kind]["by_sex"].get(sex, 0) + 1
    return out


def caveat(kinds: dict) -> str:
    """The sentence on the model card: how many falsely matched persons each kind of pair gave, by sex."""
    total = sum(k["persons"] for k in kinds.values())
    if not total:
        return "No person was merged into another person's cluster."
    parts = []
    for kind, text in KINDS.items():
        found = kinds[kind]
        by_sex = ", ".join(f"{sex} {n}" for sex, n in sorted(found["by_sex"].items()))
        parts.append(f"{text}: {found['persons']} ({found['persons'] / total:.0%}{'; ' + by_sex if by_sex else ''})")
    return (f"Where the false matches come from: of the {total} persons merged into another person's cluster, "
            + "; ".join(parts) + ".")


def _family(value: str) -> str | None:
    return joined(family_and_suffix(value)[0])

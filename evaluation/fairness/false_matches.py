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

`namesakes` classes the same persons by their given name (the most common one of their records) against their
owner's (`GIVEN`), and gives each sex's chance that two different persons of it share a given name in the county.
Where one group's names are more concentrated (in US name data men's are: JAMES, JOHN and ROBERT are each over
2 % of men), unrelated namesakes, told apart only by a date of birth, a phone or an address, are more common in
it; parents and children named alike (Jr and Sr) add to its same-name count (`namesake_caveat` writes the
sentence the model card shows).
"""

from __future__ import annotations

import pandas as pd
from rapidfuzz.distance import JaroWinkler

from matching.attested import GENERATION
from matching.name import family_and_suffix, given_variants, joined

KINDS = {"generation": f"one family name, born {GENERATION}+ years apart (parent and child)",
         "same_family": f"one family name, born under {GENERATION} years apart (siblings, twins, spouses)",
         "other": "different family names"}
ALIKE = 0.85
GIVEN = {"same": "the same as that person's", "alike": f"alike (a nickname of it, or Jaro-Winkler >= {ALIKE})",
         "different": "different", "unknown": "none on record"}


def false_match_kinds(clusters: pd.DataFrame, truth: pd.DataFrame, records: pd.DataFrame,
                      demographics: pd.DataFrame) -> dict:
    """{kind: {"persons": n, "by_sex": {sex: n}}} for the persons `clusters` (record_id, person_id) merged into
    another's cluster, with `truth` (record_id, person_key), `records` (record_id, family_name) and
    `demographics` (person_key, sex, birth_year)."""
    family = _most_common(records, truth, "family_name", _family)
    people = demographics.astype({"person_key": str}).set_index("person_key")
    years = pd.to_numeric(people["birth_year"], errors="coerce")
    out = {kind: {"persons": 0, "by_sex": {}} for kind in KINDS}
    for person, other in _merged(clusters, truth):
        same_family = family.get(person) is not None and family.get(person) == family.get(other)
        apart = abs(years.get(person, float("nan")) - years.get(other, float("nan"))) >= GENERATION
        kind = "other" if not same_family else "generation" if apart else "same_family"
        _count(out[kind], str(people["sex"].get(person, "?")))
    return out


def namesakes(clusters: pd.DataFrame, truth: pd.DataFrame, records: pd.DataFrame, demographics: pd.DataFrame) -> dict:
    """{"given_names": {relation: {"persons": n, "by_sex": {sex: n}}}, "share_a_given_name": {sex: {"persons": n,
    "chance": p}}}: the merged persons of `false_match_kinds` classed by their given name against their owner's
    (`GIVEN`), and for each sex the chance that two different persons of it, drawn at random, share a given name
    (the sum of k(k - 1) over the names' counts k, over N(N - 1) for its N persons). `records` needs given_name."""
    given = _most_common(records, truth, "given_name", joined)
    sexes = demographics.astype({"person_key": str}).set_index("person_key")["sex"].astype(str)
    out = {relation: {"persons": 0, "by_sex": {}} for relation in GIVEN}
    for person, other in _merged(clusters, truth):
        _count(out[_relation(given.get(person), given.get(other))], str(sexes.get(person, "?")))
    named = given.to_frame("given").join(sexes.rename("sex"), how="inner")
    chance = {str(sex): {"persons": int(len(group)), "chance": _same_name_chance(group["given"])}
              for sex, group in named.groupby("sex")}
    return {"given_names": out, "share_a_given_name": chance}


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


def namesake_caveat(found: dict) -> str:
    """The model card's sentence on given names (`namesakes`): what the merged persons' given names were, by sex,
    and how often two persons of each sex share one in the county."""
    given = found["given_names"]
    total = sum(g["persons"] for g in given.values())
    share = "Two different persons of one sex share a given name in this county with chance " + "; ".join(
        f"{sex} {c['chance']:.2%} ({c['persons']:,} persons)" for sex, c in sorted(found["share_a_given_name"].items()))
    if not total:
        return share + "."
    parts = []
    for relation, text in GIVEN.items():
        if given[relation]["persons"]:
            by_sex = ", ".join(f"{sex} {n}" for sex, n in sorted(given[relation]["by_sex"].items()))
            parts.append(f"{text}: {given[relation]['persons']} ({by_sex})")
    return (f"Given names of the {total} persons merged into another person's cluster: " + "; ".join(parts)
            + f". {share}: where a group's names are more concentrated, unrelated namesakes, told apart only by a date "
            "of birth, a phone or an address, are more common; parents and children named alike (Jr and Sr) add to its same-name count.")


def _merged(clusters: pd.DataFrame, truth: pd.DataFrame) -> list[tuple[str, str]]:
    """(person, owner) for every person a cluster holds beside the person with most records there."""
    frame = clusters[["record_id", "person_id"]].astype(str).merge(truth[["record_id", "person_key"]].astype(str),
                                                                   on="record_id")
    sizes = frame.groupby(["person_id", "person_key"]).size().rename("n").reset_index()
    sizes = sizes.sort_values(["person_id", "n", "person_key"], ascending=[True, False, True])
    owner = sizes.drop_duplicates("person_id").set_index("person_id")["person_key"]
    merged = sizes[sizes.duplicated("person_id")]
    return [(person, owner[cluster]) for cluster, person in zip(merged["person_id"], merged["person_key"])]


def _most_common(records: pd.DataFrame, truth: pd.DataFrame, column: str, form) -> pd.Series:
    """Each person's most common `form(value)` of `column` over their records (person_key -> value)."""
    values = (records[["record_id", column]].assign(record_id=lambda f: f["record_id"].astype(str),
                                                    value=lambda f: [form(v) if isinstance(v, str) and v else None
                                                                     for v in f[column]])
              .merge(truth[["record_id", "person_key"]].astype(str), on="record_id").dropna(subset=["value"]))
    return values.groupby("person_key")["value"].agg(lambda s: s.value_counts().index[0])


def _same_name_chance(names: pd.Series) -> float:
    """The chance that two different persons drawn from `names` (one per person) have the same one."""
    counts, n = names.value_counts(), len(names)
    return float((counts * (counts - 1)).sum() / (n * (n - 1))) if n > 1 else 0.0


def _relation(a: str | None, b: str | None) -> str:
    if a is None or b is None:
        return "unknown"
    if a == b:
        return "same"
    alike = set(given_variants(a)) & set(given_variants(b)) or JaroWinkler.similarity(a, b) >= ALIKE
    return "alike" if alike else "different"


def _count(tally: dict, sex: str) -> None:
    tally["persons"] += 1
    tally["by_sex"][sex] = tally["by_sex"].get(sex, 0) + 1


def _family(value: str) -> str | None:
    return joined(family_and_suffix(value)[0])

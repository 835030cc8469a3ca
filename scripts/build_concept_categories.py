"""Build dissect_core/lexicon/wordnet_categories.tsv.gz: a concept category for every WordNet noun.

Source: WordNet 3.0 (Princeton University), as shipped by Debian's ``wordnet-base``
package (``apt-get install wordnet-base``: /usr/share/wordnet). Its license is copied
beside the table (dissect_core/lexicon/WORDNET_LICENSE). Run from the repository root:

    python scripts/build_concept_categories.py [/usr/share/wordnet]

Each lemma gets the category of its first (most frequent) noun sense:

* colour: the sense is a kind of colour (hypernym chain reaches color.n.01);
* texture: reaches texture.n.01 or design.n.04 (patterns such as stripes, polka dots);
* material: lexicographer file noun.substance, or reaches material.n.01;
* scene: lexicographer file noun.location, or reaches room.n.01, building.n.01,
  place_of_business.n.01, geological_formation.n.01, landscape.n.01, facility.n.01,
  body_of_water.n.01 or forest.n.01;
* part: lexicographer file noun.body, or the sense is a part of something (it has a
  part holonym, WordNet's "is a part of" pointer ``#p``);
* object: lexicographer files noun.artifact, noun.object, noun.animal, noun.plant,
  noun.food and noun.person, or reaches person.n.01 or organism.n.01;
* anything else is ``other`` and not stored.

The first matching rule wins in this order.
"""
from __future__ import annotations

import gzip
import sys
from pathlib import Path

# The synsets named in the rules, as (lemma, sense number).
ROOTS = {
    "colour": [("color", 1)],
    "texture": [("texture", 1), ("design", 4)],
    "material": [("material", 1)],
    "scene": [("room", 1), ("building", 1), ("place_of_business", 1), ("geological_formation", 1),
              ("landscape", 1), ("facility", 1), ("body_of_water", 1), ("forest", 1)],
}
OBJECT_ROOTS = [("person", 1), ("organism", 1)]  # person.n.01 sits in noun.Tops
OBJECT_FILES = {"noun.artifact", "noun.object", "noun.animal", "noun.plant", "noun.food", "noun.person"}
LEXNAMES = {3: "noun.Tops", 4: "noun.act", 5: "noun.animal", 6: "noun.artifact", 7: "noun.attribute",
            8: "noun.body", 9: "noun.cognition", 10: "noun.communication", 11: "noun.event", 12: "noun.feeling",
            13: "noun.food", 14: "noun.group", 15: "noun.location", 16: "noun.motive", 17: "noun.object",
            18: "noun.person", 19: "noun.phenomenon", 20: "noun.plant", 21: "noun.possession",
            22: "noun.process", 23: "noun.quantity", 24: "noun.relation", 25: "noun.shape", 26: "noun.state",
            27: "noun.substance", 28: "noun.time"}


def read_synsets(path: Path) -> dict[str, tuple[str, list[str], bool]]:
    """offset → (lexicographer file, hypernym offsets, has a part holonym)."""
    synsets = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue  # the license header
        fields = line.split(" | ")[0].split()
        offset, lex_file = fields[0], LEXNAMES[int(fields[1])]
        n_words = int(fields[3], 16)
        at = 4 + 2 * n_words
        n_pointers = int(fields[at])
        hypernyms, part_of = [], False
        for p in range(n_pointers):
            symbol, target = fields[at + 1 + 4 * p], fields[at + 2 + 4 * p]
            if symbol in ("@", "@i"):
                hypernyms.append(target)
            elif symbol == "#p":
                part_of = True
        synsets[offset] = (lex_file, hypernyms, part_of)
    return synsets


def read_index(path: Path) -> dict[str, list[str]]:
    """lemma → its noun synset offsets, most frequent sense first."""
    index = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        lemma, n_synsets = fields[0], int(fields[2])
        index[lemma] = fields[-n_synsets:]
    return index


def main(root: Path) -> None:
    synsets = read_synsets(root / "data.noun")
    index = read_index(root / "index.noun")
    roots = {category: {index[lemma][sense - 1] for lemma, sense in senses}
             for category, senses in [*ROOTS.items(), ("object", OBJECT_ROOTS)]}

    ancestors_cache: dict[str, set[str]] = {}

    def ancestors(offset: str) -> set[str]:
        if offset not in ancestors_cache:
            found = {offset}
            for parent in synsets[offset][1]:
                found |= ancestors(parent)
            ancestors_cache[offset] = found
        return ancestors_cache[offset]

    def category(offset: str) -> str:
        lex_file, _, part_of = synsets[offset]
        above = ancestors(offset)
        if above & roots["colour"]:
            return "colour"
        if above & roots["texture"]:
            return "texture"
        if lex_file == "noun.substance" or above & roots["material"]:
            return "material"
        if lex_file == "noun.location" or above & roots["scene"]:
            return "scene"
        if lex_file == "noun.body" or part_of:
            return "part"
        if lex_file in OBJECT_FILES or above & roots["object"]:
            return "object"
        return "other"

    sys.setrecursionlimit(10000)
    rows = []
    for lemma, offsets in sorted(index.items()):
        kind = category(offsets[0])
        if kind != "other":
            rows.append(f"{lemma.replace('_', ' ')}\t{kind}\n")
    out = Path("dissect_core/lexicon/wordnet_categories.tsv.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same input gives the same bytes.
    with gzip.GzipFile(out, "wb", mtime=0) as handle:
        handle.write("".join(rows).encode("utf-8"))
    print(f"{len(rows)} lemmas of {len(index)} categorised; wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/usr/share/wordnet"))

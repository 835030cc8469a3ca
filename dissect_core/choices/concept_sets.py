"""Concept sets: the candidate labels, read from text files or built in.

Rules for a concept file (one concept per line):

* the file must be UTF-8; a leading byte-order mark is ignored;
* lines end at ``\n``, ``\r\n`` or ``\r`` only, as the reference reads them (Python's
  text mode); a form feed, NEL or U+2028 inside a line stays part of its concept,
  where ``str.splitlines`` would split;
* surrounding whitespace is stripped and blank lines are dropped *before*
  concepts are indexed (the reference indexed the unfiltered lines, which shifted
  every label after a blank line);
* duplicates are dropped, keeping the first occurrence. Duplicate columns get
  identical scores and the reference's argmax picks the first one, so labels are
  unchanged; the number dropped is recorded in ``ConceptSet.duplicates_dropped``;
* matching is exact and case-sensitive: ``Dog`` and ``dog`` are different CLIP
  inputs and both are kept.

Concepts longer than CLIP's 77-token context are an error (see
``dissect_core.engine.clip.check_context_length``), never silently truncated.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.common.registry import LazyFunction, Registry

# A line this long cannot be a concept; it means a wrong file (for example a CSV of results).
MAX_CONCEPT_CHARS = 300
ENGLISH_VOCABULARY_SIZE = 20_000
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ConceptSet:
    name: str
    concepts: tuple[str, ...]
    source: str
    duplicates_dropped: int = 0
    blank_lines_dropped: int = 0
    # Each concept's line in its file (1-based), for messages about a line; () when not read from text.
    line_numbers: tuple[int, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.concepts).encode("utf-8")).hexdigest()

    def __len__(self) -> int:
        return len(self.concepts)


def parse_concepts(data: Union[str, bytes], name: str, source: str = "upload") -> ConceptSet:
    """Parse the text of a concept list (one concept per line)."""
    if isinstance(data, bytes):
        if b"\x00" in data:
            raise InvalidInputError(
                f"{name}: this looks like a binary file, not a text list of concepts. "
                "Upload a .txt file with one concept per line."
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{name}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}). "
                "Save the list as UTF-8 and try again."
            ) from None
    else:
        text = data
    text = text.removeprefix("\ufeff")

    concepts: list[str] = []
    line_numbers: list[int] = []
    seen: set[str] = set()
    blank = duplicates = 0
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()  # the file's final line break ends a line; it does not start a blank one
    for line_number, raw in enumerate(lines, start=1):
        concept = raw.strip()
        if not concept:
            blank += 1
            continue
        if len(concept) > MAX_CONCEPT_CHARS:
            raise InvalidInputError(
                f"{name}, line {line_number}: a concept of {len(concept)} characters is too long "
                f"(at most {MAX_CONCEPT_CHARS}). A concept list has one short concept per line."
            )
        if concept in seen:
            duplicates += 1
            continue
        seen.add(concept)
        concepts.append(concept)
        line_numbers.append(line_number)
    if not concepts:
        raise InvalidInputError(f"{name}: the list contains no concepts (one concept per line expected).")
    return ConceptSet(name, tuple(concepts), source, duplicates, blank, tuple(line_numbers))


def read_concept_file(path: Union[str, Path]) -> ConceptSet:
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(
            f"Concept file {path.name}",
            str(path.resolve()),
            "Pass an existing text file with one concept per line, or a built-in set: "
            + ", ".join(CONCEPT_SETS.names())
            + ". The reference's lists (20k.txt, broden_labels_clean.txt, …) are in the "
            "CLIP-Dissect repository's data/ folder.",
        )
    return parse_concepts(path.read_bytes(), path.stem, str(path))


def _english_vocabulary() -> list[str]:
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", 2 * ENGLISH_VOCABULARY_SIZE) if w.isascii() and w.isalpha()]
    return words[:ENGLISH_VOCABULARY_SIZE]


# Built-in concept sets: each builds its list of concepts. A new one is one registration here.
CONCEPT_SETS: Registry[Callable[[], list[str]]] = Registry("concept set")
# torchvision ships the ImageNet names: resolved on first use, so this module imports no torch.
CONCEPT_SETS.add("imagenet_classes", LazyFunction("dissect_core.engine.models:imagenet_class_names"), "the 1,000 ImageNet class names shipped with torchvision")
CONCEPT_SETS.add("english_20k", _english_vocabulary,
                 "the 20,000 most frequent alphabetic English words (wordfreq)")


def builtin_concept_set(name: str) -> ConceptSet:
    build = CONCEPT_SETS.get(name).value
    return parse_concepts("\n".join(build()), name, f"builtin:{name}")


def load_concept_set(name_or_path: Union[str, Path]) -> ConceptSet:
    """A built-in set by name (:data:`CONCEPT_SETS`) or a text file."""
    if str(name_or_path) in CONCEPT_SETS:
        return builtin_concept_set(str(name_or_path))
    return read_concept_file(name_or_path)

from pathlib import Path

import pytest

from dissect_core.choices.concept_sets import (
    CONCEPT_SETS,
    load_concept_set,
    parse_concepts,
    read_concept_file,
)
from dissect_core.common.errors import InvalidInputError, MissingResourceError


def test_blank_lines_are_dropped_before_indexing():
    # The reference indexed the unfiltered lines: a blank line inside the file
    # shifted every later label by one. Here the index of "cat" must be 1.
    concepts = parse_concepts("dog\n\ncat\n   \nbird\n", "animals")
    assert concepts.concepts == ("dog", "cat", "bird")
    assert concepts.concepts.index("cat") == 1
    assert concepts.blank_lines_dropped == 2


def test_duplicates_keep_first_occurrence_and_are_counted():
    concepts = parse_concepts("shed\nbar\nshed\nDog\ndog\nbar\n", "broden-like")
    assert concepts.concepts == ("shed", "bar", "Dog", "dog")
    assert concepts.duplicates_dropped == 2


def test_windows_line_endings_whitespace_and_bom():
    concepts = parse_concepts("\ufeffred \r\n green\r\n".encode("utf-8"), "colours")
    assert concepts.concepts == ("red", "green")


def test_hash_depends_on_content_and_order():
    a = parse_concepts("a\nb\n", "x")
    assert a.sha256 == parse_concepts("a\n\nb", "y").sha256
    assert a.sha256 != parse_concepts("b\na\n", "x").sha256


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "no concepts"),
        (b"\n \n", "no concepts"),
        (b"caf\xe9\n", "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
        (("x" * 400).encode(), "too long"),
    ],
)
def test_unusable_lists_are_rejected_with_a_reason(data, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_concepts(data, "upload.txt")


def test_missing_file_names_the_builtin_alternatives(tmp_path):
    with pytest.raises(MissingResourceError) as error:
        read_concept_file(tmp_path / "20k.txt")
    assert "20k.txt" in str(error.value)
    for name in CONCEPT_SETS.names():
        assert name in str(error.value)


def test_builtin_sets_need_no_download():
    english = load_concept_set("english_20k")
    assert len(english) == 20_000
    assert all(word.isalpha() and word.isascii() for word in english.concepts)
    assert english.concepts[:3] == ("the", "to", "and")  # frequency ranked
    imagenet = load_concept_set("imagenet_classes")
    assert imagenet.concepts[0] == "tench"
    assert len(imagenet) == 1000


@pytest.mark.reference
def test_reference_lists_parse_as_documented(reference_dir: Path):
    data = reference_dir / "clip_dissect_data"
    assert len(load_concept_set(data / "20k.txt")) == 20_000
    broden = load_concept_set(data / "broden_labels_clean.txt")
    assert len(broden) == 1153 and broden.duplicates_dropped == 44
    imagenet = load_concept_set(data / "imagenet_labels.txt")
    assert imagenet.concepts[0] == "tench, Tinca tinca"

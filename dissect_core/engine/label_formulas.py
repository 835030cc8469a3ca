"""Concepts that are formulas over a labelled probe's labels (compositional explanations).

Mu & Andreas (2020, "Compositional Explanations of Neurons") describe a unit by a
logical formula over concepts, such as ``Sandal OR Sneaker OR Ankle boot``. With the
labels concept source a concept list may hold such formulas, one per line, each
evaluated per probe image from the image's labels:

* a label is written as it is named in the data set, exactly and case-sensitively,
  and may contain spaces and lower-case words: ``T-shirt or top`` is one label (its
  words are joined by single spaces);
* the operators are the upper-case words ``AND``, ``OR`` and ``NOT`` (binding from
  the tightest: NOT, AND, OR), with parentheses for grouping;
* a label that holds an operator word, a parenthesis or a double quote is written in
  double quotes (JSON string escapes): ``"Rock AND roll" OR Jazz``;
* a plain label is a formula too, so a list can mix labels and formulas.

``Shirt AND NOT T-shirt or top`` is therefore "Shirt, and not T-shirt or top". The
grammar is read by Lark; every line that does not parse or names an unknown label is
reported at once, with its line number.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Sequence, Union

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedInput

from dissect_core.choices.concept_sets import ConceptSet
from dissect_core.common.errors import InvalidInputError

if TYPE_CHECKING:
    import torch

_GRAMMAR = r"""
?start: any_of
?any_of: all_of (_OR all_of)*
?all_of: negated (_AND negated)*
?negated: _NOT negated -> none_of
        | atom
?atom: label
     | "(" any_of ")"
label: WORD+
     | ESCAPED_STRING -> quoted_label
_OR: "OR"
_AND: "AND"
_NOT: "NOT"
WORD: /[^\s()"]+/
%import common.ESCAPED_STRING
%import common.WS
%ignore WS
"""

# What the parser's terminal names stand for, in messages.
_EXPECTED = {"WORD": "a label", "ESCAPED_STRING": "a quoted label", "_OR": "OR", "_AND": "AND", "_NOT": "NOT",
             "LPAR": "(", "RPAR": ")", "$END": "the end of the line"}
# Bad lines listed in one message; the rest are counted.
MAX_LISTED = 20

# A formula as nested tuples: ("label", name), ("not", f), ("and", (f, …)), ("or", (f, …)).
Tree = tuple


@dataclass(frozen=True)
class LabelFormula:
    """One line of a concept list, parsed: ``text`` is its name as a concept."""

    text: str
    tree: Tree

    def labels(self) -> set[str]:
        """The labels the formula names."""
        found: set[str] = set()

        def walk(node: Tree) -> None:
            if node[0] == "label":
                found.add(node[1])
            elif node[0] == "not":
                walk(node[1])
            else:
                for child in node[1]:
                    walk(child)

        walk(self.tree)
        return found

    def evaluate(self, has_label: Callable[[str], "torch.Tensor"]) -> "torch.Tensor":
        """The formula per image: ``has_label(name)`` gives a label's bool vector over the images."""
        def value(node: Tree) -> "torch.Tensor":
            kind = node[0]
            if kind == "label":
                return has_label(node[1])
            if kind == "not":
                return ~value(node[1])
            parts = [value(child) for child in node[1]]
            result = parts[0].clone()
            for part in parts[1:]:
                result = (result & part) if kind == "and" else (result | part)
            return result

        return value(self.tree)


class _ToTree(Transformer):
    def label(self, words: list[Token]) -> Tree:
        return ("label", " ".join(str(word) for word in words))

    def quoted_label(self, children: list[Token]) -> Tree:
        try:
            return ("label", json.loads(str(children[0])))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"the quoted label {str(children[0])[:40]} does not read ({exc.msg})") from None

    def none_of(self, children: list[Tree]) -> Tree:
        return ("not", children[0])

    def all_of(self, children: list[Tree]) -> Tree:
        return ("and", tuple(children))

    def any_of(self, children: list[Tree]) -> Tree:
        return ("or", tuple(children))


@lru_cache(maxsize=1)
def _parser() -> Lark:
    # The basic lexer reads AND, OR and NOT as operators wherever they stand, so "AND Bag" is an
    # error rather than a label named "AND Bag" (the contextual lexer would allow that).
    return Lark(_GRAMMAR, parser="lalr", lexer="basic", transformer=_ToTree())


def parse_formula(text: str) -> LabelFormula:
    """Parse one formula; InvalidInputError saying where and what was expected when it does not parse."""
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise InvalidInputError(_syntax_message(text, exc)) from None
    return LabelFormula(text, tree)


def _syntax_message(text: str, exc: UnexpectedInput) -> str:
    column = getattr(exc, "column", None)
    token = getattr(exc, "token", None)
    expected = sorted({_EXPECTED.get(name, name) for name in (getattr(exc, "expected", None) or ())})
    if token is not None and token.type == "$END" or column in (None, -1):
        where = "the line ends too soon"
    else:
        where = f"column {column}: unexpected {text[column - 1:column - 1 + 20]!r}"
    wanted = f"; expected {' or '.join(expected)}" if expected else ""
    return f"{where}{wanted}"


def parse_formulas(concepts: Union[ConceptSet, Sequence[str]], label_names: Sequence[str]) -> list[LabelFormula]:
    """Each concept of a list as a formula over ``label_names`` (a data set's labels).

    Every line that does not parse or names a label not in ``label_names`` is reported in
    one InvalidInputError, by its line number in the list's file (its position when the list
    was not read from a file).
    """
    texts = concepts.concepts if isinstance(concepts, ConceptSet) else tuple(concepts)
    numbers = (concepts.line_numbers if isinstance(concepts, ConceptSet) and concepts.line_numbers
               else tuple(range(1, len(texts) + 1)))
    name = concepts.name if isinstance(concepts, ConceptSet) else "the concept list"
    known = set(label_names)
    formulas, problems = [], []
    for number, text in zip(numbers, texts):
        try:
            formula = parse_formula(text)
        except InvalidInputError as exc:
            problems.append(f"line {number} ({text[:60]!r}): {exc}")
            continue
        unknown = sorted(formula.labels() - known)
        if unknown:
            problems.append(f"line {number} ({text[:60]!r}): " + "; ".join(_unknown(label, label_names)
                                                                           for label in unknown))
            continue
        formulas.append(formula)
    if problems:
        listed = problems[:MAX_LISTED]
        more = f"\n  … and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        examples = ", ".join(repr(label) for label in list(label_names)[:5])
        raise InvalidInputError(
            f"{name}: {len(problems)} of {len(texts)} line(s) are not formulas over the probe's labels:\n  "
            + "\n  ".join(listed) + more
            + f"\nEach line is a label (exactly as the data set names it, e.g. {examples}) or labels joined "
            "by the upper-case operators AND, OR, NOT, with parentheses; put a label holding an operator "
            "word or a parenthesis in double quotes."
        )
    return formulas


def _unknown(label: str, label_names: Sequence[str]) -> str:
    close = difflib.get_close_matches(label, list(label_names), n=1, cutoff=0.6)
    by_case = [name for name in label_names if name.lower() == label.lower()]
    hint = f" (did you mean {(by_case or close)[0]!r}?)" if by_case or close else ""
    return f"no label {label!r}{hint}"

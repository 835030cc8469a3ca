"""Named choices, registered once.

Every kind of choice a user names — probe sets, similarity functions, pool modes,
named target models, CLIP aliases, built-in concept sets — lives in one
:class:`Registry`, next to the code that builds it. The CLI's choices and help, the
app's options and ``python -m dissect_core list`` are all read from these
registries, so adding a choice is one registration in one file.

This module imports nothing heavy; the registries themselves live in the modules that
build their choices (which import torch), and ``dissect_core.catalog`` lists them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, Mapping, TypeVar

from .errors import InvalidInputError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered choice: its name, what builds or computes it, one line of help,
    and its default parameters (shown in help and merged under a user's own)."""

    name: str
    value: T
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """An ordered table of named choices of one kind (e.g. ``"probe set"``).

    Registration order is display order. Looking up an unknown name raises an
    :class:`InvalidInputError` that lists the valid names.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, description: str, **defaults: Any) -> T:
        """Register ``value`` under ``name``; returns ``value`` unchanged."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, value, description, dict(defaults))
        return value

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise InvalidInputError(
                f"Unknown {self.kind} {name!r}: use one of {', '.join(self._entries)}."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

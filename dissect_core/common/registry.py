"""Named choices, registered once.

Every kind of choice a user names — probe sets, similarity functions, pool modes,
named target models, CLIP aliases, built-in concept sets — lives in one
:class:`Registry`. The CLI's choices and help, the app's options and
``python -m dissect_core list`` are all read from these registries, so adding a
choice is one registration in one file.

Registries are declared in modules that import nothing heavy, so the CLI's help and
``dissect list`` answer without importing torch: ``dissect_core.choices.catalog`` declares the
choices whose implementations need torch, naming each implementation by a
:class:`LazyFunction`; concept sets, concept sources and layer layouts are light and
registered beside their code.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Mapping, TypeVar

from dissect_core.common.errors import InvalidInputError

T = TypeVar("T")


@dataclass(frozen=True)
class LazyFunction:
    """A function named by where it is defined, ``"dissect_core.engine.similarity:soft_wpmi"``,
    and imported on its first call: registering it costs no import of its module."""

    path: str  # "package.module:function"

    def resolve(self) -> Callable[..., Any]:
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


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

"""Every registry of named choices in one list, for the CLI, the app and the docs.

``python -m dissect_core list`` prints :func:`listing`; the README's table of choices
is :func:`markdown` (``python -m dissect_core list --markdown``).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from .clip import CLIP_ALIASES
from .concepts import CONCEPT_SETS
from .errors import name_settings
from .models import NAMED_MODELS
from .probe_data import DECODERS, PROBE_SETS
from .recording import POOL_MODES as _POOL_MODES
from .registry import Entry, Registry
from .similarity import SIMILARITY_FUNCTIONS


def pool_modes() -> Registry:
    """The registered pool modes (every reader goes through here)."""
    return _POOL_MODES


def registries() -> list[Registry]:
    """Every registry, in the order the CLI's help and ``list`` show them."""
    return [PROBE_SETS, NAMED_MODELS, CLIP_ALIASES, CONCEPT_SETS, SIMILARITY_FUNCTIONS, pool_modes(), DECODERS]


def format_defaults(entry: Entry[Any]) -> str:
    """``key=value, …`` of an entry's defaults ('' when it has none)."""
    return ", ".join(f"{key}={value}" for key, value in entry.defaults.items())


def listing(names: Optional[Mapping[str, str]] = None) -> str:
    """Plain text: one block per registry, one line per choice (name, description, defaults);
    settings in descriptions are said as ``names`` says them (see errors.name_settings)."""
    blocks = []
    for registry in registries():
        width = max(len(entry.name) for entry in registry)
        lines = [f"{registry.kind}s:"]
        for entry in registry:
            defaults = format_defaults(entry)
            text = name_settings(entry.description, names or {})
            lines.append(f"  {entry.name:<{width}}  {text}" + (f" [{defaults}]" if defaults else ""))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def markdown(names: Optional[Mapping[str, str]] = None) -> str:
    """The same as a Markdown table (kind, name, description, defaults)."""
    rows = ["| kind | name | description | defaults |", "|---|---|---|---|"]
    for registry in registries():
        for entry in registry:
            defaults = format_defaults(entry)
            text = name_settings(entry.description, names or {})
            rows.append(f"| {registry.kind} | `{entry.name}` | {text} | "
                        + (f"`{defaults}`" if defaults else "") + " |")
    return "\n".join(rows)

"""Errors raised for problems a user can fix.

Every message says what was wrong and what to do about it; the CLI and the app
show it without a traceback. Messages speak of the library: a setting is named by
its :class:`~dissect_core.choices.config.DescribeConfig` field in backquotes
(```pool_mode```), and :func:`in_words` lets the CLI say it as a flag and the app as
a widget's label. ``setting`` names the field an error is about, where known (see
:func:`about`).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Mapping, Optional


class DissectError(Exception):
    """A problem with the user's input or environment, with a fix in the message."""

    setting: Optional[str] = None  # the DescribeConfig field the problem is about


class InvalidInputError(DissectError, ValueError):
    """A file, name or parameter given by the user cannot be used."""


class NewerFormatError(InvalidInputError):
    """A file written in a newer format than this dissect reads (a run manifest, a bundle):
    the message says to upgrade dissect; the file itself is fine."""


class MissingResourceError(DissectError, FileNotFoundError):
    """A weight file or dataset is not on disk and cannot be downloaded.

    The message names the file, where it was looked for and how to provide it by hand.
    """

    def __init__(self, what: str, looked_in: str, how_to_fix: str):
        self.what = what
        self.looked_in = looked_in
        self.how_to_fix = how_to_fix
        super().__init__(f"{what} is missing (looked in {looked_in}). {how_to_fix}")


@contextmanager
def about(setting: str) -> Iterator[None]:
    """Mark a DissectError raised inside as being about the field ``setting``; its
    message then starts with the field's name unless it names it already."""
    try:
        yield
    except DissectError as error:
        if error.setting is None:
            error.setting = setting
            if f"`{setting}`" not in str(error) and len(error.args) == 1:
                error.args = (f"`{setting}`: {error.args[0]}",)
        raise


_SETTING = re.compile(r"`(\w+)`")


def name_settings(text: str, names: Mapping[str, str]) -> str:
    """``text`` with each backquoted setting (```pool_mode```) said as ``names`` says it."""
    return _SETTING.sub(lambda match: names.get(match.group(1), match.group(0)), text)


def in_words(error: DissectError, names: Mapping[str, str]) -> str:
    """The error's message with settings said as ``names`` says them (flags, labels)."""
    return name_settings(str(error), names)

"""Errors raised for problems a user can fix.

Every message says what was wrong and what to do about it; the CLI and the app
show ``str(error)`` as is, without a traceback.
"""
from __future__ import annotations


class DissectError(Exception):
    """A problem with the user's input or environment, with a fix in the message."""


class InvalidInputError(DissectError, ValueError):
    """A file, name or parameter given by the user cannot be used."""


class MissingResourceError(DissectError, FileNotFoundError):
    """A weight file or dataset is not on disk and cannot be downloaded.

    The message names the file, where it was looked for and how to provide it by hand.
    """

    def __init__(self, what: str, looked_in: str, how_to_fix: str):
        self.what = what
        self.looked_in = looked_in
        self.how_to_fix = how_to_fix
        super().__init__(f"{what} is missing (looked in {looked_in}). {how_to_fix}")

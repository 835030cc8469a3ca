"""Progress reporting without printing: long stages call a callback.

A callback receives ``(stage, done, total)``: a short stage name such as
``"activations resnet18"``, the number of items finished and the number expected.
The CLI turns these calls into tqdm bars and the app into ``st.progress`` bars.

A problem that was worked around (a damaged cache entry that is recomputed, files
skipped while listing a probe folder) arrives as one call whose stage starts with
``WARNING_STAGE``, with ``done == total == 1``.
"""
from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Callable[[str, int, int], None]
WARNING_STAGE = "warning: "


def report(progress: Optional[ProgressFn], stage: str, done: int, total: int) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(stage, done, total)


def report_warning(progress: Optional[ProgressFn], message: str) -> None:
    """Pass a warning to ``progress`` as a finished stage named ``WARNING_STAGE + message``."""
    report(progress, WARNING_STAGE + message, 1, 1)


class TqdmProgress:
    """A progress callback that draws one tqdm bar per stage (used by the CLI)."""

    def __init__(self, **tqdm_kwargs):
        self._bars: dict = {}
        self._kwargs = tqdm_kwargs

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if stage.startswith(WARNING_STAGE):
            tqdm.write(stage, file=self._kwargs.get("file"))
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=stage, **self._kwargs)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

"""Progress reporting without printing: long stages call a callback.

A callback receives ``(stage, done, total)``: a short stage name such as
``"activations resnet18"``, the number of items finished and the number expected.
The CLI turns these calls into tqdm bars on a terminal (one line per finished stage
elsewhere) and the app into ``st.progress`` bars.

A problem that was worked around (a damaged cache entry that is recomputed, files
skipped while listing a probe folder) is not progress: it is logged as a warning on the
``dissect_core`` logger (:data:`log`) and kept in the run's result.
"""
from __future__ import annotations

import logging
import time
from typing import IO, Callable, Optional

ProgressFn = Callable[[str, int, int], None]
log = logging.getLogger("dissect_core")
log.addHandler(logging.NullHandler())  # a library: the application decides where warnings go


def report(progress: Optional[ProgressFn], stage: str, done: int, total: int) -> None:
    """Call ``progress`` if one was given."""
    if progress is not None:
        progress(stage, done, total)


class TqdmProgress:
    """The CLI's progress callback: one tqdm bar per stage on a terminal; written to a file
    or a pipe (logs, CI), where bars would flood the output, one line per finished stage."""

    def __init__(self, file: IO[str], **tqdm_kwargs):
        self._file = file
        self._bars: dict = {}
        self._started: dict[str, float] = {}
        self._kwargs = tqdm_kwargs
        self.terminal = bool(getattr(file, "isatty", lambda: False)())

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.terminal:
            started = self._started.setdefault(stage, time.perf_counter())
            if done >= total:
                del self._started[stage]
                print(f"{stage}: {done:,} in {time.perf_counter() - started:.1f} s", file=self._file, flush=True)
            return
        from tqdm.auto import tqdm

        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=stage, file=self._file, **self._kwargs)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    def write(self, text: str) -> None:
        """A line of text that does not break the bars."""
        if self.terminal:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self._file)
        else:
            print(text, file=self._file, flush=True)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

"""Stopping a job on SIGTERM or SIGINT at a point a rerun resumes from, instead of losing the signal.

SLURM's preemption and ``timeout`` send SIGTERM, Ctrl-C SIGINT. While :func:`stop_on_signals` holds,
either one is only noted; the audit engine calls :func:`stop_if_signalled` after each stored chunk and the
training callback after each batch, and :class:`Stopped` ends the job there. A second signal stops
at once: every file is written atomically (records.py), so nothing half-written is left either way.
Outside the block (the Python API, a notebook) nothing is ever noted and :func:`stop_if_signalled` does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


class Stopped(Exception):
    """The job stopped on a signal; ``folder`` keeps what it finished. Exit status: 128 + the signal."""

    def __init__(self, signum: int, folder: str | Path | None = None):
        self.signum, self.folder = signum, folder
        super().__init__(self.message)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        where = f" in {self.folder}" if self.folder is not None else ""
        return (f"stopped by {signal.Signals(self.signum).name}: the finished chunks and audits are kept{where}. "
                "Fix: rerun the same command to resume (finished chunks are reused)")


def stop_if_signalled() -> None:
    """Raise :class:`Stopped` when a signal arrived since :func:`stop_on_signals` began."""
    if _received:
        raise Stopped(_received[0])


def received() -> int | None:
    """The first signal noted, if any."""
    return _received[0] if _received else None


def _note(signum: int, frame) -> None:
    if _received:   # the second one: stop now
        raise Stopped(_received[0])
    _received.append(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Note SIGTERM and SIGINT for the duration of the block (in the main thread; elsewhere Python
    cannot handle signals and the block changes nothing), then restore the handlers found."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _received.clear()
    for signum in SIGNALS:
        signal.signal(signum, _note)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()

"""One job per run folder: two jobs given the same folder would both train and overwrite each other's files.

The lock is ``fcntl.flock`` on ``<folder>/.lock``, which names its holder (pid, host, start time).
The kernel drops a flock when its process dies, however it dies, so the file of a killed job is
stale: the next job takes the lock over with a warning naming the job that held it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class FolderBusy(RuntimeError):
    """Another job is running in this folder."""


def _holder(text: str) -> str:
    """The lock file's holder in words, for messages."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown job"


def _acquire(path: Path) -> int:
    """An open descriptor of ``path`` holding its flock: the file at ``path`` itself, not one that
    a releasing job unlinked after we opened it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.read(fd, 4096).decode(errors="replace"))
            os.close(fd)
            raise FolderBusy(f"{path.parent} is in use by another job ({holder}). Fix: wait for it to finish, or "
                             "give this job its own folder (hydra.run.dir=… or paths.output_dir=…)") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def first_process() -> bool:
    """Whether this is a job's first process: the other processes of a DDP job (started by Lightning,
    torchrun or srun, which name their rank in the environment) work in its folder under its lock."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock for the duration of the block; :class:`FolderBusy` when another job has it."""
    path = Path(folder) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path)
    try:
        stale = os.read(fd, 4096).decode(errors="replace")
        if stale:
            log.warning("taking over %s: the job that held it (%s) is no longer running", path, _holder(stale))
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)   # while still held, so that no job opens this file and locks it after us
        os.close(fd)

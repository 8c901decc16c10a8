"""One job per run folder: two jobs given the same folder would both train and overwrite each other's files.

The lock is ``fcntl.flock`` on ``<folder>/.lock``, which names its holder (pid, host, start time).
The kernel drops a flock when its process dies, however it dies, so the file of a killed job is
stale: the next job takes the lock over with a warning naming the job that held it.

Taking the lock is the job's first write, so a folder the job cannot write (a parent that is a file, no
permission, a read-only disk) stops it there, before any data is read: :class:`CannotWrite`, in one line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class FolderBusy(UserError, RuntimeError):
    """Another job is running in this folder."""


class CannotWrite(UserError, RuntimeError):
    """The job cannot write in its folder: it cannot be made or written there, or the disk is full."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def file_in_the_way(path: Path) -> Path | None:
    """The file (not a folder) that ``path`` or one of its parents is, if any: mkdir says only "Not a directory"."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def cannot_write(folder: str | Path, error: OSError) -> CannotWrite:
    """One line for ``error``, met writing ``folder`` (the job's) or a file in it: what stands in the way and the
    fix. A full disk comes mid-job; every file is written whole or not at all (records.write_atomic), so what
    the job finished is kept and a rerun after freeing space resumes from it."""
    where = Path(error.filename) if error.filename else Path(folder)
    if error.errno in DISK_FULL:
        return CannotWrite(f"no space left to write {where} ({error.strerror}); what the job finished is kept in "
                           f"{folder}. Fix: free space on that disk and rerun the same command (finished chunks and "
                           "audits are reused), or give the job a folder on another disk (hydra.run.dir=…)")
    blocker = file_in_the_way(where)
    reason = f"{blocker} is a file, not a folder" if blocker else f"{where}: {error.strerror or error}"
    return CannotWrite(f"cannot write the job's folder {folder} ({reason}). Fix: give the job a folder it can write "
                       "to (hydra.run.dir=…, hydra.sweep.dir=… for a sweep, or paths.output_dir=…)")


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
    """Hold ``folder``'s lock for the duration of the block; :class:`FolderBusy` when another job has it,
    :class:`CannotWrite` when the folder cannot be made or written."""
    path = Path(folder) / LOCK_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path)
    except OSError as error:
        raise cannot_write(folder, error) from error
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

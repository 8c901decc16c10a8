"""Writing audit outputs so that a crash never leaves a half-written file behind."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    The temporary name is unique to this writer (process and a random suffix), so that two writers,
    threads included, never write into one temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Parquet or CSV by suffix, written atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
    if path.suffix == ".csv":
        return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    raise ValueError(f"cannot write a table as {path.suffix!r}; use .parquet or .csv")


def write_audit(folder: str | Path, records: pd.DataFrame, summary: pd.DataFrame) -> None:
    """One audit's tables: ``records.parquet``, ``summary.parquet`` and ``summary.csv``."""
    folder = Path(folder)
    write_table(records, folder / "records.parquet")
    write_table(summary, folder / "summary.parquet")
    write_table(summary, folder / "summary.csv")

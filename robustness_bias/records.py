"""The on-disk format of audits and the identity of a job: what the audit writes and the report reads.

A job's folder holds ``audits/<tag>/records.parquet`` (one row per sample × estimator),
``audits/<tag>/summary.{parquet,csv}`` (one row per group), ``audits/<tag>/chunks.json`` (chunks
reused and computed), ``audits/<tag>/published.json`` (the records' identity, once the summary and the
figures are written from them) and ``result.json``; an unfinished audit keeps its chunks under
``audits/.partial/<job>/``. Every file is written atomically, so a crash never leaves half of one.

Records carry ``settings_hash`` and ``weights_hash``, the fingerprints of the settings and of the
weights they were measured with: stored work is reused only for the very same ones. This module
imports nothing of the audit nor of the report, which both build on it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

AUDITS = "audits"
PUBLISHED = "published.json"   # an audit's summary and figures are those of its records: see write_published
IDENTITY = ("settings_hash", "weights_hash", "epoch", "shard")   # what a record's first row says it was measured under
BEST_BOUND = "best"   # the estimator name of the per-sample best bound in the records (auditing/best.py)
# Joins the attributes of an intersection, as its column in the records and its partition in the summary are named
# (race×gender), and their values, as its groups are (white×male).
INTERSECTION = "×"


def intersection_name(parts) -> str:
    """The name of the intersection of ``parts`` (attributes or their values): ``race×gender``, ``white×male``."""
    return INTERSECTION.join(parts)


def intersection_parts(name: str) -> list[str]:
    """The attributes (or values) an intersection's name joins; a single attribute's name is its only part."""
    return name.split(INTERSECTION)


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then rename it into place.

    The temporary name is unique to this writer (process and a random suffix), so that two writers,
    threads included, never write into one temporary file. An error of the disk (full, read-only) names
    ``path``, not the temporary file nor nothing (pyarrow names no file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as error:
        if error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, value) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2)))


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Parquet or CSV by suffix, written atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        return write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
    if path.suffix == ".csv":
        return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    raise ValueError(f"cannot write a table as {path.suffix!r}; use .parquet or .csv")


def audit_folder(output_dir: str | Path, tag: str) -> Path:
    """Where the audit of one tag (first, middle, final) of a job lives."""
    return Path(output_dir) / AUDITS / tag


def write_records(folder: Path, records: pd.DataFrame) -> Path:
    return write_table(records, folder / "records.parquet")


def read_records(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "records.parquet")


def read_final_records(job: str | Path) -> pd.DataFrame | None:
    """A job's final audit's records, or None where the job has written none (it failed, or has not got there)."""
    folder = audit_folder(job, "final")
    return read_records(folder) if (folder / "records.parquet").is_file() else None


def write_summary(folder: Path, summary: pd.DataFrame) -> None:
    """The per-group table, as Parquet for the report and CSV for people."""
    write_table(summary, folder / "summary.parquet")
    write_table(summary, folder / "summary.csv")


def read_summary(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "summary.parquet")


def records_identity(folder: Path) -> dict | None:
    """settings_hash, weights_hash, epoch and shard of the records stored in ``folder`` — read from their
    first row alone — or None when there are none."""
    try:
        records = pq.ParquetFile(folder / "records.parquet")
    except FileNotFoundError:
        return None
    columns = [c for c in IDENTITY if c in records.schema_arrow.names]
    first = next(records.iter_batches(batch_size=1, columns=columns), None)
    row = first.to_pylist()[0] if first is not None and first.num_rows else {}
    return {column: row.get(column) for column in IDENTITY}


def stored_identity(folder: Path) -> tuple | None:
    """(settings_hash, epoch, shard) of the records stored in ``folder``, or None when there are none."""
    identity = records_identity(folder)
    return None if identity is None else (identity["settings_hash"], identity["epoch"], identity["shard"])


def write_published(folder: Path, figures: list[Path]) -> None:
    """Written last, once the summary and ``figures`` of ``folder``'s records are written: the records'
    identity, so that a summary or figures left by a killed or an earlier job never pass for these."""
    write_json(folder / PUBLISHED, {"records": records_identity(folder),
                                    "figures": [os.path.relpath(path, folder) for path in figures]})


def published(folder: Path) -> bool:
    """Whether ``folder``'s summary and figures are those of its records: :func:`write_published` wrote
    their identity, and every figure it lists is there."""
    path = folder / PUBLISHED
    if not (path.is_file() and (folder / "summary.parquet").is_file()):
        return False
    stored = json.loads(path.read_text())
    identity = json.loads(json.dumps(records_identity(folder)))   # as JSON gives it back
    return stored.get("records") == identity and all((folder / name).is_file() for name in stored.get("figures", []))


def write_chunk_counts(folder: Path, label: str, counts: dict[str, dict[str, int]]) -> None:
    """How many chunks of the audit ``label`` (e.g. ``first+middle``) each estimator reused and computed."""
    write_json(folder / "chunks.json", {"label": label, "counts": counts})


def read_chunk_counts(folder: Path) -> tuple[str, dict] | None:
    path = folder / "chunks.json"
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return stored["label"], stored["counts"]


class ChunkStore:
    """The finished chunks of one estimator's unfinished audit, so that a rerun after a crash resumes
    where it stopped, and how many chunks were reused and computed over every attempt.

    Chunks of an estimator whose results depend on the batch size (by float rounding) are kept apart
    per ``batch_size`` (None for batch-invariant ones), so that a rerun under another batch size
    never mixes chunks that no uninterrupted run would produce. The computed chunks are counted from
    the chunk files themselves, so that a kill between a chunk's file and a count cannot lose it.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.counts_file = folder / "counts.json"
        stored = json.loads(self.counts_file.read_text()) if self.counts_file.is_file() else {}
        self.reused, self.replaced = stored.get("reused", 0), stored.get("replaced", 0)

    def path(self, number: int, batch_size: int | None) -> Path:
        folder = self.folder if batch_size is None else self.folder.with_name(f"{self.folder.name}-batch{batch_size}")
        return folder / f"chunk-{number:05d}.parquet"

    @property
    def counts(self) -> dict[str, int]:
        """Chunks read back and chunks computed, over every attempt: a chunk file under any batch size is one
        computation, and a file computed again over one that covered other samples one more."""
        folders = [self.folder, *self.folder.parent.glob(f"{glob.escape(self.folder.name)}-batch*")]
        written = sum(1 for folder in folders for _ in folder.glob("chunk-*.parquet"))
        return {"reused": self.reused, "computed": written + self.replaced}

    def read(self, number: int, samples: np.ndarray, batch_size: int | None) -> pd.DataFrame | None:
        """The stored chunk when it covers exactly these samples (counted as reused); None when it must be computed,
        among them when it cannot be read: a damaged chunk is recomputed with a warning, never a dead end."""
        path = self.path(number, batch_size)
        if not path.is_file():
            return None
        try:
            stored = pd.read_parquet(path)
        except Exception as error:   # zero bytes or cut short (a full disk, a copy that stopped): never ours whole
            log.warning("%s is damaged (%s): recomputing it", path, type(error).__name__)
            self.replaced += 1
            self._save()
            return None
        if not np.array_equal(stored["sample_index"].to_numpy(), samples):
            log.warning("%s covers other samples than expected: recomputing it", path)
            self.replaced += 1
            self._save()
            return None
        self.reused += 1
        self._save()
        return stored

    def write(self, number: int, frame: pd.DataFrame, batch_size: int | None) -> None:
        write_table(frame, self.path(number, batch_size))

    def _save(self) -> None:
        write_json(self.counts_file, {"reused": self.reused, "replaced": self.replaced})


def shard_suffix(index: int, count: int) -> str:
    """``-shard{index}of{count}``, or nothing for a whole audit: what keeps one shard's partial work and
    checkpoints apart from another's."""
    return f"-shard{index}of{count}" if count > 1 else ""


def partial_folder(output_dir: str | Path, settings: str, weights: str, epoch: int, part: int, parts: int) -> Path:
    """Where an unfinished audit keeps its chunks: one folder per settings, weights, epoch and shard."""
    return Path(output_dir) / AUDITS / ".partial" / f"{settings}-{weights}-e{epoch}{shard_suffix(part, parts)}"


def weights_hash(model) -> str:
    """A fingerprint of a torch model's weights, so that stored chunks are only ever reused for the very same model."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def settings_hash(settings: dict) -> str:
    """A fingerprint of the settings that shape a job's results (the caller leaves out the rest)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_result(output_dir: Path, fingerprint: str, shard: dict | None) -> dict | None:
    """The stored result of this very job (same settings, same shard) when it already finished here,
    so a rerun can skip it."""
    path = output_dir / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if (result.get("settings_hash"), result.get("shard")) == (fingerprint, shard) else None


def other_finished_job(output_dir: Path, fingerprint: str, shard: dict | None) -> str | None:
    """The identity (settings_hash, and ``-shard{i}of{n}``) of the finished job in ``output_dir`` when it is
    not this one; None when the folder holds no finished job or this very one."""
    path = output_dir / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    stored = (result.get("settings_hash"), result.get("shard"))
    if stored == (fingerprint, shard):
        return None
    return str(stored[0]) + (shard_suffix(stored[1]["index"], stored[1]["count"]) if stored[1] else "")


def merge_shards(shards: dict[int, pd.DataFrame], num_shards: int) -> pd.DataFrame:
    """The records of an unsharded audit from those of its ``num_shards`` shards (shard index → records).

    Every shard must be there and every (estimator, sample) must appear once: a gap or a
    duplicate is an error, never a silently smaller or larger audit.
    """
    missing = sorted(set(range(num_shards)) - set(shards))
    if missing:
        raise ValueError(f"cannot merge the audit: shard(s) {missing} of {num_shards} are missing. "
                         f"Fix: run them (audit.shard=i audit.num_shards={num_shards}) before the report")
    frames = [shards[i] for i in range(num_shards)]
    for column in ("settings_hash", "weights_hash"):
        values = set().union(*(frame[column].unique() for frame in frames if column in frame))
        if len(values) > 1:
            raise ValueError(f"cannot merge shards with different {column} {sorted(values)}: they audited "
                             "different settings or weights")
    records = pd.concat(frames, ignore_index=True)
    duplicated = records.duplicated(["estimator", "sample_index"])
    if duplicated.any():
        raise ValueError(f"{int(duplicated.sum())} sample(s) appear in more than one shard, "
                         f"e.g. {records.loc[duplicated, 'sample_index'].iloc[0]}")
    return records.sort_values(["estimator", "sample_index"], kind="stable").reset_index(drop=True)

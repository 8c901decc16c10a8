"""What an offline W&B run holds, read the way W&B itself lays it out on disk.

Tables and images logged to a run are files under its ``files/media/`` folder, named
``<key>_<step>_<hash>.<ext>``: tests compare those with the project's own outputs. The run's
identity, its scalars and its summary live in its binary log, ``run-<id>.wandb``: a LevelDB-style
log of W&B's protobuf ``Record`` messages, which the installed W&B writes but no longer reads back
from Python; :func:`run_log` reads it (tests that check scalars in-process may also spy on
``Run.log``: the ``wandb_logged`` fixture).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pandas as pd

BLOCK, HEADER, RECORD_HEADER = 32768, struct.Struct("<4sHB"), struct.Struct("<IHB")   # W&B's datastore layout
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_runs(folder: Path) -> list[Path]:
    """The offline run folders W&B created under ``folder/wandb``."""
    return sorted((folder / "wandb").glob("offline-run-*"))


def _media(run: Path, kind: str, key: str, suffix: str) -> list[Path]:
    folder = run / "files" / "media" / kind / Path(key).parent
    pattern = re.compile(re.escape(Path(key).name) + r"_\d+_[0-9a-f]+" + re.escape(suffix) + "$")
    return sorted(p for p in folder.glob("*") if pattern.fullmatch(p.name))


def logged_table(run: Path, key: str) -> pd.DataFrame:
    """The one table logged under ``key``, as W&B wrote it."""
    files = _media(run, "table", key, ".table.json")
    assert len(files) == 1, f"{key}: {len(files)} table files in {run}"
    table = json.loads(files[0].read_text())
    return pd.DataFrame(table["data"], columns=table["columns"])


def run_log(run: Path) -> list:
    """The protobuf records of an offline run's ``run-<id>.wandb``, in order."""
    from wandb.proto import wandb_internal_pb2

    [path] = run.glob("run-*.wandb")
    data = path.read_bytes()
    assert HEADER.unpack_from(data)[0] == b":W&B", f"{path} is not a W&B run log"
    position, pending, found = HEADER.size, b"", []
    while position + RECORD_HEADER.size <= len(data):
        room = BLOCK - position % BLOCK
        if room < RECORD_HEADER.size:   # a block's tail too short for a record header is padding
            position += room
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, position)
        position += RECORD_HEADER.size
        piece, position = data[position:position + length], position + length
        if kind == FULL:
            found.append(piece)
        elif kind == FIRST:
            pending = piece
        elif kind == MIDDLE:
            pending += piece
        elif kind == LAST:
            found.append(pending + piece)
    return [wandb_internal_pb2.Record.FromString(piece) for piece in found]


def run_identity(records: list) -> dict:
    """The run's name, group, job type and tags, as the dashboard shows them."""
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"][:1]
    return {"name": run.display_name, "group": run.run_group, "job_type": run.job_type, "tags": list(run.tags)}


def history(records: list) -> list[dict]:
    """Each ``log`` call's values, by key."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


def summary(records: list) -> dict:
    """The run's summary: the last value of each key written to it."""
    found = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            found.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.summary.update})
    return found


def logged_images(run: Path, key: str) -> list[Path]:
    """The PNG files logged under ``key``."""
    return _media(run, "images", key, ".png")

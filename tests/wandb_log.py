"""Read an offline W&B run file (``run-*.wandb``) so tests can see what the run holds.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks
of chunks, each with a 7-byte header (CRC32, little-endian length, type: 1 full, 2 first,
3 middle, 4 last) wrapping serialized ``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def records(path: str | Path):
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def logged_values(path: str | Path) -> dict[str, object]:
    """Last value of every key logged to the run's history or summary."""
    values: dict[str, object] = {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            values.update({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            values.update({_key(item): json.loads(item.value_json) for item in record.summary.update})
    return values

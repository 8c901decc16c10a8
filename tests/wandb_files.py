"""What an offline W&B run holds, read the way W&B itself lays it out on disk.

Tables and images logged to a run are files under its ``files/media/`` folder, named
``<key>_<step>_<hash>.<ext>``: tests compare those with the project's own outputs. Scalars live
only in W&B's binary run log, which the installed W&B no longer reads back from Python, so
tests that check scalars spy on ``Run.log`` in-process (the ``wandb_logged`` fixture).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd


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


def logged_images(run: Path, key: str) -> list[Path]:
    """The PNG files logged under ``key``."""
    return _media(run, "images", key, ".png")

"""Reading checkpoint files that a user or a run folder supplies, without running code from them.

``torch.load`` unpickles, and a pickle may call any function (``os.system`` included) while it is
read. With ``weights_only=True`` torch's own unpickler accepts only tensors, plain containers,
numbers and strings (https://pytorch.org/docs/stable/generated/torch.load.html), so a crafted
file is refused before anything in it runs; the tool's own checkpoints hold nothing else.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch


class UnsafeCheckpoint(ValueError):
    """A checkpoint holds more than tensors and plain data: refused, and nothing in it ran."""


def _what_it_holds(error: pickle.UnpicklingError) -> str:
    """The object torch's restricted unpickler stopped at, in a few words."""
    found = re.search(r"GLOBAL (\S+)", str(error))
    return f"an object of {found.group(1)}" if found else "pickled data other than tensors and plain Python values"


def load_checkpoint(path: str | Path, fix: str, **kwargs):
    """``torch.load(path, weights_only=True)`` on the CPU; a file holding anything else raises
    :class:`UnsafeCheckpoint`, one line naming the file, what it holds and ``fix``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpoint(f"{path} holds {_what_it_holds(error)}: refused, since loading it could run code "
                               f"(only tensors, dicts, lists, numbers and strings are read). Fix: {fix}") from None

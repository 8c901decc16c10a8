"""Reading checkpoint files that a user or a run folder supplies, without running code from them.

``torch.load`` unpickles, and a pickle may call any function (``os.system`` included) while it is
read. With ``weights_only=True`` torch's own unpickler accepts only tensors, plain containers,
numbers and strings (https://pytorch.org/docs/stable/generated/torch.load.html), so a crafted
file is refused before anything in it runs; the tool's own checkpoints hold nothing else. Before
torch 2.6 that unpickler could be bypassed (CVE-2025-32434), so older torch reads no checkpoint.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch.torch_version import TorchVersion

from .errors import UserError

SAFE_TORCH = (2, 6)   # the first torch whose weights_only loading has no known bypass (CVE-2025-32434)
TORCHSCRIPT = "is a TorchScript model"
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"   # how torch.save's pre-1.6 format begins


class UnsafeCheckpoint(UserError, ValueError):
    """A checkpoint holds more than tensors and plain data, or this torch cannot read one safely:
    refused, and nothing in it ran."""


class UnreadableCheckpoint(UserError, ValueError):
    """``torch.load`` cannot read the file at all; ``what`` says what it is instead ("is a plain pickle …")."""

    def __init__(self, path, what: str):
        super().__init__(f"{path} {what}")
        self.what = what


def require_safe_torch(path: str | Path) -> None:
    """Refuse to read ``path`` under a torch whose ``weights_only=True`` can be bypassed."""
    if TorchVersion(torch.__version__) < SAFE_TORCH:
        raise UnsafeCheckpoint(f"{path} not read: torch {torch.__version__} is older than 2.6, whose "
                               "weights_only loading can be made to run code (CVE-2025-32434). "
                               "Fix: pip install 'torch>=2.6' 'torchvision>=0.21'")


def _what_it_is(path: str | Path, error: Exception) -> str:
    """What a file torch cannot read is, in a few words: torch's own reason advises about miniz
    internals or about ``weights_only=False``, which would run the file's code."""
    with open(path, "rb") as file:
        head = file.read(len(_LEGACY_MAGIC))
    if "TorchScript" in str(error):
        return TORCHSCRIPT
    if head.startswith(b"PK"):
        return "is a zip archive that torch.save did not write, or a damaged one"
    if head.startswith(_LEGACY_MAGIC):
        return "is a damaged or truncated torch.save file"
    if head.startswith(b"\x80"):
        return "is a plain pickle (pickle.dump), not a file torch.save wrote"
    return "is empty" if not head else "is neither a torch.save file nor a pickle"


def load_checkpoint(path: str | Path, fix: str, **kwargs):
    """``torch.load(path, weights_only=True)`` on the CPU. A file holding anything else raises
    :class:`UnsafeCheckpoint`, one line naming the file, what it holds and ``fix``; a file torch cannot
    read at all (a plain pickle, text, a truncated download) raises :class:`UnreadableCheckpoint`."""
    require_safe_torch(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        if found is None and not zipfile.is_zipfile(path):
            raise UnreadableCheckpoint(path, _what_it_is(path, error)) from None
        holds = f"an object of {found.group(1)}" if found else "pickled data other than tensors and plain values"
        raise UnsafeCheckpoint(f"{path} holds {holds}: refused, since loading it could run code "
                               f"(only tensors, dicts, lists, numbers and strings are read). Fix: {fix}") from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError) as error:
        raise UnreadableCheckpoint(path, _what_it_is(path, error)) from None

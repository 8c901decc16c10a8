"""A steady CPU allocator for attacks: activation-sized buffers reuse heap pages instead of fresh ones.

glibc's malloc serves blocks above its mmap threshold (128 KiB at start) with fresh pages from the
kernel and raises the threshold only as such blocks are freed. An attack on a batch of 256 images
allocates and frees tens of megabytes per backward pass, so until the threshold has risen every
pass page-faults its buffers anew: a fresh process's first calls run markedly slower than its later
ones, and a benchmark's ratios depended on the order of its rows (docs/benchmarks.md). Fixing the
threshold at glibc's own ceiling (32 MiB on 64-bit) puts every run in the warm state from the start. It is process-wide, so only entry points call it, never the library. It is the state
glibc reaches by itself in any process that has freed a 32 MiB block (as training does constantly),
so it adds no memory use that such a process would not already have.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20   # glibc's upper limit for it on 64-bit machines


def steady_cpu_allocator() -> bool:
    """Fix malloc's mmap threshold at 32 MiB (trim at twice that, glibc's own rule); False where the
    C library is not glibc, which leaves the process as it was."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):   # not glibc (musl, macOS, Windows): nothing to tune
        return False
    results = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)]
    return all(results)

"""glibc malloc settings that keep large freed blocks for reuse (shared/research/env_measure.md, finding 7).

With glibc's defaults every allocation above 32 MiB is a fresh ``mmap`` whose pages fault in on first touch; on this
kind of VM that costs about 0.45 ms per MiB, and a BPTT step at the reference size allocates several such
(time x batch x units) tensors. Raising the mmap threshold to 1 GiB and the trim threshold to 2 GiB makes freed
blocks stay in the heap, so the next step reuses them: the same effect as
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296``, set at run time.
The cost is memory: up to 2 GiB freed by torch can stay mapped to the process instead of going back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # mallopt takes an int
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h


def keep_large_allocations() -> bool:
    """Set glibc's mmap and trim thresholds for this process; True when both are set.

    False where there is no glibc or glibc refuses a value (only speed is lost), and False with nothing changed where
    ``GLIBC_TUNABLES`` already names either threshold (the user's setting wins).
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "mmap_threshold" in tunables or "trim_threshold" in tunables:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(TRIM_THRESHOLD_BYTES)):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD_BYTES)))


def allocator_in_use(keep_defaults: bool = False) -> str:
    """Apply `keep_large_allocations` unless ``keep_defaults``, and say which malloc settings this process runs with."""
    if keep_defaults:
        return "glibc default malloc settings"
    if keep_large_allocations():
        return f"recircuit's malloc settings (mmap threshold {MMAP_THRESHOLD_BYTES >> 20} MiB, trim threshold 2 GiB)"
    return f"malloc settings left as they are (GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r})"

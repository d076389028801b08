"""keep_large_allocations: a 64 MiB tensor is served from the heap and stays there when freed (glibc only)."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc settings"
)

# Prints mmapped bytes while a 64 MiB tensor lives, then the heap's free bytes after it is freed (glibc mallinfo2).
PROBE = """
import ctypes, sys
import torch
from recircuit.allocator import keep_large_allocations

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
print(keep_large_allocations() if sys.argv[1] == "set" else "unset")
block = torch.ones(16 * 1024 * 1024)
print(libc.mallinfo2().hblkhd)
del block
print(libc.mallinfo2().fordblks)
"""
MIB64 = 64 * 1024 * 1024


def probe(mode: str, env: dict[str, str]) -> list[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return result.stdout.split()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}


def test_large_blocks_come_from_the_heap_and_stay_there_when_freed():
    returned, mmapped, free_after = probe("set", clean_env())
    assert returned == "True"
    assert int(mmapped) < MIB64  # not a fresh mmap
    assert int(free_after) >= MIB64  # kept in the heap for the next step


def test_glibc_defaults_mmap_large_blocks():
    _, mmapped, free_after = probe("unset", clean_env())
    assert int(mmapped) >= MIB64
    assert int(free_after) < MIB64


def test_a_users_glibc_tunables_win():
    env = {**clean_env(), "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
    returned, mmapped, _ = probe("set", env)
    assert returned == "False"
    assert int(mmapped) >= MIB64

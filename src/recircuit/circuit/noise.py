"""Gaussian (and uniform) noise for whole runs, drawn on all of torch's CPU threads.

torch's CPU ``normal_`` runs on one thread whatever ``torch.get_num_threads()`` says (its Mersenne Twister is a
serial stream): about 4.5 ns per number, 46 ms of a 280 ms training step at the reference size (512 units,
batch 200, 100 steps). ``standard_normal`` splits the tensor into a fixed number of parts along its first
dimension, seeds one generator per part from the caller's generator, and fills the parts side by side. The
numbers depend on the caller's generator and the shape only, never on the thread count. ``standard_uniform`` does
the same for U[0, 1) draws (the reference code's noise, NoiseSpec.distribution = reference_uniform).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

NOISE_PARTS = 8  # fixed, so that a run draws the same numbers on any number of threads


@functools.lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recircuit-noise")


def standard_normal(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """N(0, 1) draws of ``shape`` from ``generator``: on CPU in NOISE_PARTS slices along dim 0, each from its own
    generator seeded by ``generator``, filled on up to torch.get_num_threads() threads; elsewhere one call (CUDA's
    generator is already parallel)."""
    return _parallel_draws(shape, generator, device, torch.randn, torch.Tensor.normal_)


def standard_uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """U[0, 1) draws of ``shape`` from ``generator``, split and filled like ``standard_normal``."""
    return _parallel_draws(shape, generator, device, torch.rand, torch.Tensor.uniform_)


def _parallel_draws(
    shape: tuple[int, ...],
    generator: torch.Generator,
    device: torch.device | str,
    draw: Callable[..., torch.Tensor],
    fill_in_place: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """``draw`` (torch.randn / torch.rand) as one call off the CPU; on CPU the parts of an empty tensor filled by
    ``fill_in_place`` (Tensor.normal_ / Tensor.uniform_, default parameters), each from its own seeded generator."""
    device = torch.device(device)
    if device.type != "cpu":
        return draw(shape, generator=generator, device=device)
    out = torch.empty(shape)
    parts = [part for part in out.chunk(NOISE_PARTS, dim=0) if part.numel()]
    seeds = torch.randint(0, 2**62, (len(parts),), generator=generator).tolist()

    def fill(index: int) -> None:
        fill_in_place(parts[index], generator=torch.Generator().manual_seed(seeds[index]))

    workers = min(torch.get_num_threads(), len(parts))
    if workers <= 1:
        for index in range(len(parts)):
            fill(index)
    else:
        list(_pool(workers).map(fill, range(len(parts))))
    return out

"""Shared fixtures: the repository paths and a factory of tiny, fast circuit specs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from recircuit.spec import CircuitSpec, load_spec

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
CIRCUITS_DIR = REPO_ROOT / "circuits"

# Small enough that a forward pass takes milliseconds and a training step a few tens of milliseconds on one thread.
_TINY_COMMON: dict[str, Any] = {
    "task.sequence_steps": 20,
    "network.n_exc": 24,
    "network.n_inh": 8,
    "training.steps": 30,
    "training.batch_size": 16,
    "training.learning_rate": 0.01,
    "training.device": "cpu",
    "training.log_every_steps": 10,
    "training.checkpoint_every_steps": 10,
    "evaluation.n_trials": 8,
    "evaluation.n_trials_with_rates": 4,
}
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "path_integration": {**_TINY_COMMON, "task.place_cells.n_cells": 32},
    "head_direction": {**_TINY_COMMON, "task.hd_cells.n_cells": 32},
}


@pytest.fixture
def tiny_set_args() -> Callable[..., list[str]]:
    """``tiny_set_args(kind, overrides)``: the tiny overrides as command-line ``key=value`` strings for ``--set``."""

    def factory(kind: str = "path_integration", overrides: Mapping[str, Any] | None = None) -> list[str]:
        merged = {**TINY_OVERRIDES[kind], **(overrides or {})}
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in merged.items()]

    return factory


@pytest.fixture
def make_spec() -> Callable[..., CircuitSpec]:
    """``make_spec(kind, overrides)``: a shipped circuit shrunk to tiny size, with extra dotted overrides on top."""

    def factory(kind: str = "path_integration", overrides: Mapping[str, Any] | None = None) -> CircuitSpec:
        return load_spec(CIRCUITS_DIR / f"{kind}.yaml", {**TINY_OVERRIDES[kind], **(overrides or {})})

    return factory


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """Like torch.testing.assert_close, without its 2-second first-call import of torch.distributed."""
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if not torch.allclose(actual, expected, rtol=rtol, atol=atol):
        worst = (actual - expected).abs().max().item()
        raise AssertionError(f"tensors differ: max abs difference {worst:.3g} (rtol {rtol}, atol {atol})")

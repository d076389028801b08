"""The task interface shared by path integration and head direction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch



@dataclass(frozen=True)
class TrialBatch:
    """A batch of trajectories. Step t's input moves the agent from state t-1 to state t."""

    inputs: torch.Tensor  # (batch, time, n_inputs) self-motion per step (m or rad), gain applied
    targets: torch.Tensor  # (batch, time, n_cells) cell code of the state after each step
    states: torch.Tensor  # (batch, time, state_dims) true position (m) or heading (rad) after each step
    initial_state: torch.Tensor  # (batch, state_dims) position or heading before the first step
    initial_code: torch.Tensor  # (batch, n_cells) cell code of the initial state
    gains: torch.Tensor  # (batch, time) input gain applied at each step (1 without variability)


class Task(Protocol):
    kind: str
    n_inputs: int
    n_cells: int
    state_dims: int
    error_units: str
    input_scale: float

    def sample(self, batch_size: int, steps: int, generator: torch.Generator) -> TrialBatch: ...
    def encode(self, states: torch.Tensor) -> torch.Tensor: ...
    def decode(self, outputs: torch.Tensor) -> torch.Tensor: ...
    def error(self, decoded: torch.Tensor, true: torch.Tensor) -> torch.Tensor: ...


def sample_gains(
    batch_size: int, steps: int, epsilon: float, segments: int, generator: torch.Generator, device
) -> torch.Tensor:
    """Per-trial (and per-segment) input gains g ~ U(1-eps, 1+eps), shape (batch, time)."""
    if epsilon == 0:
        return torch.ones(batch_size, steps, device=device)
    per_segment = 1.0 + epsilon * (2.0 * torch.rand(batch_size, segments, generator=generator, device=device) - 1.0)
    segment_of_step = torch.div(torch.arange(steps, device=device) * segments, steps, rounding_mode="floor")
    return per_segment[:, segment_of_step]

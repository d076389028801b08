"""The task interface shared by path integration and head direction."""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass(frozen=True)
class Movement:
    """Moved agents without their cell codes (the codes are most of a batch's memory: computed per step)."""

    inputs: torch.Tensor  # (agents, time, n_inputs), gain applied
    states: torch.Tensor  # (agents, time, state_dims)
    initial_state: torch.Tensor  # (agents, state_dims)
    gains: torch.Tensor  # (agents, time)


class Task(Protocol):
    kind: str
    n_inputs: int
    n_cells: int
    state_dims: int
    error_units: str
    input_scale: float

    def draw(self, batch_size: int, steps: int, generator: torch.Generator) -> dict[str, torch.Tensor]: ...
    def move(self, draws: dict[str, torch.Tensor]) -> Movement: ...
    def sample(self, batch_size: int, steps: int, generator: torch.Generator) -> TrialBatch: ...
    def encode(self, states: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor: ...
    def decode(self, outputs: torch.Tensor) -> torch.Tensor: ...
    def error(self, decoded: torch.Tensor, true: torch.Tensor) -> torch.Tensor: ...


class TrialChunk:
    """``n_batches`` consecutive training batches of each of several generators, moved in one call.

    Each generator's randomness is drawn in the order that ``n_batches`` calls of ``task.sample`` would draw it,
    so batch j of generator m equals its j-th ``sample`` call (up to float rounding of the joint move). The agents
    are stored batch-major: batch j of every generator lies in one block, so `batches` returns adjacent slices of
    one buffer. A step-by-step trajectory loop costs the same for 64 agents as for a thousand; moving many batches
    at once pays that cost once.
    """

    def __init__(self, task: Task, batch_size: int, steps: int, generators: Sequence[torch.Generator], n_batches: int):
        draws = [[task.draw(batch_size, steps, g) for _ in range(n_batches)] for g in generators]
        batch_major = [draws[m][j] for j in range(n_batches) for m in range(len(generators))]
        joined = {key: torch.cat([d[key] for d in batch_major]) for key in batch_major[0]}
        self.task, self.movement = task, task.move(joined)
        self.n_batches, self.n_members, self.batch_size = n_batches, len(generators), batch_size

    def batches(self, index: int) -> list[TrialBatch]:
        """Batch ``index`` (0 <= index < n_batches) of every generator, cell codes included."""
        if not 0 <= index < self.n_batches:
            raise IndexError(f"batch {index} of a chunk of {self.n_batches}")
        block = self.n_members * self.batch_size
        agents = slice(index * block, (index + 1) * block)
        m, size = self.movement, self.batch_size
        states, initial = m.states[agents], m.initial_state[agents]
        fields = (m.inputs[agents], self._encode(states), states, initial, self._encode(initial), m.gains[agents])
        return [TrialBatch(*(f[k * size : (k + 1) * size] for f in fields)) for k in range(self.n_members)]

    def _encode(self, states: torch.Tensor) -> torch.Tensor:
        """Cell codes of every member's agents in one buffer, encoded one member at a time: a member's code stays in
        cache while it is written, where one code of all members' agents (K times larger) would not."""
        if self.n_members == 1:
            return self.task.encode(states)
        codes, size = states.new_empty((*states.shape[:-1], self.task.n_cells)), self.batch_size
        for start in range(0, states.shape[0], size):
            self.task.encode(states[start : start + size], out=codes[start : start + size])
        return codes


def sample_batch(task: Task, batch_size: int, steps: int, generator: torch.Generator) -> TrialBatch:
    """One batch of ``task``: what ``task.sample`` returns."""
    return TrialChunk(task, batch_size, steps, [generator], 1).batches(0)[0]


def sample_gains(
    batch_size: int, steps: int, epsilon: float, segments: int, generator: torch.Generator, device
) -> torch.Tensor:
    """Per-trial (and per-segment) input gains g ~ U(1-eps, 1+eps), shape (batch, time)."""
    if epsilon == 0:
        return torch.ones(batch_size, steps, device=device)
    per_segment = 1.0 + epsilon * (2.0 * torch.rand(batch_size, segments, generator=generator, device=device) - 1.0)
    segment_of_step = torch.div(torch.arange(steps, device=device) * segments, steps, rounding_mode="floor")
    return per_segment[:, segment_of_step]


def pauses(uniform: torch.Tensor, fraction: float, mean_steps: float) -> torch.Tensor:
    """Steps at which the agent stands still (batch, time), bool: a two-state Markov chain driven by uniform draws
    (batch, time), started in its stationary distribution, still a ``fraction`` of the time in pauses of
    ``mean_steps`` steps on average (geometric lengths)."""
    resume = 1.0 / mean_steps
    stop = resume * fraction / (1.0 - fraction)
    still = torch.empty_like(uniform, dtype=torch.bool)
    state = uniform[:, 0] < fraction
    still[:, 0] = state
    for t in range(1, uniform.shape[1]):
        state = torch.where(state, uniform[:, t] >= resume, uniform[:, t] < stop)
        still[:, t] = state
    return still

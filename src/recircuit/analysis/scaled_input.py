"""The scaled-input test: the trained circuit, awake and with its training noise, integrating held-out self-motion
input multiplied by a factor (1 = waking speeds, 0 = standing still). It shows what removing the input does before
the noise is raised: whether the circuit holds a position when its input goes to zero, or drifts, and where to.

The true path under a factor f is the start plus f times the integrated self-motion (for headings, wrapped): a
slower agent on the same track. Every factor uses the same trials and the same noise draws (common random numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recircuit.circuit.network import EICircuit
from recircuit.tasks.base import Movement
from recircuit.tasks.head_direction import wrap_angle

CHUNK_STEPS = 100  # time steps simulated per chunk (bounds memory: noise and rates of one chunk)


def scaled_true_states(kind: str, movement: Movement, scale: float) -> torch.Tensor:
    """The true state after each step (batch, time, dims) of an agent whose self-motion is ``scale`` times that of
    ``movement``: position (m) start + scale x integrated displacement, or heading (rad) wrapped likewise."""
    self_motion = (movement.inputs / movement.gains[..., None]).cumsum(1)  # the inputs carry the gains
    states = movement.initial_state[:, None] + scale * self_motion
    return states if kind == "path_integration" else wrap_angle(states)


def error_bias(kind: str, decoded: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """The signed part of the decoding error (batch, time): for positions its component away from the arena centre
    (outward, cm; along the true position's direction), for headings the wrapped difference (counter-clockwise
    positive, deg)."""
    difference = decoded - true
    if kind == "path_integration":
        radius = torch.linalg.vector_norm(true, dim=-1, keepdim=True).clamp_min(1e-9)
        return 100.0 * (difference * true / radius).sum(-1)
    return torch.rad2deg(wrap_angle(difference)).squeeze(-1)


@torch.no_grad()
def scaled_input_run(
    model: EICircuit,
    movement: Movement,
    scales: Sequence[float],
    noise_seed: int,
    *,
    chunk_steps: int = CHUNK_STEPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean decoding error and mean signed error over trials, each (len(scales), time), of ``model`` run on the
    inputs of ``movement`` times each factor from its encoded start, with the training noise (recurrent and input)
    of one seeded stream shared by every factor. Units those of `error_bias` (cm or deg)."""
    task, kind = model.task, model.task.kind
    batch, steps = movement.inputs.shape[:2]
    initial_rates = model.initial_rates(task.encode(movement.initial_state))
    errors = np.empty((len(scales), steps))
    biases = np.empty((len(scales), steps))
    for i, scale in enumerate(scales):
        true = scaled_true_states(kind, movement, scale)
        generator = torch.Generator(movement.inputs.device).manual_seed(noise_seed)
        rates = initial_rates
        for start in range(0, steps, chunk_steps):
            window = slice(start, min(start + chunk_steps, steps))
            length = window.stop - window.start
            history = model.run(movement.inputs[:, window] * scale, rates, model.draw_noise(batch, length, generator))
            rates = history[:, -1]
            if not torch.isfinite(rates).all():
                raise FloatingPointError(
                    f"the scaled-input test's rates became non-finite by step {window.stop} at input factor {scale:g}"
                )
            decoded = task.decode(model.readout(history))
            errors[i, window] = task.error(decoded, true[:, window]).mean(0).cpu().numpy()
            biases[i, window] = error_bias(kind, decoded, true[:, window]).mean(0).cpu().numpy()
    return errors, biases


TAIL_FRACTION = 0.1  # summaries read the last tenth of a scaled-input trial
# what `error_bias` measures, by task: the sign's direction (for labels) and the quantity (for descriptions)
SIGNED_PART = {"path_integration": "outward", "head_direction": "counter-clockwise"}
SIGNED_QUANTITY = {
    "path_integration": "component away from the arena centre",
    "head_direction": "wrapped heading difference",
}


def variable_names(kind: str) -> tuple[str, str]:
    """(error, signed error) variable names of a task's scaled-input test: task-specific, so that path-integration
    and head-direction summaries combine without mixing units."""
    what = "position" if kind == "path_integration" else "heading"
    return f"scaled_input_{what}_error", f"scaled_input_{what}_bias"


def tail_mean(values, time_dim: str = "scaled_input_time"):
    """Mean over the last `TAIL_FRACTION` of the steps (at least one) of an xarray DataArray along ``time_dim``;
    steps with no value anywhere (another circuit's longer trials, in a combined summary) do not count."""
    values = values.dropna(time_dim, how="all")
    steps = values.sizes[time_dim]
    return values.isel({time_dim: slice(steps - max(1, round(TAIL_FRACTION * steps)), None)}).mean(time_dim)

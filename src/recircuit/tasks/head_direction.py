"""Head-direction integration: heading increments in, von Mises head-direction cell code out."""

from __future__ import annotations

import math

import torch

from recircuit.spec import HeadDirectionTask
from recircuit.tasks.base import TrialBatch, sample_gains


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Angle wrapped to [-pi, pi)."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


class HeadDirection:
    """Heading on the ring; input = heading increment per step (rad); target = head-direction cell code."""

    kind = "head_direction"
    n_inputs = 1
    state_dims = 1
    error_units = "deg"
    state_names = ("heading",)

    def __init__(self, spec: HeadDirectionTask, device: str | torch.device = "cpu"):
        self.spec = spec
        self.device = torch.device(device)
        n = spec.hd_cells.n_cells
        # Evenly spaced preferred headings; the reference's linspace(-pi, pi, n) duplicates -pi and pi.
        self.preferred = (torch.arange(n, dtype=torch.float32) * (2 * math.pi / n) - math.pi).to(self.device)
        self.kappa = 1.0 / spec.hd_cells.width_rad**2
        self.n_cells = n
        if spec.turn_model == "iid":
            self.input_scale = spec.turn_sd_rad_per_s * spec.dt_s
        else:
            self.input_scale = spec.ar1_step_sd_rad / math.sqrt(1 - spec.ar1_momentum**2)

    def increments(self, batch_size: int, steps: int, generator: torch.Generator) -> torch.Tensor:
        """Heading increments per step (B, T), rad."""
        s, dev = self.spec, self.device
        if s.turn_model == "iid":
            turns = torch.randn(batch_size, steps, generator=generator, device=dev) * (s.turn_sd_rad_per_s * s.dt_s)
        else:
            innovations = torch.randn(batch_size, steps, generator=generator, device=dev) * s.ar1_step_sd_rad
            omega = innovations[:, 0] / math.sqrt(1 - s.ar1_momentum**2)  # start from the stationary distribution
            series = [omega]
            for eta in innovations[:, 1:].unbind(1):
                omega = s.ar1_momentum * omega + eta
                series.append(omega)
            turns = torch.stack(series, 1)
        return turns.abs() if s.turn_bias == "counter_clockwise" else turns

    def sample(self, batch_size: int, steps: int, generator: torch.Generator) -> TrialBatch:
        initial = (torch.rand(batch_size, generator=generator, device=self.device) * 2 - 1) * math.pi
        turns = self.increments(batch_size, steps, generator)
        headings = wrap_angle(initial[:, None] + torch.cumsum(turns, dim=1))
        gains = sample_gains(
            batch_size, steps, self.spec.input_gain.epsilon, self.spec.input_gain.segments, generator, self.device
        )
        return TrialBatch(
            inputs=(turns * gains)[..., None],
            targets=self.encode(headings[..., None]),
            states=headings[..., None],
            initial_state=initial[:, None],
            initial_code=self.encode(initial[:, None]),
            gains=gains,
        )

    def sample_many(self, batch_size: int, steps: int, generators: list[torch.Generator]) -> list[TrialBatch]:
        """One batch per generator, as ``sample`` with each (head direction has no per-step loop to share)."""
        return [self.sample(batch_size, steps, g) for g in generators]

    def encode(self, headings: torch.Tensor) -> torch.Tensor:
        """Von Mises code exp(kappa (cos(theta - theta_i) - 1)), peak 1; headings (..., 1) -> (..., n_cells)."""
        return torch.exp(self.kappa * (torch.cos(headings - self.preferred) - 1.0))

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Heading (rad, shape (..., 1)): circular mean of the preferred headings of the k most active outputs."""
        top = self.preferred[outputs.topk(self.spec.decode_top_k, dim=-1).indices]
        return torch.atan2(torch.sin(top).mean(-1), torch.cos(top).mean(-1))[..., None]

    def error(self, decoded: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Absolute circular decoding error, degrees."""
        return torch.rad2deg(wrap_angle(decoded - true).abs()).squeeze(-1)

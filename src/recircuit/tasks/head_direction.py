"""Head-direction integration: heading increments in, von Mises head-direction cell code out."""

from __future__ import annotations

import math

import torch

from recircuit.spec import HeadDirectionTask
from recircuit.tasks.base import Movement, TrialBatch, pauses, sample_batch, sample_gains


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
        self.preferred_vectors = torch.stack([torch.cos(self.preferred), torch.sin(self.preferred)])  # (2, n_cells)
        self.exponent_offset = torch.full((n,), -self.kappa, device=self.device)
        self.n_cells = n
        if spec.turn_model == "iid":
            self.input_scale = spec.turn_sd_rad_per_s * spec.dt_s
        else:
            self.input_scale = spec.ar1_step_sd_rad / math.sqrt(1 - spec.ar1_momentum**2)

    def draw(self, batch_size: int, steps: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """All the randomness of a batch, in a fixed order: initial heading (rad), turn draws, gains, pauses."""
        s, dev = self.spec, self.device
        initial = (torch.rand(batch_size, generator=generator, device=dev) * 2 - 1) * math.pi
        sd = s.turn_sd_rad_per_s * s.dt_s if s.turn_model == "iid" else s.ar1_step_sd_rad
        turn_draws = torch.randn(batch_size, steps, generator=generator, device=dev) * sd
        gains = sample_gains(batch_size, steps, s.input_gain.epsilon, s.input_gain.segments, generator, dev)
        draws = {"initial": initial, "turn_draws": turn_draws, "gains": gains}
        if s.pause_fraction > 0:  # drawn last, so that trials without pauses keep the draws they always had
            uniform = torch.rand(batch_size, steps, generator=generator, device=dev)
            draws["still"] = pauses(uniform, s.pause_fraction, s.pause_steps)
        return draws

    def increments(self, turn_draws: torch.Tensor) -> torch.Tensor:
        """Heading increments per step (B, T), rad: the iid draws, or the AR(1) series they drive."""
        s = self.spec
        if s.turn_model == "iid":
            turns = turn_draws
        else:
            omega = turn_draws[:, 0] / math.sqrt(1 - s.ar1_momentum**2)  # start from the stationary distribution
            series = [omega]
            for eta in turn_draws[:, 1:].unbind(1):
                omega = s.ar1_momentum * omega + eta
                series.append(omega)
            turns = torch.stack(series, 1)
        return turns.abs() if s.turn_bias == "counter_clockwise" else turns

    def move(self, draws: dict[str, torch.Tensor]) -> Movement:
        """Headings of ``draws``: inputs (increments times gains), headings, initial headings, gains."""
        initial, gains = draws["initial"], draws["gains"]
        turns = self.increments(draws["turn_draws"])
        if "still" in draws:
            turns = turns * ~draws["still"]
        headings = wrap_angle(initial[:, None] + torch.cumsum(turns, dim=1))
        return Movement((turns * gains)[..., None], headings[..., None], initial[:, None], gains)

    def sample(self, batch_size: int, steps: int, generator: torch.Generator) -> TrialBatch:
        return sample_batch(self, batch_size, steps, generator)

    def encode(self, headings: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Von Mises code exp(kappa (cos(theta - theta_i) - 1)), peak 1; headings (..., 1) -> (..., n_cells), written
        into ``out`` if given.

        cos(theta - theta_i) = cos theta cos theta_i + sin theta sin theta_i, so the exponent is one matrix product
        of (cos theta, sin theta) with the cells' unit vectors: no (..., n_cells) cosine or difference tensors.
        """
        flat = headings.reshape(-1, 1)
        direction = torch.cat([torch.cos(flat), torch.sin(flat)], dim=1)
        flat_out = out.view(-1, self.n_cells) if out is not None else None
        exponent = torch.addmm(self.exponent_offset, direction, self.preferred_vectors, alpha=self.kappa, out=flat_out)
        return exponent.clamp_(max=0.0).exp_().view(*headings.shape[:-1], self.n_cells)  # peak 1 despite rounding

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Heading (rad, shape (..., 1)): circular mean of the preferred headings of the k most active outputs."""
        top = self.preferred[outputs.topk(self.spec.decode_top_k, dim=-1).indices]
        return torch.atan2(torch.sin(top).mean(-1), torch.cos(top).mean(-1))[..., None]

    def error(self, decoded: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Absolute circular decoding error, degrees."""
        return torch.rad2deg(wrap_angle(decoded - true).abs()).squeeze(-1)

"""2-D path integration: the Sorscher et al. (2019) motion model, vectorised over trials, with place-cell targets."""

from __future__ import annotations

import math

import torch

from recircuit.spec import PathIntegrationTask
from recircuit.tasks.base import Movement, TrialBatch, pauses, sample_batch, sample_gains


class PathIntegration:
    """Agent in a square arena centred at 0; input = displacement per step (m); target = place-cell code."""

    kind = "path_integration"
    n_inputs = 2
    state_dims = 2
    error_units = "cm"
    state_names = ("x", "y")

    def __init__(self, spec: PathIntegrationTask, device: str | torch.device = "cpu"):
        self.spec = spec
        self.device = torch.device(device)
        layout = torch.Generator().manual_seed(spec.place_cells.layout_seed)
        half = spec.arena_m / 2
        self.centres = ((torch.rand(spec.place_cells.n_cells, 2, generator=layout) * 2 - 1) * half).to(self.device)
        self.n_cells = spec.place_cells.n_cells
        self.code_gain = spec.place_cells.code_gain
        self.centre_offsets = -0.5 * (self.centres**2).sum(-1)  # -|c|^2 / 2, per cell
        mean_speed = spec.speed_scale_m_per_s * math.sqrt(math.pi / 2)
        self.input_scale = mean_speed * spec.dt_s / math.sqrt(2)  # RMS of one displacement component, m

    def draw(self, batch_size: int, steps: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """All the randomness of a batch, in a fixed order: start, heading, step lengths (m), turns (rad), gains."""
        s, dev = self.spec, self.device
        half, dt = s.arena_m / 2, s.dt_s
        position = (torch.rand(batch_size, 2, generator=generator, device=dev) * 2 - 1) * half
        heading = torch.rand(batch_size, generator=generator, device=dev) * (2 * math.pi)
        uniform = torch.rand(batch_size, steps, generator=generator, device=dev)
        step_length = s.speed_scale_m_per_s * torch.sqrt(-2.0 * torch.log1p(-uniform)) * dt  # Rayleigh speed * dt
        random_turn = torch.randn(batch_size, steps, generator=generator, device=dev) * (s.turn_sd_rad_per_s * dt)
        gains = sample_gains(batch_size, steps, s.input_gain.epsilon, s.input_gain.segments, generator, dev)
        if s.pause_fraction > 0:  # drawn last, so that trials without pauses keep the draws they always had
            uniform = torch.rand(batch_size, steps, generator=generator, device=dev)
            step_length = step_length * ~pauses(uniform, s.pause_fraction, s.pause_steps)
        return {"position": position, "heading": heading, "step_length": step_length, "turn": random_turn,
                "gains": gains}

    def integrate(self, draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the agents: displacements (B, T, 2) m and positions after each step (B, T, 2) m.

        Near a wall (closer than border_region_m and heading towards it) the agent turns parallel to the wall and
        slows to a quarter of its speed. x and y are kept as separate (B,) tensors and stored into (T, B) buffers:
        per-step (B, 2) concatenations cost more than all the arithmetic of a step.
        """
        s = self.spec
        half, border, drift = s.arena_m / 2, s.border_region_m, s.drift_to_center
        x, y = (c.contiguous() for c in draws["position"].unbind(1))
        heading = draws["heading"]
        lengths, turns = draws["step_length"].T.contiguous(), draws["turn"].T.contiguous()
        steps = lengths.shape[0]
        xs, ys = torch.empty_like(lengths), torch.empty_like(lengths)
        dxs, dys = torch.empty_like(lengths), torch.empty_like(lengths)
        right, up, left, down = (torch.tensor(k * math.pi / 2, dtype=x.dtype, device=x.device) for k in range(4))
        for t in range(steps):
            ax, ay = x.abs(), y.abs()
            x_wall = ax >= ay  # the nearest wall is an x wall (x = +-half) or a y wall
            nearest = half - torch.maximum(ax, ay)
            wall_heading = torch.where(x_wall, torch.where(x < 0, left, right), torch.where(y < 0, down, up))
            angle_to_wall = torch.remainder(heading - wall_heading + math.pi, 2 * math.pi) - math.pi
            near_wall = (nearest < border) & (angle_to_wall.abs() < math.pi / 2)
            turn = torch.where(near_wall, torch.sign(angle_to_wall) * (math.pi / 2 - angle_to_wall.abs()), 0.0) + turns[t]
            length = torch.where(near_wall, 0.25 * lengths[t], lengths[t])
            dx, dy = length * torch.cos(heading), length * torch.sin(heading)
            if drift > 0:
                dx, dy = dx - drift * x, dy - drift * y
            x, y = x + dx, y + dy
            heading = heading + turn
            dxs[t], dys[t], xs[t], ys[t] = dx, dy, x, y
        return torch.stack([dxs.T, dys.T], dim=-1), torch.stack([xs.T, ys.T], dim=-1)

    def trajectories(
        self, batch_size: int, steps: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Displacements (B, T, 2) m, positions after each step (B, T, 2) m, initial positions (B, 2) m."""
        draws = self.draw(batch_size, steps, generator)
        displacements, positions = self.integrate(draws)
        return displacements, positions, draws["position"]

    def move(self, draws: dict[str, torch.Tensor]) -> Movement:
        """The agents of ``draws`` moved: inputs (displacements times gains), positions, start positions, gains."""
        displacements, positions = self.integrate(draws)
        gains = draws["gains"]
        return Movement(displacements * gains[..., None], positions, draws["position"], gains)

    def sample(self, batch_size: int, steps: int, generator: torch.Generator) -> TrialBatch:
        return sample_batch(self, batch_size, steps, generator)

    def encode(self, positions: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Place-cell code gain x softmax(-|x - c|^2 / (2 w^2)) over cells, shape (..., n_cells), written into ``out``
        if given.

        |x - c|^2 = |x|^2 - 2 x.c + |c|^2 and softmax ignores the |x|^2 term, constant over cells, so the logits
        are (x.c - |c|^2 / 2) / w^2: one matrix product instead of a (..., n_cells, 2) difference tensor.
        """
        inv_var = 1.0 / self.spec.place_cells.width_m**2
        flat = positions.reshape(-1, 2)
        logits = torch.addmm(self.centre_offsets, flat, self.centres.T, beta=inv_var, alpha=inv_var)
        shape = (*positions.shape[:-1], self.n_cells)
        code = torch.softmax(logits, dim=-1, out=None if out is None else out.view(-1, self.n_cells))
        if self.code_gain != 1.0:
            code.mul_(self.code_gain)
        return code.view(shape)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Position (m): mean centre of the k most active outputs."""
        top = outputs.topk(self.spec.decode_top_k, dim=-1).indices
        return self.centres[top].mean(dim=-2)

    def error(self, decoded: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Euclidean decoding error, cm."""
        return 100.0 * torch.linalg.vector_norm(decoded - true, dim=-1)

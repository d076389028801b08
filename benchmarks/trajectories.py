"""Path-integration trajectories: agent-steps per second of recircuit's generator vs a vectorised numpy baseline.

The baseline is the Sorscher et al. motion model written with numpy arrays over the batch (the 'vectorised numpy
generator, about 3e6 agent-steps/s' of the research notes); both run in this process on the same batch shape.
Prints the rates, then the ratio (recircuit / numpy) on the last line.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recircuit.spec import PathIntegrationTask
from recircuit.tasks import PathIntegration


def numpy_sorscher(batch: int, steps: int, rng: np.random.Generator, box: float = 2.2, dt: float = 0.02):
    """Sorscher et al.'s generator, vectorised over the batch with numpy (float64, as their code)."""
    half, border = box / 2, 0.03
    position = rng.uniform(-half, half, size=(batch, 2))
    heading = rng.uniform(0, 2 * np.pi, size=batch)
    speed = rng.rayleigh(0.13 * 2 * np.pi, size=(batch, steps))
    turn = rng.normal(0, 11.52, size=(batch, steps))
    positions = np.empty((batch, steps, 2))
    for t in range(steps):
        x, y = position[:, 0], position[:, 1]
        distances = np.stack([half - x, half - y, half + x, half + y], axis=1)
        wall = distances.argmin(1)
        nearest = distances[np.arange(batch), wall]
        angle = np.remainder(heading - wall * np.pi / 2 + np.pi, 2 * np.pi) - np.pi
        near = (nearest < border) & (np.abs(angle) < np.pi / 2)
        d_heading = np.where(near, np.sign(angle) * (np.pi / 2 - np.abs(angle)), 0.0) + dt * turn[:, t]
        v = np.where(near, 0.25 * speed[:, t], speed[:, t]) * dt
        position = position + v[:, None] * np.stack([np.cos(heading), np.sin(heading)], axis=1)
        heading = heading + d_heading
        positions[:, t] = position
    return positions


def best_rate(fn, agent_steps: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return agent_steps / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = PathIntegration(PathIntegrationTask())
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    ours = best_rate(lambda: task.trajectories(args.batch, args.steps, generator), n, args.repeats)
    baseline = best_rate(lambda: numpy_sorscher(args.batch, args.steps, rng), n, args.repeats)
    print(f"batch {args.batch} x {args.steps} steps, {args.threads} thread(s)")
    print(f"recircuit (torch, float32): {ours:.3e} agent-steps/s   target >= 1e7: {'pass' if ours >= 1e7 else 'FAIL'}")
    print(f"numpy baseline (float64):   {baseline:.3e} agent-steps/s")
    print(f"ratio {ours / baseline:.2f}")


if __name__ == "__main__":
    main()

"""The reference's path-integration model and KL analysis, written independently of recircuit.

A cross-check for docs/results.md ("The reference's model, implemented independently"): a second implementation of
the model, training and offline KL of Krishna et al. (ICLR 2024) that shares no code with the library, written from
the description in shared/research/reactivation.md (sections 1.2, 1.3, 2.1 and 3). If the library's circuits fail
the paper's KL ordering and this model fails it too, the failure is not the library's. It is deliberately plain:
ReLU units without biases, h_t = (1 - a) h_{t-1} + a relu(W h_{t-1} + W_in x_t) + sd U[0,1) (the reference code's
uniform noise, not scaled by sqrt dt; `--noise gaussian`: sd N(0, 1), zero mean), a linear encoder of the start's
place-cell code, 512 softmax place cells (0.2 m), MSE on that code, Adam at lr 1e-3, PyTorch's default
initialisation; offline, zero input from the same starts as the waking test batch with the noise raised
sqrt(2)-fold, positions decoded from the top 3 outputs, Gaussian KDEs on all points and KL(offline || awake) by
Monte Carlo over 2500 offline samples.

    python docs/checks/reference_model.py train --out DIR/noisy --seed 0            # 512 units: ~70 min, 1 core
    python docs/checks/reference_model.py train --out DIR/noise_free --seed 0 --sd 0
    python docs/checks/reference_model.py analyse DIR/noisy/model.pt DIR/noise_free/model.pt --out DIR/kl.json

Needs torch, numpy and scipy only. Not part of the package; the library never imports it.
"""

import argparse
import json
import math
import pathlib
import time

import numpy as np
import torch
from scipy import stats

ARENA_M = 2.2
STEP_S = 0.02


def trajectories(rng: np.random.Generator, batch: int, steps: int, drift_to_centre: float = 0.0):
    """Sorscher-style random walks in the square arena: per-step displacements (batch, steps, 2) in m, the start
    positions (batch, 2) and the positions after each step (batch, steps, 2)."""
    half = ARENA_M / 2
    position = np.zeros((batch, steps + 2, 2))
    heading = np.zeros((batch, steps + 2))
    position[:, 0] = rng.uniform(-half, half, (batch, 2))
    heading[:, 0] = rng.uniform(0, 2 * np.pi, batch)
    turns_rad_per_s = rng.normal(0.0, 11.52, (batch, steps + 1))
    speeds_m_per_s = rng.rayleigh(0.26 * np.pi, (batch, steps + 1))
    displacement = np.zeros((batch, steps + 2, 2))
    for t in range(steps + 1):
        x, y = position[:, t, 0], position[:, t, 1]
        wall_distances = np.stack([half - x, half - y, half + x, half + y])
        nearest = np.argmin(wall_distances, axis=0)
        angle_to_wall = np.mod(np.mod(heading[:, t], 2 * np.pi) - nearest * np.pi / 2 + np.pi, 2 * np.pi) - np.pi
        near_wall = (wall_distances.min(axis=0) < 0.03) & (np.abs(angle_to_wall) < np.pi / 2)
        speed = speeds_m_per_s[:, t].copy()
        speed[near_wall] *= 0.25
        turn = np.where(near_wall, np.sign(angle_to_wall) * (np.pi / 2 - np.abs(angle_to_wall)), 0.0)
        turn = turn + STEP_S * turns_rad_per_s[:, t]
        step = (speed * STEP_S)[:, None] * np.stack([np.cos(heading[:, t]), np.sin(heading[:, t])], -1)
        if drift_to_centre:
            step = step - drift_to_centre * position[:, t]
        displacement[:, t] = step
        position[:, t + 1] = position[:, t] + step
        heading[:, t + 1] = heading[:, t] + turn
    return displacement[:, 1:-1], position[:, 1], position[:, 2:]


class ReferenceRNN(torch.nn.Module):
    """The reference's leaky ReLU network without biases; noise sd x U[0,1) (the reference code's) or sd x N(0, 1)
    (noise="gaussian") added to the state each step."""

    def __init__(
        self, n_units: int = 512, n_cells: int = 512, noise_sd: float = 0.0, alpha: float = 0.2, noise: str = "uniform"
    ):
        super().__init__()
        self.encoder = torch.nn.Linear(n_cells, n_units, bias=False)
        self.input = torch.nn.Linear(2, n_units, bias=False)
        self.recurrent = torch.nn.Linear(n_units, n_units, bias=False)
        self.readout = torch.nn.Linear(n_units, n_cells, bias=False)
        self.noise_sd, self.alpha = noise_sd, alpha
        self.draw = {"uniform": torch.rand, "gaussian": torch.randn}[noise]

    def forward(self, displacement, start_code, generator, noise_sd=None):
        """Place-cell outputs (batch, time, cells) for displacements (batch, time, 2) from the start's code."""
        noise_sd = self.noise_sd if noise_sd is None else noise_sd
        h = self.encoder(start_code)
        drive = self.input(displacement).unbind(1)
        states = []
        for drive_t in drive:
            h = (1 - self.alpha) * h + self.alpha * torch.relu(self.recurrent(h) + drive_t)
            if noise_sd > 0:
                h = h + noise_sd * self.draw(h.shape, generator=generator)
            states.append(h)
        return self.readout(torch.stack(states, 1))


def place_code(position, centres, width_m: float = 0.2):
    """Softmax place-cell code of positions (..., 2) in m over cells centred at centres (cells, 2)."""
    squared = ((position[..., None, :] - centres) ** 2).sum(-1)
    return torch.softmax(-squared / (2 * width_m**2), dim=-1)


def decode(outputs, centres, k: int = 3):
    """Position (m): the mean centre of the k most active output cells."""
    return centres[torch.topk(outputs, k, dim=-1).indices].mean(-2)


def seeded_network(seed: int, **kwargs) -> ReferenceRNN:
    """A ReferenceRNN with PyTorch's default initialisation drawn from seed, leaving the global RNG as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ReferenceRNN(**kwargs)


def train(args) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    centres = torch.tensor(rng.uniform(-ARENA_M / 2, ARENA_M / 2, (512, 2)), dtype=torch.float32)
    network = seeded_network(args.seed, n_units=args.units, noise_sd=args.sd, noise=args.noise)
    optimiser = torch.optim.Adam(network.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed + 1000)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for step in range(1, args.steps + 1):
        displacement, start, position = trajectories(rng, args.batch, args.sequence_steps, args.drift_to_centre)
        displacement = torch.tensor(displacement, dtype=torch.float32)
        position = torch.tensor(position, dtype=torch.float32)
        outputs = network(displacement, place_code(torch.tensor(start, dtype=torch.float32), centres), generator)
        loss = torch.nn.functional.mse_loss(outputs, place_code(position, centres))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 50 == 0 or step == 1:
            with torch.no_grad():
                error_cm = 100 * (decode(outputs, centres) - position).norm(dim=-1).mean().item()
            elapsed_s = time.time() - started
            print(f"step {step} loss {loss.item():.3e} error {error_cm:.1f} cm  {elapsed_s:.0f} s", flush=True)
    state = {"state": network.state_dict(), "centres": centres, "sigma": args.sd, "units": args.units,
             "noise": args.noise}
    torch.save(state, out / "model.pt.tmp")
    (out / "model.pt.tmp").replace(out / "model.pt")


def monte_carlo_kl(awake_kde, offline_kde, n: int, seed: int) -> float:
    """KL(offline || awake) in nat: mean log(q / p) over n samples of the offline KDE q, the ratio clipped to
    [1e-7, 1e7] as the reference does."""
    points = offline_kde.resample(n, seed=seed)
    return float(np.log((offline_kde.pdf(points) / awake_kde.pdf(points)).clip(1e-7, 1e7)).mean())


def analyse(args) -> None:
    torch.set_num_threads(2)
    missing = [path for path in args.models if not pathlib.Path(path).is_file()]
    if missing:
        raise SystemExit(f"analyse: {', '.join(missing)} not found (train the networks first)")
    paths = dict(zip(["noisy", "noise_free"], args.models))
    runs = {name: torch.load(path) for name, path in paths.items()}
    for name, run in runs.items():
        if not isinstance(run, dict) or not {"state", "centres", "sigma"} <= run.keys():
            raise SystemExit(f"analyse: {paths[name]} is not a model written by this script's train")
    centres = runs["noisy"]["centres"]
    n_units = runs["noisy"].get("units", 512)
    offline_sd = runs["noisy"]["sigma"] * math.sqrt(2)  # the noisy network's training noise, raised as offline
    noise = runs["noisy"].get("noise", "uniform")  # its law, for every network offline
    result = {"noise": noise}
    displacement, start, position = trajectories(np.random.default_rng(12345), args.trials, args.sequence_steps)
    displacement = torch.tensor(displacement, dtype=torch.float32)
    start_code = place_code(torch.tensor(start, dtype=torch.float32), centres)
    offline_input = torch.zeros(args.trials, args.offline_steps, 2)
    generator = torch.Generator().manual_seed(7)
    awake, offline = {}, {}
    with torch.no_grad():
        for name, run in runs.items():
            sd = run["sigma"]
            network = ReferenceRNN(n_units=run.get("units", 512), noise_sd=sd, noise=noise)
            try:
                network.load_state_dict(run["state"])
            except RuntimeError as error:
                raise SystemExit(f"analyse: {paths[name]} is not this script's network: {error}")
            awake[name] = decode(network(displacement, start_code, generator), centres).numpy()
            offline[name] = decode(network(offline_input, start_code, generator, sd * math.sqrt(2)), centres).numpy()
            result[f"waking_error_cm_{name}"] = 100 * float(np.linalg.norm(awake[name] - position, axis=-1).mean())
            if sd > 0:  # the noisy circuit offline with its training noise, and with none
                offline["noisy_same"] = decode(network(offline_input, start_code, generator, sd), centres).numpy()
                offline["noisy_noise_off"] = decode(network(offline_input, start_code, generator, 0.0), centres).numpy()
            else:  # the noise-free circuit given the noise only offline
                outputs = network(offline_input, start_code, generator, offline_sd)
                offline["noise_free+offline_noise"] = decode(outputs, centres).numpy()
        untrained = seeded_network(99, n_units=n_units, noise=noise)
        outputs = untrained(offline_input, start_code, generator, offline_sd)
        offline["untrained"] = decode(outputs, centres).numpy()
    edges = np.linspace(-1.2, 1.2, 25)  # 0.1 m bins, 0.1 m beyond the walls
    awake_kde = {name: stats.gaussian_kde(points.reshape(-1, 2).T) for name, points in awake.items()}
    awake_bins = np.histogram2d(*awake["noisy"].reshape(-1, 2).T, bins=[edges, edges])[0] > 0
    for burn_in in (0, 100):
        for name, points in offline.items():
            window = points[:, burn_in:].reshape(-1, 2)
            kls = [monte_carlo_kl(awake_kde["noisy"], stats.gaussian_kde(window.T), 2500, seed) for seed in range(3)]
            result[f"KL_burn{burn_in}[{name}||noisy]"] = (float(np.mean(kls)), float(np.std(kls)))
            offline_bins = np.histogram2d(*window.T, bins=[edges, edges])[0] > 0
            result[f"coverage_burn{burn_in}_{name}"] = float((offline_bins & awake_bins).sum() / awake_bins.sum())
    uniform = np.random.default_rng(3).uniform(-ARENA_M / 2, ARENA_M / 2, (2, 20000))
    for name, kde in awake_kde.items():  # the joint uniform density over the arena, not the per-axis one
        result[f"KL_uniform||{name}"] = float(np.mean(np.log((1 / ARENA_M**2) / kde.pdf(uniform)).clip(-16, 16)))
    for name, points in offline.items():
        result[f"centre_dist_{name}"] = float(np.linalg.norm(points[:, 100:], axis=-1).mean())  # steps 101-
        result[f"moved_{name}"] = float(np.sqrt(((points[:, -1] - points[:, 0]) ** 2).sum(-1).mean()))
    result["centre_dist_awake"] = float(np.linalg.norm(awake["noisy"], axis=-1).mean())
    text = json.dumps(result, indent=1)
    print(text)
    out = pathlib.Path(args.out)
    partial = out.with_name(out.name + ".tmp")
    partial.write_text(text)
    partial.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train one network; writes OUT/model.pt")
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--sd", type=float, default=0.01, help="training noise sd (the reference's sqrt(1e-4)); 0: none")
    t.add_argument("--noise", choices=["uniform", "gaussian"], default="uniform",
                   help="uniform: sd x U[0,1), the reference code's; gaussian: sd x N(0, 1), zero mean")
    t.add_argument("--units", type=int, default=512)
    t.add_argument("--steps", type=int, default=2500)
    t.add_argument("--batch", type=int, default=200)
    t.add_argument("--sequence-steps", type=int, default=100)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--drift-to-centre", type=float, default=0.0, help="0.05: the centre-biased variant")
    a = commands.add_parser("analyse", help="offline KL of a noisy and a noise-free network; writes a JSON file")
    a.add_argument("models", nargs=2, metavar="MODEL", help="the noisy network's model.pt, then the noise-free one's")
    a.add_argument("--out", required=True)
    a.add_argument("--offline-steps", type=int, default=1000)
    a.add_argument("--trials", type=int, default=200, help="waking test trials, and offline starts")
    a.add_argument("--sequence-steps", type=int, default=100, help="length of the waking test trials")
    args = parser.parse_args()
    train(args) if args.command == "train" else analyse(args)


if __name__ == "__main__":
    main()

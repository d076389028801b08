"""Held-out waking evaluation: fixed-seed trajectories, decoded path, error over time, hidden rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr

from recircuit.circuit.io import load_model
from recircuit.learning.train import device_description, error_variable, resolve_device
from recircuit.results import label, provenance, save_dataset, with_sweep_dims

WAKING_FILE = "waking.nc"


def unit_coords(n_exc: int, n_inh: int, dale: bool) -> dict[str, xr.DataArray]:
    """`unit` index and its `population` label (E, I, or 'unconstrained' without Dale's law)."""
    n = n_exc + n_inh
    population = np.array(["E"] * n_exc + ["I"] * n_inh) if dale else np.array(["unconstrained"] * n)
    return {
        "unit": label(xr.DataArray(np.arange(n), dims="unit"), "recurrent unit", "1"),
        "population": label(xr.DataArray(population, dims="unit"), "population of the unit", "1"),
    }


def state_variables(kind: str, name: str, values: np.ndarray, what: str) -> dict[str, xr.DataArray]:
    """Position (m) along a `space` dim for path integration; heading (rad) for head direction."""
    if kind == "path_integration":
        return {f"{name}_position": label(xr.DataArray(values, dims=("trial", "time", "space")), f"{what} position", "m")}
    return {f"{name}_heading": label(xr.DataArray(values[..., 0], dims=("trial", "time")), f"{what} heading", "rad")}


@torch.no_grad()
def evaluate(run_dir: str | Path, out: str | Path | None = None, device: str = "auto") -> Path:
    """Run the trained circuit of ``run_dir`` on held-out trajectories (evaluation.seed) and write waking.nc."""
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model = load_model(run_dir, dev)
    spec, task = model.spec, model.task
    ev = spec.evaluation
    steps = ev.sequence_steps or spec.task.sequence_steps
    generator = torch.Generator(dev).manual_seed(ev.seed)
    trials = task.sample(ev.n_trials, steps, generator)
    noise = model.draw_noise(ev.n_trials, steps, generator)
    outputs, rates = model(trials.inputs, trials.initial_code, noise)
    decoded = task.decode(outputs)
    error = task.error(decoded, trials.states).cpu().numpy()
    chance = task.error(trials.states[torch.roll(torch.arange(ev.n_trials), 1)], trials.states).cpu().numpy()
    error_name, error_long, error_units = error_variable(task.kind)

    n_rates = min(ev.n_trials_with_rates, ev.n_trials)
    dt = spec.task.dt_s
    data = {
        **state_variables(task.kind, "true", trials.states.cpu().numpy(), "true"),
        **state_variables(task.kind, "decoded", decoded.cpu().numpy(), "decoded"),
        error_name: label(xr.DataArray(error, dims=("trial", "time")), error_long, error_units),
        **(
            {"displacement": label(xr.DataArray(trials.inputs.cpu().numpy(), dims=("trial", "time", "space")),
                                   "self-motion input: displacement per step (gain applied)", "m")}
            if task.kind == "path_integration"
            else {"heading_increment": label(xr.DataArray(trials.inputs[..., 0].cpu().numpy(), dims=("trial", "time")),
                                             "self-motion input: heading increment per step (gain applied)", "rad")}
        ),
        "rates": label(
            xr.DataArray(rates[:n_rates].cpu().numpy(), dims=("rate_trial", "time", "unit")),
            "hidden unit rates (first trials)",
            "1",
        ),
    }
    coords = {
        "trial": label(xr.DataArray(np.arange(ev.n_trials), dims="trial"), "held-out trial", "1"),
        "time": label(xr.DataArray((np.arange(steps) + 1) * dt, dims="time"), "time since trial start", "s"),
        "rate_trial": label(xr.DataArray(np.arange(n_rates), dims="rate_trial"), "trial with saved rates", "1"),
        **unit_coords(model.n_exc, model.n_inh, model.dale),
    }
    if task.kind == "path_integration":
        coords["space"] = label(xr.DataArray(["x", "y"], dims="space"), "spatial axis", "1")
    meta = model.meta
    rmse = float(np.sqrt(np.mean(error**2)))
    attrs = {
        **provenance(spec, circuit=meta["circuit"], variant=meta["variant"], seed=meta["seed"], device=device_description(dev)),
        "evaluation_seed": ev.seed,
        f"mean_{error_name}_{error_units}": float(error.mean()),
        f"rmse_{error_name}_{error_units}": rmse,
        f"chance_mean_{error_name}_{error_units}": float(chance.mean()),
        f"chance_rmse_{error_name}_{error_units}": float(np.sqrt(np.mean(chance**2))),
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    ds = with_sweep_dims(ds, circuit=meta["circuit"], variant=meta["variant"], seed=meta["seed"])
    return save_dataset(ds, Path(out) if out else run_dir / WAKING_FILE)

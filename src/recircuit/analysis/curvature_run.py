"""Hessian spectrum and generalization gap of a trained run -> curvature.nc (`recircuit curvature RUN_DIR`).

curvature.nc layout (one run; ``recircuit collect`` combines runs along the length-1 sweep dims):

- dims ``circuit``, ``variant``, ``seed`` (length 1) and ``shift`` (none, longer, faster, larger_arena, noisier;
  larger_arena only for path integration);
- coordinate ``rule(circuit, variant, seed)``: the run's training.rule (a variant usually sets it), so a collected
  file has dims (circuit, variant, seed, shift) and ``ds.rule`` gives each run's rule;
- per run: top_eigenvalue, bottom_eigenvalue (signed, Lanczos), hessian_trace and hessian_trace_se (Hutchinson),
  n_hvp_top / n_hvp_bottom / n_hvp_trace, n_hessian_parameters, hessian_loss (loss at the Hessian batch),
  train_loss, train_<error> (<error> = position_error or heading_error, so tasks combine);
- per run and shift: test_loss, test_<error>, generalization_gap (= test_loss - train_loss), <error>_gap and
  shift_factor. The shift coordinate always holds all five shifts in a fixed order, so files from different tasks
  combine; a shift that was not run (larger_arena for head direction, or left out of curvature.shifts) is NaN.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from recircuit.analysis.curvature import (
    REPARAMETRISATION_NOTE,
    exact_loss_operator,
    extreme_eigenvalue,
    hutchinson_trace,
)
from recircuit.analysis.generalization import SHIFTS, generalization
from recircuit.circuit.io import load_model
from recircuit.learning.train import device_description, error_variable, resolve_device, training_set
from recircuit.results import label, provenance, save_dataset, with_sweep_dims
from recircuit.spec import CircuitSpec, with_section_overrides

CURVATURE_FILE = "curvature.nc"
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def curvature_spec_overrides(spec: CircuitSpec, overrides: list[str]) -> CircuitSpec:
    """``spec`` with dotted ``curvature.*`` overrides applied (other sections describe the trained model: refused)."""
    return with_section_overrides(spec, overrides, ("curvature",))


def hessian_batch(spec: CircuitSpec, device: torch.device):
    """The fixed Hessian batch: first n_eval_trials of the training set, or fresh trajectories from eval_seed."""
    cfg = spec.curvature
    if cfg.hessian_data == "training_set" and spec.training.n_train_trajectories is not None:
        trials = training_set(spec, device=device)
        n = min(cfg.n_eval_trials, spec.training.n_train_trajectories)
        return type(trials)(**{k: getattr(trials, k)[:n] for k in trials.__dataclass_fields__}), "training_set"
    from recircuit.tasks import make_task

    task = make_task(spec.task, device)
    generator = torch.Generator(device).manual_seed(cfg.eval_seed)
    trials = task.sample(cfg.n_eval_trials, spec.task.sequence_steps, generator)
    return trials, "fresh"


def measure_curvature(
    model, spec: CircuitSpec, device: torch.device, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Signed extreme eigenvalues, Hutchinson trace and their HVP counts for the exact loss of ``model``; one progress
    line per quantity."""
    cfg = spec.curvature
    trials, source = hessian_batch(spec, device)
    n, steps = trials.inputs.shape[:2]
    noise = model.draw_noise(n, steps, torch.Generator(device).manual_seed(cfg.noise_seed))
    op = exact_loss_operator(
        model, trials, noise, spec.training.loss, cfg.parameters, cfg.hvp_mode, DTYPES[cfg.dtype]
    )
    log(f"Hessian of the exact loss over {op.size} parameters ({', '.join(cfg.parameters)}), {n} {source} trials "
        f"x {steps} steps, {cfg.dtype}")
    t0 = time.perf_counter()
    top = extreme_eigenvalue(op, "LA", cfg.lanczos_tol, cfg.lanczos_ncv, seed=cfg.eval_seed)
    log(f"  top eigenvalue    {top.value: .6e}  ({top.n_hvp} HVPs, {time.perf_counter() - t0:.1f} s)")
    t1 = time.perf_counter()
    bottom = extreme_eigenvalue(
        op, "SA", cfg.lanczos_tol, cfg.lanczos_ncv_bottom, seed=cfg.eval_seed, shift=top.value
    )
    log(f"  bottom eigenvalue {bottom.value: .6e}  ({bottom.n_hvp} HVPs, {time.perf_counter() - t1:.1f} s)")
    t1 = time.perf_counter()
    trace, trace_se, _ = hutchinson_trace(op, cfg.hutchinson_probes, seed=cfg.eval_seed)
    log(f"  trace             {trace: .6e} +- {trace_se:.1e}  ({cfg.hutchinson_probes} HVPs, "
        f"{time.perf_counter() - t1:.1f} s)")
    return {
        "top": top, "bottom": bottom, "trace": trace, "trace_se": trace_se, "n_hvp_trace": cfg.hutchinson_probes,
        "n_parameters": op.size, "hessian_loss": op.value(), "source": source, "n_trials": n,
        "wall_s": time.perf_counter() - t0,
    }


def curvature_dataset(
    model, spec: CircuitSpec, meta: dict, device: torch.device, log: Callable[[str], None] = print
) -> xr.Dataset:
    """The curvature.nc dataset of one trained run (layout in the module docstring); progress lines go to ``log``."""
    curv = measure_curvature(model, spec, device, log)
    t0 = time.perf_counter()
    gen = generalization(model, spec, device)
    log(f"generalization ({time.perf_counter() - t0:.1f} s): training-set loss {gen['train_loss']:.4e}; gap (test - "
        "train loss) " + ", ".join(f"{name} {gap:+.3e}" for name, gap in zip(gen["shifts"], gen["gap"])))
    error_name, error_long, error_units = error_variable(spec.task.kind)
    scalar = lambda value, long_name, units: label(xr.DataArray(value), long_name, units)  # noqa: E731

    def per_shift(key: str, long_name: str, units: str) -> xr.DataArray:
        """Over all SHIFTS (same coordinate in every file, so runs combine); NaN where a shift was not run."""
        values = np.full(len(SHIFTS), np.nan)
        for name, value in zip(gen["shifts"], gen[key]):
            values[SHIFTS.index(name)] = value
        return label(xr.DataArray(values, dims="shift"), long_name, units)

    data = {
        "top_eigenvalue": scalar(curv["top"].value, "largest Hessian eigenvalue (signed, Lanczos)", "1"),
        "bottom_eigenvalue": scalar(curv["bottom"].value, "smallest Hessian eigenvalue (signed, Lanczos)", "1"),
        "hessian_trace": scalar(curv["trace"], "Hessian trace (Hutchinson, Rademacher probes)", "1"),
        "hessian_trace_se": scalar(curv["trace_se"], "standard error of the Hutchinson trace", "1"),
        "n_hvp_top": scalar(curv["top"].n_hvp, "Hessian-vector products for the top eigenvalue", "1"),
        "n_hvp_bottom": scalar(curv["bottom"].n_hvp, "Hessian-vector products for the bottom eigenvalue", "1"),
        "n_hvp_trace": scalar(curv["n_hvp_trace"], "Hessian-vector products for the trace", "1"),
        "n_hessian_parameters": scalar(curv["n_parameters"], "free parameters the Hessian is taken over", "1"),
        "hessian_loss": scalar(curv["hessian_loss"], "exact task loss on the Hessian batch", "1"),
        "train_loss": scalar(gen["train_loss"], "exact task loss on the training set", "1"),
        f"train_{error_name}": scalar(gen["train_error"], f"{error_long} on the training set", error_units),
        "test_loss": per_shift("test_loss", "exact task loss on shifted test trials", "1"),
        f"test_{error_name}": per_shift("test_error", f"{error_long} on shifted test trials", error_units),
        "generalization_gap": per_shift("gap", "generalization gap: test loss - training-set loss", "1"),
        f"{error_name}_gap": per_shift("error_gap", "decoded error gap: test error - training-set error", error_units),
        "shift_factor": per_shift("factor", "factor of the shifted quantity (1 = none; NaN = not run)", "1"),
    }
    coords = {"shift": label(xr.DataArray(np.asarray(SHIFTS, dtype=object), dims="shift"), "test condition", "1")}
    cfg, training = spec.curvature, spec.training
    attrs = {
        **provenance(spec, circuit=meta["circuit"], variant=meta["variant"], seed=meta["seed"],
                     device=device_description(device)),
        "rule": training.rule,
        "tbptt_window_steps": training.tbptt_window_steps,
        "n_train_trajectories": training.n_train_trajectories if training.n_train_trajectories is not None else -1,
        "optimizer": "Adam",
        "learning_rate": training.learning_rate,
        "weight_decay": training.weight_decay,
        "loss_function": f"recircuit.learning.train.task_loss ({training.loss}); exact BPTT forward, no L2 term "
        "(Adam weight_decay would add weight_decay to every eigenvalue)",
        "hessian_parameters": ",".join(cfg.parameters),
        "hessian_reparametrisation": REPARAMETRISATION_NOTE,
        "hessian_data": curv["source"],
        "hessian_n_trials": curv["n_trials"],
        "hessian_dtype": cfg.dtype,
        "hvp_mode": cfg.hvp_mode,
        "eigen_method": f"scipy.sparse.linalg.eigsh (ARPACK Lanczos) which=LA/SA, tol {cfg.lanczos_tol}, "
        f"ncv {cfg.lanczos_ncv} (bottom: {cfg.lanczos_ncv_bottom}), seeded start vector; the bottom eigenvalue on "
        "H - top I (accurate to tol x (top - bottom))",
        "trace_method": f"Hutchinson, {cfg.hutchinson_probes} fixed Rademacher probes, mean +- sd/sqrt(probes)",
        "eval_seed": cfg.eval_seed,
        "noise_seed": cfg.noise_seed,
        "test_seed": cfg.test_seed,
        "n_test_trials": cfg.n_test_trials,
        "hessian_wall_time_s": curv["wall_s"],
        "known_shifts": ",".join(SHIFTS),
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    ds = with_sweep_dims(ds, circuit=meta["circuit"], variant=meta["variant"], seed=meta["seed"])
    rule = xr.DataArray(np.full((1, 1, 1), training.rule, dtype=object), dims=("circuit", "variant", "seed"))
    ds = ds.assign_coords(rule=label(rule, "credit-assignment rule of training", "1"))
    return ds


def analyse_run(run_dir: str | Path, out: str | Path | None = None, device: str = "auto",
                overrides: list[str] | None = None, log: Callable[[str], None] = print) -> Path:
    """Measure the curvature and generalization gap of the trained run in ``run_dir``; write curvature.nc."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    dev = resolve_device(device)
    model = load_model(run_dir, dev)
    spec = curvature_spec_overrides(model.spec, list(overrides or []))
    meta = model.meta
    log(f"curvature of {run_dir} (rule {spec.training.rule}) on {device_description(dev)}")
    ds = curvature_dataset(model, spec, meta, dev, log)
    ran = np.isfinite(ds["shift_factor"].values).reshape(-1)
    bad = [
        n for n, v in ds.data_vars.items()
        if not np.isfinite(v.values[..., ran] if "shift" in v.dims else v.values).all()
    ]
    if bad:
        raise RuntimeError(f"{run_dir}: non-finite curvature results in {', '.join(bad)}")
    return save_dataset(ds, Path(out) if out else run_dir / CURVATURE_FILE)

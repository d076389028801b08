"""Generalization gap of a trained circuit: training-set loss vs test loss under distribution shifts.

gap(shift) = L_test(shift) - L_train. L_train is the exact loss (``task_loss``, as in training) on the training set
(the K fixed trajectories of training.n_train_trajectories; with fresh-trajectory training, n_test_trials
trajectories from the same training-set generator), with noise drawn from curvature.noise_seed. L_test is the loss
on n_test_trials fresh trajectories (curvature.test_seed) with noise from the same noise seed. Shifts:

- ``none``: the training distribution (the IID gap; about 0 by construction without a finite training set);
- ``longer``: sequences longer by curvature.longer_factor (x2);
- ``faster``: path integration: Rayleigh speed scale x speed_factor; head direction: turn SD (iid) or the AR(1)
  innovation SD x speed_factor (x1.5), i.e. angular velocity x1.5;
- ``larger_arena``: path integration only (skipped for head direction): trajectories in an arena x arena_factor
  (x1.5) while the place-cell centres (targets and decoder) stay the *trained* ones;
- ``noisier``: recurrent (and input) noise SD x noise_factor (x2); the same as ``none`` for a noise-free circuit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recircuit.circuit.network import EICircuit, Noise
from recircuit.learning.train import task_loss, training_set
from recircuit.spec import CircuitSpec
from recircuit.tasks import Task, TrialBatch, make_task

SHIFTS = ("none", "longer", "faster", "larger_arena", "noisier")


@dataclass(frozen=True)
class Shift:
    """A test condition: its name, its factor (1 for none), the task that samples it, steps and noise scale."""

    name: str
    factor: float
    task: Task
    steps: int
    noise_scale: float


def applicable_shifts(spec: CircuitSpec) -> list[str]:
    """The shifts of spec.curvature.shifts that apply to the task (larger_arena only to path integration)."""
    return [s for s in spec.curvature.shifts if not (s == "larger_arena" and spec.task.kind != "path_integration")]


def make_shift(spec: CircuitSpec, name: str, trained_task: Task, device: str | torch.device = "cpu") -> Shift:
    """The shifted test condition ``name`` of a circuit trained on ``spec``."""
    cfg, task_spec, steps = spec.curvature, spec.task, spec.task.sequence_steps
    if name == "none":
        return Shift(name, 1.0, trained_task, steps, 1.0)
    if name == "longer":
        return Shift(name, cfg.longer_factor, trained_task, int(round(steps * cfg.longer_factor)), 1.0)
    if name == "noisier":
        return Shift(name, cfg.noise_factor, trained_task, steps, cfg.noise_factor)
    if name == "faster":
        if task_spec.kind == "path_integration":
            update = {"speed_scale_m_per_s": task_spec.speed_scale_m_per_s * cfg.speed_factor}
        elif task_spec.turn_model == "iid":
            update = {"turn_sd_rad_per_s": task_spec.turn_sd_rad_per_s * cfg.speed_factor}
        else:
            update = {"ar1_step_sd_rad": task_spec.ar1_step_sd_rad * cfg.speed_factor}
        task = _with_trained_code(task_spec.model_copy(update=update), trained_task, device)
        return Shift(name, cfg.speed_factor, task, steps, 1.0)
    if name == "larger_arena":
        if task_spec.kind != "path_integration":
            raise ValueError("the larger_arena shift applies to path integration only")
        shifted = task_spec.model_copy(update={"arena_m": task_spec.arena_m * cfg.arena_factor})
        return Shift(name, cfg.arena_factor, _with_trained_code(shifted, trained_task, device), steps, 1.0)
    raise ValueError(f"unknown shift {name!r}; known: {', '.join(SHIFTS)}")


def _with_trained_code(task_spec, trained_task: Task, device) -> Task:
    """A task sampling the shifted trajectories but encoding/decoding with the trained cells (same centres)."""
    task = make_task(task_spec, device)
    if task_spec.kind == "path_integration":
        task.centres = trained_task.centres.to(task.device)  # centres depend on arena_m: keep the trained ones
    return task


def _cast(trials: TrialBatch, dtype: torch.dtype) -> TrialBatch:
    return TrialBatch(**{k: getattr(trials, k).to(dtype) for k in TrialBatch.__dataclass_fields__})


@torch.no_grad()
def loss_and_error(
    model: EICircuit, task: Task, trials: TrialBatch, noise: Noise, loss_kind: str
) -> tuple[float, float]:
    """(exact loss, mean decoded error in the task's units) of ``model`` on ``trials`` with the given noise."""
    outputs, _ = model(trials.inputs, trials.initial_code, noise)
    loss = float(task_loss(outputs, trials.targets, loss_kind))
    error = float(task.error(task.decode(outputs), trials.states).mean())
    return loss, error


def evaluation_set(spec: CircuitSpec, device: str | torch.device = "cpu") -> TrialBatch:
    """The training set (K fixed trajectories), or n_test_trials trajectories of the training-set generator."""
    n = spec.training.n_train_trajectories or spec.curvature.n_test_trials
    return training_set(spec, n, device)


def generalization(model: EICircuit, spec: CircuitSpec, device: str | torch.device = "cpu") -> dict:
    """Train loss/error, and per applicable shift the test loss, error, gap (test - train) and shift factor.

    Returns {"train_loss", "train_error", "shifts": [names], "factor", "test_loss", "test_error", "gap",
    "error_gap": lists over shifts}.
    """
    cfg = spec.curvature
    dtype = model.recurrent_raw.dtype
    trained_task = model.task if hasattr(model, "task") else make_task(spec.task, device)
    train_trials = _cast(evaluation_set(spec, device), dtype)
    n_train, steps = train_trials.inputs.shape[:2]
    noise = model.draw_noise(n_train, steps, torch.Generator(device).manual_seed(cfg.noise_seed))
    train_loss, train_error = loss_and_error(
        model, trained_task, train_trials, _noise_to(noise, dtype), spec.training.loss
    )
    out = {"train_loss": train_loss, "train_error": train_error, "shifts": [], "factor": [], "test_loss": [],
           "test_error": [], "gap": [], "error_gap": []}
    for name in applicable_shifts(spec):
        shift = make_shift(spec, name, trained_task, device)
        trials = _cast(
            shift.task.sample(cfg.n_test_trials, shift.steps, torch.Generator(device).manual_seed(cfg.test_seed)), dtype
        )
        noise = model.draw_noise(
            cfg.n_test_trials,
            shift.steps,
            torch.Generator(device).manual_seed(cfg.noise_seed),
            scale=shift.noise_scale,
            input_scale=shift.noise_scale,
        )
        loss, error = loss_and_error(model, shift.task, trials, _noise_to(noise, dtype), spec.training.loss)
        if not (math.isfinite(loss) and math.isfinite(error)):
            raise RuntimeError(f"non-finite test loss or error under shift {name!r}")
        out["shifts"].append(name)
        out["factor"].append(shift.factor)
        out["test_loss"].append(loss)
        out["test_error"].append(error)
        out["gap"].append(loss - train_loss)
        out["error_gap"].append(error - train_error)
    return out


def _noise_to(noise: Noise, dtype: torch.dtype) -> Noise:
    return Noise(
        noise.recurrent.to(dtype) if noise.recurrent is not None else None,
        noise.input.to(dtype) if noise.input is not None else None,
    )

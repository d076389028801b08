"""Quiescence: trained circuits with the input removed and recurrent noise on (Krishna et al. ICLR 2024, section 3).

Every trial starts from the encoded start state of a held-out waking trial (the `evaluation.seed` trials of
`recircuit evaluate`, so waking and quiescent trial i share a start), runs `reactivation.duration_steps` steps with
all-zero input and no input noise. The decoded outputs after `reactivation.burn_in_steps` are stored as
``decoded_*``, those of the burn-in as ``burn_in_decoded_*``: the metrics read their windows from both (the
distribution metrics and the output variance each have their own, `recircuit.analysis.reactivation`), and the time
course shows the approach to the offline distribution.

Conditions (a fixed list, so files of different runs combine; a condition that does not apply is all-NaN):

- ``trained``: the trained circuit; offline SD from `reactivation.noise_mode` (same / scaled / absolute).
- ``offline_noise``: only for circuits trained noise-free: the same circuit with `reactivation.noise_sd` standing
  in for the training SD (scaled mode: sqrt(2) x noise_sd, the reference's "quiescent_noisy" control).
- ``noise_off``: only for circuits trained with noise: the same circuit offline without noise, so that the offline
  flow can be told from what the noise adds (the reactivation account has the noise do the revisiting).
- ``untrained``: a freshly initialised circuit of the same spec (training.seed weights), noise as ``trained``
  (or as ``offline_noise`` when the spec is noise-free).
- ``uniform``: no network; positions uniform in the arena, headings uniform on the ring (the analytic baseline).

The file also holds the scaled-input test of the trained circuit (`recircuit.analysis.scaled_input`): awake, with
its training noise, integrating the self-motion of longer held-out trials times each of `reactivation.input_scales`.

The noise of a network condition follows the spec's `network.noise.distribution`: zero-mean Gaussian with per-step
SD ``sd * sqrt(dt/tau)`` (gaussian), or ``sd * U[0, 1)`` per step (reference_uniform); all network conditions use the
same noise seed (common random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from recircuit.circuit.io import build_circuit, load_model
from recircuit.circuit.network import EICircuit, Noise
from recircuit.learning.evaluate import unit_coords
from recircuit.learning.train import device_description, error_variable, resolve_device
from recircuit.results import label, provenance, save_dataset, with_sweep_dims
from recircuit.analysis.reactivation import (
    CONDITIONS,
    NETWORK_CONDITIONS,
    QUIESCENCE_FILE,
    SAME_NETWORK_CONDITIONS,
    circular_output_variance,
    output_variance,
)
from recircuit.analysis.scaled_input import SIGNED_PART, SIGNED_QUANTITY, scaled_input_run
from recircuit.analysis.scaled_input import variable_names as scaled_input_names
from recircuit.spec import CircuitSpec, with_section_overrides
from recircuit.spec_sections.reactivation import ReactivationSpec

CHUNK_STEPS = 100  # quiescent steps simulated per chunk (bounds memory: noise and rates of one chunk)
COMPRESSION = {"zlib": True, "complevel": 4}


# ------------------------------------------------------------------------------------------------------ the spec
def with_reactivation_overrides(spec: CircuitSpec, overrides: Sequence[str]) -> CircuitSpec:
    """The spec with ``reactivation.<field>=value`` overrides applied (the trained circuit itself is fixed)."""
    return with_section_overrides(spec, overrides, ("reactivation",))


class QuiescenceDiverged(RuntimeError):
    """The circuit's rates became NaN or Inf during quiescence (e.g. an unbounded activation with strong weights)."""


def _noise_words(spec, sd: float) -> str:
    """The recurrent noise of SD/width ``sd`` in words, with its mean per step where it has one (reference_uniform;
    the circuit was trained with the mean of its training width, so a different offline width changes its drive)."""
    if sd == 0:
        return "none (deterministic)"
    if spec.network.noise.distribution == "reference_uniform":
        trained_mean = spec.network.noise.recurrent_sd / 2
        return (
            f"{sd:.4g} x U[0,1) per step (reference_uniform: mean {sd / 2:.4g} per step on every unit, "
            f"{trained_mean:.4g} in training)"
        )
    return f"SD {sd:.4g} per sqrt(tau)"


def condition_noise_sd(rs: ReactivationSpec, training_sd: float) -> dict[str, float | None]:
    """Offline recurrent noise SD (per sqrt(tau)) of each network condition; None = condition not simulated."""

    def offline(sd: float) -> float:
        if rs.noise_mode == "same":
            return sd
        if rs.noise_mode == "scaled":
            return rs.noise_scale * sd
        return rs.noise_sd

    noise_free = training_sd == 0
    return {
        "trained": offline(training_sd),
        "offline_noise": offline(rs.noise_sd) if noise_free else None,
        "noise_off": None if noise_free else 0.0,
        "untrained": offline(rs.noise_sd if noise_free else training_sd),
    }


# ---------------------------------------------------------------------------------------------------- simulation
def waking_start(model: EICircuit, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(initial states, initial cell codes) of the held-out waking trials, drawn exactly as `evaluate` draws them."""
    spec, ev = model.spec, model.spec.evaluation
    steps = ev.sequence_steps or spec.task.sequence_steps
    generator = torch.Generator(device).manual_seed(ev.seed)
    trials = model.task.sample(ev.n_trials, steps, generator)
    return trials.initial_state, trials.initial_code


@torch.no_grad()
def quiescent_run(
    model: EICircuit,
    decode: Callable[[torch.Tensor], torch.Tensor],
    initial_rates: torch.Tensor,
    *,
    steps: int,
    burn_in: int,
    noise_sd: float,
    generator: torch.Generator,
    rate_trials: int = 0,
    rates_every: int = 1,
    keep_burn_in: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` with zero input from ``initial_rates`` (batch, units) for ``steps`` steps.

    noise_sd is the recurrent SD per sqrt(tau) (0 = deterministic). Returns the decoded outputs after the burn-in,
    (batch, steps - burn_in, state_dims), or of every step with ``keep_burn_in``, and the rates of the first
    ``rate_trials`` trials at steps burn_in + rates_every * j (j >= 1), shape (rate_trials, n_samples, units).
    """
    batch, device = initial_rates.shape[0], initial_rates.device
    step_sd = model.noise_step_scale(noise_sd)
    n_inputs = model.input_raw.shape[1]
    rates = initial_rates
    decoded, kept_rates = [], []
    for start in range(0, steps, CHUNK_STEPS):
        length = min(CHUNK_STEPS, steps - start)
        recurrent = (
            # one serial stream, so that every quiescence of earlier versions is reproduced draw for draw
            model.unit_noise((length, batch, model.n_units), generator, parallel=False).mul_(step_sd)
            if step_sd > 0
            else None
        )
        zeros = torch.zeros(batch, length, n_inputs, device=device)
        history = model.run(zeros, rates, Noise(recurrent, None))
        rates = history[:, -1]
        if not torch.isfinite(rates).all():
            raise QuiescenceDiverged(
                f"quiescent rates became non-finite by step {start + length} "
                f"(recurrent noise {_noise_words(model.spec, noise_sd)})"
            )
        step_numbers = torch.arange(start + 1, start + length + 1)  # 1-based index of each simulated step
        keep = step_numbers > burn_in
        decode_here = torch.ones_like(keep) if keep_burn_in else keep
        if decode_here.any():
            decoded.append(decode(model.readout(history[:, decode_here.to(device)])))
        sampled = keep & ((step_numbers - burn_in) % rates_every == 0)
        if rate_trials > 0 and sampled.any():
            kept_rates.append(history[:rate_trials, sampled.to(device)])
    rate_tensor = (
        torch.cat(kept_rates, 1) if kept_rates else torch.zeros(rate_trials, 0, model.n_units, device=device)
    )
    return torch.cat(decoded, 1), rate_tensor


def uniform_states(task_spec, batch: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """The analytic baseline: positions uniform in the arena (m) or headings uniform on [-pi, pi) (rad)."""
    if task_spec.kind == "path_integration":
        return (torch.rand(batch, steps, 2, generator=generator) * 2 - 1) * (task_spec.arena_m / 2)
    return (torch.rand(batch, steps, 1, generator=generator) * 2 - 1) * math.pi


# --------------------------------------------------------------------------------------------------- the dataset
def output_variance_of(kind: str, decoded: np.ndarray) -> float:
    """Mean over trials of the per-trajectory output variance (see recircuit.analysis.reactivation)."""

    if np.isnan(decoded).all():
        return float("nan")
    return output_variance(decoded) if kind == "path_integration" else circular_output_variance(decoded[..., 0])


@torch.no_grad()
def quiesce(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Path:
    """Quiesce the trained circuit of ``run_dir`` under every condition and write quiescence.nc."""
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model = load_model(run_dir, dev)
    spec = with_reactivation_overrides(model.spec, overrides)
    rs, task, kind = spec.reactivation, model.task, spec.task.kind
    n, steps, burn_in = rs.n_trials, rs.duration_steps, rs.burn_in_steps
    kept_steps = steps - burn_in
    n_rates = min(rs.n_trials_with_rates, n)
    n_rate_samples = kept_steps // rs.rates_every_steps
    state_dims = 2 if kind == "path_integration" else 1

    initial_state, initial_code = waking_start(model, dev)
    start_trial = torch.arange(n) % initial_state.shape[0]  # more quiescent than waking trials: starts repeat
    initial_state, initial_code = initial_state[start_trial], initial_code[start_trial]

    training_sd = spec.network.noise.recurrent_sd
    sds = condition_noise_sd(rs, training_sd)
    untrained, _ = build_circuit(spec, dev)
    untrained.eval()
    circuits = {**dict.fromkeys(SAME_NETWORK_CONDITIONS, model), "untrained": untrained}

    decoded = np.full((len(CONDITIONS), n, steps, state_dims), np.nan, dtype=np.float32)  # burn-in included
    rates = np.full((len(CONDITIONS), n_rates, n_rate_samples, model.n_units), np.nan, dtype=np.float32)
    noise_used = np.full(len(CONDITIONS), np.nan)
    simulated = np.zeros(len(CONDITIONS), dtype=np.int8)
    for i, condition in enumerate(NETWORK_CONDITIONS):
        sd = sds[condition]
        if sd is None:
            continue
        circuit = circuits[condition]
        log(f"quiescence {condition}: {n} trials x {steps} steps, recurrent noise {_noise_words(spec, sd)}")
        generator = torch.Generator(dev).manual_seed(rs.seed)
        try:
            out_decoded, out_rates = quiescent_run(
                circuit,
                task.decode,
                circuit.initial_rates(initial_code),
                steps=steps,
                burn_in=burn_in,
                noise_sd=sd,
                generator=generator,
                rate_trials=n_rates,
                rates_every=rs.rates_every_steps,
                keep_burn_in=True,
            )
        except QuiescenceDiverged as diverged:
            raise QuiescenceDiverged(f"condition {condition!r}: {diverged}; no quiescence file written") from None
        decoded[i] = out_decoded.cpu().numpy()
        rates[i] = out_rates.cpu().numpy()
        noise_used[i] = sd
        simulated[i] = 1
    scaled = None
    if rs.input_scales:
        log(
            f"scaled-input test: {rs.input_scale_trials} trials x {rs.input_scale_steps} steps, self-motion input x "
            + ", ".join(f"{f:g}" for f in rs.input_scales)
            + ", training noise"
        )
        held_out = torch.Generator(dev).manual_seed(spec.evaluation.seed)
        movement = task.move(task.draw(rs.input_scale_trials, rs.input_scale_steps, held_out))
        try:
            scaled = scaled_input_run(model, movement, rs.input_scales, rs.seed)
        except FloatingPointError as diverged:
            raise QuiescenceDiverged(f"{diverged}; no quiescence file written") from None
    uniform_index = CONDITIONS.index("uniform")
    decoded[uniform_index, :, burn_in:] = uniform_states(
        spec.task, n, kept_steps, torch.Generator().manual_seed(rs.seed)
    ).numpy()
    simulated[uniform_index] = 1
    variance_window = rs.variance_window()
    variances = np.array([output_variance_of(kind, decoded[i][:, variance_window]) for i in range(len(CONDITIONS))])
    decoded, burn_in_decoded = decoded[:, :, burn_in:], decoded[:, :, :burn_in]

    dt = spec.task.dt_s
    what = "position" if kind == "path_integration" else "heading"
    variance_units = "m2" if kind == "path_integration" else "rad2"
    if kind == "path_integration":
        states = {
            "decoded_position": label(
                xr.DataArray(decoded, dims=("condition", "trial", "time", "space")),
                "decoded position during quiescence (after burn-in)",
                "m",
            ),
            "start_position": label(
                xr.DataArray(initial_state.cpu().numpy(), dims=("trial", "space")),
                "start position (that of the held-out waking trial)",
                "m",
            ),
        }
    else:
        states = {
            "decoded_heading": label(
                xr.DataArray(decoded[..., 0], dims=("condition", "trial", "time")),
                "decoded heading during quiescence (after burn-in)",
                "rad",
            ),
            "start_heading": label(
                xr.DataArray(initial_state[:, 0].cpu().numpy(), dims="trial"),
                "start heading (that of the held-out waking trial)",
                "rad",
            ),
        }
    if burn_in > 0:
        name = f"burn_in_decoded_{what}"
        burn_in_values = burn_in_decoded if kind == "path_integration" else burn_in_decoded[..., 0]
        dims = ("condition", "trial", "burn_in_time", "space")[: burn_in_values.ndim]
        states[name] = label(
            xr.DataArray(burn_in_values, dims=dims),
            f"decoded {what} during the burn-in (NaN for the uniform baseline, drawn after burn-in only)",
            "m" if kind == "path_integration" else "rad",
        )
    data = {
        **states,
        "start_trial": label(
            xr.DataArray(start_trial.numpy(), dims="trial"), "held-out waking trial whose start state is used", "1"
        ),
        "rates": label(
            xr.DataArray(rates, dims=("condition", "rate_trial", "rate_time", "unit")),
            "hidden unit rates during quiescence (first trials, subsampled in time)",
            "1",
        ),
        "noise_sd": label(
            xr.DataArray(noise_used, dims="condition"),
            "offline recurrent noise level in the spec's units (gaussian: SD per sqrt(tau), per-step SD = "
            "sd * sqrt(dt/tau); reference_uniform: sd * U[0,1) per step); NaN: no network",
            "1",
        ),
        "simulated": label(
            xr.DataArray(simulated, dims="condition"), "1 if the condition applies to this circuit, else 0", "1"
        ),
        f"{what}_variance": label(
            xr.DataArray(variances, dims="condition"),
            f"per-trajectory variance of the decoded {what} after the variance burn-in "
            f"({variance_window.start} steps), mean over trials"
            + (" (trace of covariance)" if kind == "path_integration" else " (wrapped-normal variance -2 ln R)"),
            variance_units,
        ),
    }
    if scaled is not None:
        error_units = error_variable(kind)[2]
        error_name, bias_name = scaled_input_names(kind)
        data[error_name] = label(
            xr.DataArray(scaled[0], dims=("input_scale", "scaled_input_time")),
            "scaled-input test: mean decoding error over trials, trained circuit with its training noise, self-motion "
            "input times input_scale, against the path of an agent moving input_scale times as fast",
            error_units,
        )
        data[bias_name] = label(
            xr.DataArray(scaled[1], dims=("input_scale", "scaled_input_time")),
            f"scaled-input test: mean signed decoding error over trials ({SIGNED_PART[kind]} > 0): "
            f"{SIGNED_QUANTITY[kind]}",
            error_units,
        )
    coords = {
        "condition": label(xr.DataArray(list(CONDITIONS), dims="condition"), "quiescent condition", "1"),
        "trial": label(xr.DataArray(np.arange(n), dims="trial"), "quiescent trial", "1"),
        "time": label(
            xr.DataArray((burn_in + 1 + np.arange(kept_steps)) * dt, dims="time"), "time since input removal", "s"
        ),
        "rate_trial": label(xr.DataArray(np.arange(n_rates), dims="rate_trial"), "trial with saved rates", "1"),
        **(
            {"burn_in_time": label(xr.DataArray((1 + np.arange(burn_in)) * dt, dims="burn_in_time"),
                                   "time since input removal (burn-in)", "s")}
            if burn_in > 0
            else {}
        ),
        "rate_time": label(
            xr.DataArray((burn_in + rs.rates_every_steps * (1 + np.arange(n_rate_samples))) * dt, dims="rate_time"),
            "time since input removal of the saved rates",
            "s",
        ),
        **unit_coords(model.n_exc, model.n_inh, model.dale),
    }
    if scaled is not None:
        coords["input_scale"] = label(
            xr.DataArray(list(rs.input_scales), dims="input_scale"), "factor on the self-motion input", "1"
        )
        coords["scaled_input_time"] = label(
            xr.DataArray((1 + np.arange(rs.input_scale_steps)) * dt, dims="scaled_input_time"),
            "time since the start of a scaled-input trial",
            "s",
        )
    if kind == "path_integration":
        coords["space"] = label(xr.DataArray(["x", "y"], dims="space"), "spatial axis", "1")
    meta = model.meta
    attrs = {
        **provenance(
            spec, circuit=meta["circuit"], variant=meta["variant"], seed=meta["seed"], device=device_description(dev)
        ),
        "task_kind": kind,
        "dt_s": dt,
        "training_recurrent_sd": training_sd,
        "noise_distribution": spec.network.noise.distribution,
        "noise_mode": rs.noise_mode,
        "noise_scale": rs.noise_scale,
        "duration_steps": steps,
        "burn_in_steps": burn_in,
        "quiescence_seed": rs.seed,
        "evaluation_seed": spec.evaluation.seed,
        "input": "all-zero input, no input noise",
    }
    if kind == "path_integration":
        attrs["arena_m"] = spec.task.arena_m
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    for name in ds.data_vars:
        if "decoded" in name or name == "rates":
            ds[name].encoding.update(COMPRESSION)
    ds = with_sweep_dims(ds, circuit=meta["circuit"], variant=meta["variant"], seed=meta["seed"])
    return save_dataset(ds, Path(out) if out else run_dir / QUIESCENCE_FILE)

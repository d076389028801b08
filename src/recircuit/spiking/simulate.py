"""The spiking twin of a trained circuit: lambda grid search, task trials, quiescence, agreement -> spiking.nc.

Protocol (every step seeded explicitly; nothing here seeds a global generator):

1. Convert (`convert.py`): sigmoid weights (tanh rewritten), refusals for what has no LIF counterpart.
2. Grid search over 1/lambda (``spiking.max_rate_grid_hz``) on ``spiking.n_search_trials`` trajectories drawn from
   ``spiking.search_seed`` (not the evaluation trials): for each lambda the f-I curve is calibrated on the operating
   range (``spiking.calibration_percentiles`` of the noise-free rate circuit's currents on those trials) and the
   spiking decoding error is measured; the lambda with the lowest mean error is kept. The whole grid is stored.
   With ``spiking.time_step_correction`` every calibration is then refitted for the neuron as Brian2 integrates it
   at ``spiking.dt_ms`` (`time_step.correct_for_time_step`): the Siegert rate is the continuous-time neuron's.
3. f-I check of the kept calibration: every neuron on its own (weights 0) at a constant current across the range.
4. Task trials: the first ``spiking.n_trials`` held-out trials of `recircuit evaluate` (evaluation.seed), same
   inputs and start states. Rate references on the same trials: ``rate_noise = evaluation`` (the evaluation's own
   recurrent-noise draws, identical to waking.nc) and ``rate_noise = none`` (recurrent noise off).
5. Quiescence: no input, membrane noise on; trial k starts from the encoded start state of held-out trial k (as in
   `recircuit quiesce`) and runs ``spiking.quiescent_steps`` (default reactivation.duration_steps) rate steps, in
   consecutive runs of one trial length with the full state carried over. Decoded states after
   ``reactivation.burn_in_steps`` give KL(spiking quiescent || rate waking), with the reactivation analysis's
   KDE + Monte-Carlo estimator and the waking decoded states of waking.nc (all trials) when present. The rate
   circuit's own quiescence (`recircuit quiesce`'s trained condition) from the same starts gives the reference
   KL(rate quiescent || rate waking): the KL grows as fewer quiescent trials are pooled, so compare like with like.
   ``spiking.quiescent_noise = membrane+rate`` adds the rate circuit's own offline noise to the twin's currents
   (`rate_noise_states`); the default keeps only the twin's own variability (spikes and membrane noise).

Batching: one binary per network size serves every step above; each Brian2 run simulates ``spiking.copies``
independent trials side by side (the search trials of every lambda, the f-I repeats, the task trials, chunk c of
every quiescent trial). A trial's spikes depend only on its own inputs, start state and seed, not on the batch.

Agreement: decoding error ratio spiking / rate (per rate reference), per-unit Pearson correlation of the smoothed
spiking rate lambda r with the rate unit's activity (over trials and steps; median over model units firing > 1 Hz,
and separately over the normalization interneurons).

The twin's own noise (`effective_noise`): the one-step innovation of lambda r on the task trials against the twin's
rate map (its LIF f-I curve), in the units of network.noise.recurrent_sd. The rate circuit is run offline from the
quiescent starts with that noise per unit (`matched_rate_quiescence`), once with its own rate function and once with the
twin's fitted LIF curve, on the same draws: the twin's noise level alone, and the twin's mean field with it.

Where the twin's task error comes from, each over the noise-free rate circuit's error on the same trials:
`fi_only_error_ratio`, the trained Euler map with the twin's LIF f-I curve; `mean_field_error_ratio`, the twin
without spikes (`continuous_rate_circuit`: that curve and the twin's synaptic kernels in continuous time), which
shows what leaving the trained time step costs, a large cost when dt/tau is large (0.5 on the head-direction ring);
`noise_only_error_ratio`, the rate circuit with Gaussian state noise of twin_noise_sd per unit. twin_noise_sd counts
everything the one-step map misses, continuous-time dynamics included, so noise_only measures spike noise only
where mean_field is near 1.

Subtractive normalization (`convert.py`): the interneurons are n_I extra LIF neurons after the n model units
(population 'I_norm'), set up from the search trials (computed once, for the interneurons' range and the lambda
search). The rate equivalent keeps them instantaneous (`simulate_rate_circuit`, `rate_currents`: their rates at
step t come from [s_{t-1}; u_t] and enter the E current of step t). In the twin every synapse is filtered with its
*presynaptic* unit's decay (`network.py`, `neuron_parameters`), which is what h_j = lambda r_j means: an interneuron
reads the model units through their kernel tau, i.e. reads h as in W_IX [h_{t-1}; u_t; 1], and an E unit reads the
interneurons through their short kernel (spiking.normalization_tau_ms, a second synaptic current), so the inhibition
W_EI W_IX [h; u; 1] reaches it about normalization_tau_ms after the interneurons fire, input part included, as
from the rate model's instantaneous interneurons. The interneurons' correlation is taken against their rate-equivalent rate. Their start state: rates
at h0 with zero input, both synaptic currents at steady state.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from recircuit.circuit.io import load_model
from recircuit.circuit.network import EICircuit, Noise
from recircuit.learning.evaluate import WAKING_FILE, unit_coords
from recircuit.learning.train import error_variable
from recircuit.results import label, open_dataset, provenance, save_dataset, with_sweep_dims
from recircuit.spec import CircuitSpec, with_section_overrides
from recircuit.spiking.convert import (
    LIFCalibration,
    RateCircuit,
    RateTrajectories,
    calibrate_lif,
    check_convertible,
    correct_for_time_step,
    lif_curve_calibration,
    rate_circuit_from_model,
)
from recircuit.spiking.effective_noise import effective_noise_sd
from recircuit.spiking.network import (
    LIFConstants,
    NetworkShape,
    NeuronParameters,
    RunInputs,
    RunOutput,
    SpikingNetwork,
    default_copies,
    filter_spikes,
    resting_state,
)

SPIKING_FILE = "spiking.nc"
RATE_NOISE = ("evaluation", "none")
RATE_MAPS = ("own", "twin_fi")  # rate maps of the quiescence with the twin's noise: the circuit's own, the twin's
ACTIVE_RATE_HZ = 1.0  # units above this mean task rate enter the median correlation
SILENT_RATE_HZ = 0.1  # units below this mean rate count as silent
NOISE_ONLY_DRAWS = 5  # draws of the twin's noise that noise_only_error_ratio averages over
CONTINUOUS_SUBSTEP_S = 5e-4  # longest substep of `continuous_rate_circuit`
MEAN_FIELD_NOTE_RATIO = 1.25  # twin and mean-field error ratios above this: `spike` names the time step
# Where the twin's task error comes from, each run on the twin's task trials without spikes: name -> (what its
# error (trial, time) is of, long_name of its mean error over the noise-free rate circuit's), in spiking.nc order.
ERROR_SOURCES = {
    "fi_only": (
        "of the rate circuit with the twin's LIF f-I curve in place of the sigmoid (no spikes, no recurrent noise)",
        "mean decoding error of the rate circuit with the LIF f-I curve / of the noise-free rate circuit",
    ),
    "noise_only": (
        (
            "of the rate circuit (its own rate function, no spikes) with state noise of twin_noise_sd per unit, mean "
            f"over {NOISE_ONLY_DRAWS} draws of that noise"
        ),
        (
            "mean decoding error of the rate circuit with the twin's noise / of the noise-free rate circuit: what the "
            "twin's one-step variability costs as white noise, spike noise where mean_field_error_ratio is near 1 "
            "(compare error_ratio at rate_noise=none)"
        ),
    ),
    "mean_field": (
        (
            "of the twin without spikes: the rate circuit in continuous time with the twin's LIF f-I curve and "
            "synaptic kernels (continuous_rate_circuit)"
        ),
        (
            "mean decoding error of the twin without spikes / of the noise-free rate circuit: what running the "
            "trained Euler map in continuous time costs, before any spike (compare error_ratio at rate_noise=none)"
        ),
    ),
}
COMPRESSION = {"zlib": True, "complevel": 4}
PURPOSE = {
    "search": 1, "task": 2, "quiescence": 3, "fi": 4, "quiescent_noise": 5, "matched_noise": 6, "task_noise": 7,
}  # fmt: skip


def run_seed(base: int, purpose: str, *key: int) -> int:
    """A 32-bit seed that depends only on (base, purpose, key): adding trials never changes another run's seed."""
    return int(np.random.SeedSequence([int(base), PURPOSE[purpose], *map(int, key)]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------- rate references
@dataclass(frozen=True)
class RateTrials:
    """Trials of the rate circuit, numpy; rates in the model's own space (tanh or sigmoid)."""

    inputs: np.ndarray  # (trial, time, n_inputs) input per step, noise draws included
    states: np.ndarray  # (trial, time, state_dims) true position (m) or heading (rad)
    initial_rates: np.ndarray  # (trial, units) h0
    rates: dict[str, np.ndarray]  # rate_noise -> (trial, time, units)
    decoded: dict[str, np.ndarray]  # rate_noise -> (trial, time, state_dims)
    error: dict[str, np.ndarray]  # rate_noise -> (trial, time), cm or deg

    def trajectories(self, which: str = "none") -> RateTrajectories:
        """The model-space trajectories of one rate reference (for the interneurons' operating range)."""
        return RateTrajectories(self.rates[which], self.inputs, self.initial_rates)

    def unit_rates(self, circuit: RateCircuit, which: str) -> np.ndarray:
        """All units' sigmoid rates (trial, time, n_units) of one rate reference, interneurons included."""
        return circuit.unit_rates(self.rates[which], self.inputs, self.initial_rates)


def _slice_noise(noise: Noise, n: int) -> Noise:
    return Noise(
        noise.recurrent[:, :n] if noise.recurrent is not None else None,
        noise.input[:n] if noise.input is not None else None,
    )


@torch.no_grad()
def rate_trials(model: EICircuit, seed: int, n_drawn: int, n_kept: int, steps: int) -> RateTrials:
    """The first ``n_kept`` of ``n_drawn`` trials drawn as `evaluate` draws them (same generator order), run twice."""
    task = model.task
    generator = torch.Generator().manual_seed(seed)
    trials = task.sample(n_drawn, steps, generator)
    noise = _slice_noise(model.draw_noise(n_drawn, steps, generator), n_kept)
    inputs = trials.inputs[:n_kept]
    code = trials.initial_code[:n_kept]
    states = trials.states[:n_kept]
    runs = {"evaluation": noise, "none": Noise(None, noise.input)}
    rates, decoded, error = {}, {}, {}
    for name, run_noise in runs.items():
        outputs, h = model(inputs, code, run_noise)
        d = task.decode(outputs)
        rates[name] = h.numpy().astype(np.float64)
        decoded[name] = d.numpy().astype(np.float64)
        error[name] = task.error(d, states).numpy().astype(np.float64)
    fed = inputs + noise.input if noise.input is not None else inputs
    return RateTrials(
        inputs=fed.numpy().astype(np.float64),
        states=states.numpy().astype(np.float64),
        initial_rates=model.initial_rates(code).numpy().astype(np.float64),
        rates=rates,
        decoded=decoded,
        error=error,
    )


@torch.no_grad()
def evaluation_starts(model: EICircuit, steps: int, n: int) -> np.ndarray:
    """Initial rates h0 (n, units) of the first n held-out trials (evaluation.seed), as `recircuit quiesce` starts."""
    generator = torch.Generator().manual_seed(model.spec.evaluation.seed)
    trials = model.task.sample(model.spec.evaluation.n_trials, steps, generator)
    return model.initial_rates(trials.initial_code[:n]).numpy().astype(np.float64)


@torch.no_grad()
def rate_quiescence(model: EICircuit, initial_rates: np.ndarray, steps: int) -> np.ndarray:
    """Decoded states after the burn-in of the rate circuit's own quiescence (as `recircuit quiesce`, trained)."""
    from recircuit.analysis.quiescence import condition_noise_sd, quiescent_run

    rs = model.spec.reactivation
    sd = condition_noise_sd(rs, model.spec.network.noise.recurrent_sd)["trained"]
    decoded, _ = quiescent_run(
        model,
        model.task.decode,
        torch.from_numpy(initial_rates).float(),
        steps=steps,
        burn_in=rs.burn_in_steps,
        noise_sd=float(sd),
        generator=torch.Generator().manual_seed(rs.seed),
    )
    return decoded.numpy().astype(np.float64)


def rate_currents(circuit: RateCircuit, trials: RateTrials, which: str = "none") -> np.ndarray:
    """Currents x_t = W [s_{t-1}; s_I,t] + W_in u_t + b of the sigmoid circuit along rate trajectories (trial, time,
    unit), every unit: the instantaneous interneurons' rates s_I,t (from s_{t-1} and u_t) enter the model units'
    current of the same step."""
    s = circuit.initial_rates(trials.rates[which])
    s0 = circuit.initial_rates(trials.initial_rates)
    previous = np.concatenate([s0[:, None], s[:, :-1]], axis=1)
    presynaptic = circuit.presynaptic(previous, trials.inputs)
    return presynaptic @ circuit.recurrent.T + trials.inputs @ circuit.input.T + circuit.bias


def simulate_rate_circuit(
    circuit: RateCircuit,
    inputs: np.ndarray,
    initial_rates: np.ndarray,
    activation: Callable[[np.ndarray], np.ndarray] | None = None,
    state_noise: np.ndarray | None = None,
    current_noise: np.ndarray | None = None,
) -> np.ndarray:
    """Rates s (trial, time, units) of the sigmoid circuit, a = dt/tau (float64 reference), from model-space h0
    (trial, n_model); every unit, the normalization interneurons instantaneous: at step t their rates are computed
    from [s_{t-1}; u_t] first and enter the model units' current of that step (stored at t). ``activation`` replaces
    the model units' sigmoid (e.g. the twin's LIF f-I curve, `LIFCalibration.lif_activation`); ``state_noise``
    (trial, time, n_model), in sigmoid space, is added to the model units' new rates (state placement) and
    ``current_noise`` (same shape) to their currents (drive placement); None: noise-free."""
    n = circuit.n_model
    activation = activation or circuit.phi
    alpha = circuit.alpha
    recurrent, input_w, bias = circuit.recurrent[:n], circuit.input[:n], circuit.bias[:n]
    for name, noise in (("state_noise", state_noise), ("current_noise", current_noise)):
        if noise is not None and noise.shape != inputs.shape[:2] + (n,):
            raise ValueError(f"{name} {noise.shape} must be (trial, time, n_model) = {inputs.shape[:2] + (n,)}")
    s = circuit.initial_rates(initial_rates)
    out = np.empty(inputs.shape[:2] + (circuit.n_units,))
    for t in range(inputs.shape[1]):
        presynaptic = circuit.presynaptic(s, inputs[:, t])
        current = presynaptic @ recurrent.T + inputs[:, t] @ input_w.T + bias
        if current_noise is not None:
            current = current + current_noise[:, t]
        s = (1 - alpha) * s + alpha * activation(current)
        if state_noise is not None:
            s = s + state_noise[:, t]
        out[:, t, :n] = s
        out[:, t, n:] = presynaptic[:, n:]
    return out


def continuous_rate_circuit(
    circuit: RateCircuit,
    inputs: np.ndarray,
    initial_rates: np.ndarray,
    tau_rise_s: float,
    activation: Callable[[np.ndarray], np.ndarray] | None = None,
    max_substep_s: float = CONTINUOUS_SUBSTEP_S,
) -> np.ndarray:
    """Rates s (trial, time, units) at the end of each rate step of the twin without spikes: the model units in
    continuous time, s_j = K_j * phi(x_j), K_j the twin's unit-area double-exponential kernel (decay
    ``circuit.synaptic_tau_s``, rise ``tau_rise_s``), x = W [s; s_I] + W_in u + b with u held over each step; the
    normalization interneurons instantaneous, as in the rate circuit (their columns: their rates at the end of the
    step). Integrated exactly for phi held over substeps of at most ``max_substep_s``; from the model-space h0
    (trial, n_model) in steady state. It leaves out the membrane and the spikes: against `simulate_rate_circuit`
    (the trained Euler map) it shows what running the circuit in continuous time costs."""
    n = circuit.n_model
    activation = activation or circuit.phi
    tau = circuit.synaptic_tau_s[:n]
    if np.any(tau <= tau_rise_s):
        raise ValueError(f"synaptic decays ({tau.min():.3g} s) must exceed the rise time ({tau_rise_s} s)")
    substeps = max(1, math.ceil(circuit.step_s / max_substep_s - 1e-9))
    h = circuit.step_s / substeps
    decay = np.exp(-h / tau)
    rise_decay = math.exp(-h / tau_rise_s) if tau_rise_s > 0 else 0.0
    rise_share = tau_rise_s / (tau_rise_s - tau) if tau_rise_s > 0 else np.zeros_like(tau)
    recurrent, input_w, bias = circuit.recurrent[:n], circuit.input[:n], circuit.bias[:n]
    s = circuit.initial_rates(initial_rates)
    rise = s.copy()  # the kernel's rise stage, phi through exp(-t / tau_rise)
    out = np.empty(inputs.shape[:2] + (circuit.n_units,))
    for t in range(inputs.shape[1]):
        drive = inputs[:, t] @ input_w.T + bias
        for _ in range(substeps):
            phi = activation(circuit.presynaptic(s, inputs[:, t]) @ recurrent.T + drive)
            # s' = (rise - s) / tau, rise' = (phi - rise) / tau_rise, exact over h for constant phi
            s = phi + (s - phi) * decay + (rise - phi) * rise_share * (rise_decay - decay)
            rise = phi + (rise - phi) * rise_decay
        out[:, t, :n] = s
        out[:, t, n:] = circuit.presynaptic(s, inputs[:, t])[:, n:]
    return out


def continuous_time_note(twin_ratio: float, mean_field_ratio: float, dt_over_tau: float) -> str | None:
    """A hint for the user when the twin and the twin without spikes both err more than MEAN_FIELD_NOTE_RATIO times
    the trained circuit (errors over the noise-free rate circuit's): the circuit depends on its Euler time step
    (dt/tau), which no continuous-time twin keeps."""
    if not (twin_ratio > MEAN_FIELD_NOTE_RATIO and mean_field_ratio > MEAN_FIELD_NOTE_RATIO):
        return None
    return (
        f"the twin errs {twin_ratio:.2f} x as much as the trained circuit, and without spikes, in continuous time, "
        f"{mean_field_ratio:.2f} x: "
        f"it is trained as an Euler map with dt/tau = {dt_over_tau:.3g}, which a continuous-time twin cannot follow "
        "exactly; a circuit trained with a smaller dt/tau (a larger network.tau_ms) converts more faithfully"
    )


# ------------------------------------------------------------------------------------------------ spiking trials
@dataclass
class SpikingTrials:
    rates_hz: np.ndarray  # (trial, time, units) filtered spike trains r at the end of each step, Hz
    counts: np.ndarray  # (trial, time, units) spikes per rate step
    events: list[tuple[np.ndarray, np.ndarray]]  # per trial: (unit, time s)
    wall_s: float
    n_spikes: int


@dataclass(frozen=True)
class SynapticDecays:
    """The twin's synaptic currents: each is fed by the units of one decay, so every synapse is filtered with its
    presynaptic unit's decay (`network.py`)."""

    slow_s: np.ndarray  # (n_units,) decay of I_rec, per neuron: the model units' decay
    fast: np.ndarray | None  # (n_units,) bool: neurons whose spikes feed I_fast (the interneurons); None: no I_fast
    fast_s: float | None  # decay of I_fast: the interneurons' decay


def synaptic_decays(circuit: RateCircuit) -> SynapticDecays:
    """Without interneurons: one current with each unit's own decay (as Kim et al.; all model units share it).
    With interneurons: I_rec with the model units' decay on every neuron, I_fast with the interneurons'."""
    if not circuit.n_norm:
        return SynapticDecays(circuit.synaptic_tau_s, None, None)
    n = circuit.n_model
    model_tau, norm_tau = np.unique(circuit.synaptic_tau_s[:n]), np.unique(circuit.synaptic_tau_s[n:])
    if model_tau.size != 1 or norm_tau.size != 1:
        raise ValueError(
            "a twin with normalization interneurons needs one synaptic decay for all model units and one for all "
            f"interneurons (got {model_tau} s and {norm_tau} s): a neuron's synaptic currents are one per decay"
        )
    fast = np.arange(circuit.n_units) >= n
    return SynapticDecays(np.full(circuit.n_units, model_tau[0]), fast, float(norm_tau[0]))


def neuron_parameters(circuit: RateCircuit, cal: LIFCalibration) -> NeuronParameters:
    decays = synaptic_decays(circuit)
    return NeuronParameters(
        tau_syn_s=decays.slow_s,
        bias=circuit.bias,
        gain_mV=cal.gain_mV,
        offset_mV=cal.offset_mV,
        noise_mV=cal.noise_mV,
        refractory_ms=cal.refractory_ms,
        fast=decays.fast,
        tau_fast_s=decays.fast_s,
    )


def initial_state(
    circuit: RateCircuit, cal: LIFCalibration, s0: np.ndarray, constants: LIFConstants, seed: int
) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Brian2 state and readout-filter state of one trial that start from sigmoid rates ``s0`` (n_units: interneurons
    included, `RateCircuit.start_rates`) in steady state.

    I_rec = W s0 (with interneurons: W[:, model] s0[model], and I_fast = W[:, interneurons] s0[interneurons]), rise
    variables at steady state (current / decay), r = s0 / lambda; v uniform between reset and threshold.
    """
    rng = np.random.default_rng(seed)
    decays = synaptic_decays(circuit)
    r0 = s0 / cal.lambda_s
    brian = {
        "v": rng.uniform(constants.v_reset_mV, constants.v_threshold_mV, circuit.n_units),
        "lastspike": np.full(circuit.n_units, -1e4),
        "not_refractory": np.ones(circuit.n_units, dtype=bool),
    }
    if decays.fast is None:
        current = circuit.recurrent @ s0
        brian.update({"I_rec": current, "g_rise": current / decays.slow_s})
    else:
        n = circuit.n_model
        slow, fast = circuit.recurrent[:, :n] @ s0[:n], circuit.recurrent[:, n:] @ s0[n:]
        brian.update(
            {"I_rec": slow, "g_rise": slow / decays.slow_s, "I_fast": fast, "g_fast": fast / decays.fast_s}
        )
    return brian, (r0, r0 / circuit.synaptic_tau_s)


def _counts(unit: np.ndarray, spike_time: np.ndarray, steps: int, step_s: float, n: int) -> np.ndarray:
    step_bin = np.floor(spike_time / step_s + 1e-9).astype(np.int64)
    return np.bincount(step_bin * n + unit, minlength=steps * n).reshape(steps, n)


def state_noise(circuit: RateCircuit, unit_noise_sd: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Sigmoid-space state noise (trial, time, n_model) for `simulate_rate_circuit` from standard normal ``draws`` of
    that shape: SD ``unit_noise_sd`` (n_model,) per sqrt(tau) in the model's own units, i.e. sd sqrt(dt/tau) per
    step, as the rate model's state-placed recurrent noise and `effective_noise_sd` measure it."""
    return draws * (np.asarray(unit_noise_sd, dtype=np.float64) * np.sqrt(circuit.alpha) * circuit.state_scale)


def matched_rate_quiescence(
    model: EICircuit,
    circuit: RateCircuit,
    initial_rates: np.ndarray,
    steps: int,
    unit_noise_sd: np.ndarray,
    draws: np.ndarray,
    rate_noise: tuple[float, np.ndarray | None] = (0.0, None),
    activation: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Decoded states after the burn-in (trial, steps - burn_in, state_dims) of the rate circuit (no spikes) run
    offline with zero input from model-space h0 (trial, n_model) and state-placed Gaussian noise of SD
    ``unit_noise_sd`` (n_model,) per sqrt(tau), model units (the twin's own noise, `effective_noise`), made from the
    standard normal ``draws`` (trial, steps, n_model): with its own
    rate function (``activation`` None), what the twin's noise level alone predicts for the twin's quiescence; with
    ``activation`` = the twin's fitted LIF f-I curve, the twin's mean field with the twin's noise.

    ``rate_noise`` = (SD per sqrt(tau), drive noise or None): the rate circuit's own offline noise that the twin's
    quiescence also carries (spiking.quiescent_noise = membrane+rate, `rate_noise_states`): under state placement
    its SD adds to the twin's in quadrature (independent Gaussian state noises), under drive placement its drive
    draws (trial, steps, >= n_model) are added to the currents."""
    n = circuit.n_model
    rate_sd, rate_drive = rate_noise
    sd = np.asarray(unit_noise_sd, dtype=np.float64)
    if rate_drive is None:
        sd = np.sqrt(sd**2 + rate_sd**2)
    noise = state_noise(circuit, sd, draws)
    zeros = np.zeros((initial_rates.shape[0], steps, circuit.input.shape[1]))
    current_noise = rate_drive[..., :n] if rate_drive is not None else None
    rates = simulate_rate_circuit(circuit, zeros, initial_rates, activation, noise, current_noise)
    burn_in = model.spec.reactivation.burn_in_steps
    return decode(model, rate_readout(circuit, rates[:, burn_in:]))


def run_many(net: SpikingNetwork, runs: Sequence[RunInputs]) -> list[RunOutput]:
    """Every run, ``net.shape.copies`` at a time (one Brian2 simulation per batch); outputs in the order of runs."""
    k = net.shape.copies
    outputs: list[RunOutput] = []
    for first in range(0, len(runs), k):
        outputs.extend(net.run_batch(runs[first : first + k]))
    return outputs


def task_runs(
    circuit: RateCircuit,
    cal: LIFCalibration,
    inputs: np.ndarray,
    initial_rates: np.ndarray,
    seeds: Sequence[int],
    constants: LIFConstants,
) -> tuple[list[RunInputs], list[tuple[np.ndarray, np.ndarray]]]:
    """Brian2 runs and readout-filter start states of task trials: inputs (trial, time, n_inputs), model-space h0
    (trial, n_model)."""
    params = neuron_parameters(circuit, cal)
    weights = cal.lambda_s * circuit.recurrent
    s0 = circuit.start_rates(initial_rates)
    runs, traces = [], []
    for k, seed in enumerate(seeds):
        brian, trace = initial_state(circuit, cal, s0[k], constants, seed)
        runs.append(RunInputs(weights, inputs[k] @ circuit.input.T, params, brian, seed))
        traces.append(trace)
    return runs, traces


def task_results(
    outputs: Sequence[RunOutput],
    traces: Sequence[tuple[np.ndarray, np.ndarray]],
    circuit: RateCircuit,
    shape: NetworkShape,
    constants: LIFConstants,
    wall_s: float,
) -> SpikingTrials:
    """Filtered rates, counts and spike events of task trials from their Brian2 outputs."""
    rates, counts, events = [], [], []
    for out, trace in zip(outputs, traces, strict=True):
        sampled, _ = filter_spikes(
            out.spike_unit, out.spike_time_s, shape.steps, shape.step_s, circuit.synaptic_tau_s,
            constants.tau_rise_ms / 1000.0, trace,
        )  # fmt: skip
        rates.append(sampled)
        counts.append(_counts(out.spike_unit, out.spike_time_s, shape.steps, shape.step_s, circuit.n_units))
        events.append((out.spike_unit, out.spike_time_s))
    total = sum(out.spike_unit.size for out in outputs)
    return SpikingTrials(np.stack(rates), np.stack(counts), events, wall_s, total)


def run_task_trials(
    net: SpikingNetwork,
    circuit: RateCircuit,
    cal: LIFCalibration,
    inputs: np.ndarray,
    initial_rates: np.ndarray,
    seeds: list[int],
    constants: LIFConstants,
) -> SpikingTrials:
    """Task trials, ``net.shape.copies`` per Brian2 run: inputs (trial, time, n_inputs), model-space h0 (trial, units).

    Trial k's spikes depend only on its own inputs and seed, not on how trials are batched."""
    start = time.perf_counter()
    runs, traces = task_runs(circuit, cal, inputs, initial_rates, seeds, constants)
    outputs = run_many(net, runs)
    return task_results(outputs, traces, circuit, net.shape, constants, time.perf_counter() - start)


def run_quiescence(
    net: SpikingNetwork,
    circuit: RateCircuit,
    cal: LIFCalibration,
    initial_rates: np.ndarray,
    steps: int,
    seeds: list[int],
    constants: LIFConstants,
    base_seed: int,
    noise_current: np.ndarray | None = None,
) -> SpikingTrials:
    """Quiescent trials of ``steps`` rate steps, as consecutive runs of ``net.shape.steps`` with the full state
    carried over (chunk c of every trial in one pass, ``net.shape.copies`` trials per Brian2 run); no input.

    ``noise_current`` (trial, steps, units), if given, is fed as the input drive (the rate circuit's own offline
    noise mapped into currents, see `rate_noise_current`); otherwise the drive is zero. Chunk 0 of trial k uses
    seeds[k], chunk c > 0 run_seed(base_seed, "quiescence", k, c).
    """
    shape = net.shape
    n = circuit.n_units
    params = neuron_parameters(circuit, cal)
    weights = cal.lambda_s * circuit.recurrent
    chunks = math.ceil(steps / shape.steps)
    padded = np.zeros((len(seeds), chunks * shape.steps, n))
    if noise_current is not None:
        padded[:, :steps] = noise_current
    s0 = circuit.start_rates(initial_rates)
    start = time.perf_counter()
    starts = [initial_state(circuit, cal, s0[k], constants, seed) for k, seed in enumerate(seeds)]
    brian = [b for b, _ in starts]
    traces = [t for _, t in starts]
    pieces: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in seeds]
    for c in range(chunks):
        runs = [
            RunInputs(
                weights, padded[k, c * shape.steps : (c + 1) * shape.steps], params, brian[k],
                seed if c == 0 else run_seed(base_seed, "quiescence", k, c),
            )  # fmt: skip
            for k, seed in enumerate(seeds)
        ]
        for k, out in enumerate(run_many(net, runs)):
            sampled, traces[k] = filter_spikes(
                out.spike_unit, out.spike_time_s, shape.steps, shape.step_s, circuit.synaptic_tau_s,
                constants.tau_rise_ms / 1000.0, traces[k],
            )  # fmt: skip
            brian[k] = out.final_state
            counts = _counts(out.spike_unit, out.spike_time_s, shape.steps, shape.step_s, n)
            pieces[k].append((sampled, counts, out.spike_unit, out.spike_time_s + c * shape.duration_s))
    rates, counts, events, total = [], [], [], 0
    for trial in pieces:
        rates.append(np.concatenate([p[0] for p in trial])[:steps])
        counts.append(np.concatenate([p[1] for p in trial])[:steps])
        units, times = np.concatenate([p[2] for p in trial]), np.concatenate([p[3] for p in trial])
        keep = times < steps * shape.step_s
        events.append((units[keep], times[keep]))
        total += int(sum(p[2].size for p in trial))
    return SpikingTrials(np.stack(rates), np.stack(counts), events, time.perf_counter() - start, total)


def rate_noise_states(
    model: EICircuit, circuit: RateCircuit, n_trials: int, steps: int, seed: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """The rate circuit's own offline noise (`recircuit quiesce`, trained condition) in the twin's sigmoid space,
    drawn from base seed ``seed``.

    Returns (drive noise (trial, steps, units) to add to the currents, state noise eps (trial, steps, units) to
    add to the readout activity, SD per sqrt(tau)). State placement: h = s + eps with eps_t = (1 - a) eps_{t-1} +
    n_t, so the current gets W eps_{t-1} and the readout W_out eps_t (exact for the rate model's linear part);
    drive placement: the current gets n_t. A tanh circuit's noise is halved (s = (1 + h)/2). The noise is on the
    model units only (interneuron components of eps and n are zero); under state placement the interneurons read
    it like the rest of h (their rows of W eps_{t-1}), as the rate model's interneurons read h_{t-1}.
    """
    from recircuit.analysis.quiescence import condition_noise_sd

    spec = model.spec
    sd = float(condition_noise_sd(spec.reactivation, spec.network.noise.recurrent_sd)["trained"])
    n = circuit.n_model
    rng = np.random.default_rng(run_seed(seed, "quiescent_noise"))
    alpha = circuit.alpha
    step_sd = sd * np.sqrt(alpha)
    drive = np.zeros((n_trials, steps, circuit.n_units))
    state = np.zeros((n_trials, steps, circuit.n_units))
    if sd == 0:
        return drive, state, sd
    if spec.network.noise.placement == "drive":
        drive[..., :n] = rng.normal(size=(n_trials, steps, n)) * step_sd / circuit.state_scale
        return drive, state, sd
    eps = np.zeros((n_trials, n))
    reads = circuit.recurrent[:, :n]  # every unit's weights from the model units
    for t in range(steps):
        drive[:, t] = eps @ reads.T  # the current of step t sees the noise accumulated up to t - 1
        eps = (1 - alpha) * eps + rng.normal(size=eps.shape) * step_sd * circuit.state_scale
        state[:, t, :n] = eps
    return drive, state, sd


def measure_fi(
    net: SpikingNetwork,
    circuit: RateCircuit,
    cal: LIFCalibration,
    constants: LIFConstants,
    base_seed: int,
    seconds: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(currents, measured rates Hz): neuron i alone (no synapses, no bias) at a constant current across the range,
    for at least ``seconds`` of simulated time."""
    n, shape = circuit.n_units, net.shape
    currents = np.linspace(cal.current_low, cal.current_high, n)
    params = replace(neuron_parameters(circuit, cal), bias=np.zeros(n))
    repeats = max(1, math.ceil(seconds / shape.duration_s - 1e-9))
    runs = []
    for k in range(repeats):
        seed = run_seed(base_seed, "fi", k)
        rng = np.random.default_rng(seed)
        brian = resting_state(shape, rng.uniform(constants.v_reset_mV, constants.v_threshold_mV, n))
        drive = np.broadcast_to(currents, (shape.steps, n)).copy()
        runs.append(RunInputs(np.zeros((n, n)), drive, params, brian, seed))
    counts = np.zeros(n)
    for out in run_many(net, runs):
        counts += np.bincount(out.spike_unit, minlength=n)
    return currents, counts / (repeats * shape.duration_s)


# -------------------------------------------------------------------------------------------------------- metrics
def rate_readout(circuit: RateCircuit, rates: np.ndarray) -> np.ndarray:
    """Outputs W_out s + b_out (..., n_outputs) of sigmoid-space rates s (..., n_units)."""
    return rates @ circuit.output.T + circuit.output_bias


def spiking_readout(circuit: RateCircuit, cal: LIFCalibration, rates_hz: np.ndarray) -> np.ndarray:
    """Outputs lambda W_out r + b_out, (..., n_outputs)."""
    return rate_readout(circuit, cal.lambda_s * rates_hz)


def decode(model: EICircuit, outputs: np.ndarray) -> np.ndarray:
    """Decoded states (..., state_dims) of outputs, with the task's decoder."""
    with torch.no_grad():
        return model.task.decode(torch.from_numpy(outputs).float()).numpy().astype(np.float64)


def decoding_error(model: EICircuit, decoded: np.ndarray, states: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.task.error(torch.from_numpy(decoded).float(), torch.from_numpy(states).float()).numpy()


def readout_error(model: EICircuit, circuit: RateCircuit, rates: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Decoding error (trial, time), cm or deg, of the rate circuit's readout of sigmoid-space rates (trial, time,
    n_units) against the true states."""
    return decoding_error(model, decode(model, rate_readout(circuit, rates)), states)


def unit_correlations(spiking: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Pearson r per unit between (trial, time, unit) arrays over trials and steps; NaN where either is constant."""
    a = spiking.reshape(-1, spiking.shape[-1])
    b = rate.reshape(-1, rate.shape[-1])
    a = a - a.mean(0)
    b = b - b.mean(0)
    denominator = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(0) / denominator, np.nan)


def median_correlation(correlation: np.ndarray, mean_rate_hz: np.ndarray) -> tuple[float, int]:
    """(median over active units with a defined correlation, number of such units)."""
    keep = (mean_rate_hz > ACTIVE_RATE_HZ) & np.isfinite(correlation)
    return (float(np.median(correlation[keep])) if keep.any() else float("nan")), int(keep.sum())


def rate_statistics(
    counts: np.ndarray, seconds: float, n_exc: int, dale: bool, n_norm: int = 0
) -> dict[str, object]:
    """Mean rates of E, I (model units) and the last ``n_norm`` units (normalization interneurons) in Hz, fraction of
    silent units, maximum unit rate (Hz), per-unit rates (Hz); NaN for a population that is absent."""
    unit_rate = counts.sum(axis=(0, 1)) / seconds
    n = unit_rate.size - n_norm
    exc = unit_rate[:n_exc] if dale else unit_rate[:n]
    inh = unit_rate[n_exc:n] if dale else np.array([np.nan])
    return {
        "unit_rate": unit_rate,
        "mean_rate_exc": float(exc.mean()),
        "mean_rate_inh": float(inh.mean()) if inh.size else float("nan"),
        "mean_rate_norm": float(unit_rate[n:].mean()) if n_norm else float("nan"),
        "fraction_silent": float((unit_rate < SILENT_RATE_HZ).mean()),
        "max_unit_rate": float(unit_rate.max()),
    }


def offline_kl(
    model: EICircuit, quiet_decoded: np.ndarray, waking_decoded: np.ndarray, arena_m: float | None
) -> tuple[float, float]:
    """(KL(spiking quiescent || rate waking), KL(uniform || rate waking)) in nats, reactivation's estimator, over
    reactivation.distribution_steps of ``quiet_decoded`` (trial, steps after the burn-in, state_dims)."""
    from recircuit.analysis.reactivation import (
        CircularKde,
        PlanarKde,
        UniformCircle,
        UniformSquare,
        kl_divergences,
    )

    rs = model.spec.reactivation
    circular = model.task.kind == "head_direction"
    dims = 1 if circular else 2
    density = CircularKde if circular else PlanarKde

    def rng(*key: str) -> np.random.Generator:
        return np.random.default_rng([rs.analysis_seed, *(zlib.crc32(k.encode()) for k in key)])

    p = density(waking_decoded.reshape(-1, dims), rng("kde", "waking", "spiking"), rs.kde_max_points, rs.kde_floor_sd)
    quiet_decoded = quiet_decoded[:, : rs.distribution_steps]  # it starts after the burn-in
    q = density(quiet_decoded.reshape(-1, dims), rng("kde", "spiking"), rs.kde_max_points, rs.kde_floor_sd)
    uniform = UniformCircle() if circular else UniformSquare(float(arena_m))
    kl = kl_divergences(q, [p], rs.kl_samples, rng("kl", "spiking"))[0]
    kl_uniform = kl_divergences(uniform, [p], rs.kl_samples, rng("kl", "spiking", "uniform"))[0]
    return float(kl), float(kl_uniform)


# ------------------------------------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class SearchPoint:
    max_rate_hz: float
    calibration: LIFCalibration
    mean_error: float
    median_correlation: float


def search_trials(model: EICircuit, steps: int) -> RateTrials:
    """The rate circuit's trials of the lambda search (spiking.search_seed), which also set the operating range of
    the normalization interneurons (`rate_circuit_from_model`)."""
    sp = model.spec.spiking
    return rate_trials(model, sp.search_seed, sp.n_search_trials, sp.n_search_trials, steps)


def lambda_search(
    net: SpikingNetwork,
    model: EICircuit,
    circuit: RateCircuit,
    trials: RateTrials,
    constants: LIFConstants,
    log: Callable[[str], None],
) -> tuple[list[SearchPoint], tuple[float, float]]:
    """Every grid point's calibration and error on the search ``trials`` (`search_trials`); and the operating range
    used (percentiles of every unit's current, interneurons included)."""
    sp = model.spec.spiking
    currents = rate_currents(circuit, trials)
    low, high = np.percentile(currents, sp.calibration_percentiles)
    seeds = [run_seed(sp.seed, "search", k) for k in range(sp.n_search_trials)]
    if circuit.lif_curve is not None:  # the twin's neuron is the activation's: one exact point, no fit
        grid = [circuit.lif_curve.curve.max_rate_hz]
        calibrations = [lif_curve_calibration((low, high), circuit.lif_curve)]
        log(f"  network.activation lif: lambda is the curve's (1/lambda = {grid[0]:g} Hz), "
            "spiking.max_rate_grid_hz is not searched")  # fmt: skip
    else:
        grid = sp.max_rate_grid_hz
        calibrations = [
            calibrate_lif(
                1.0 / max_rate, (low, high), sp.membrane_noise_mV, sp.threshold_gap_mV, sp.tau_m_ms,
                sp.min_refractory_ms,
            )  # fmt: skip
            for max_rate in grid
        ]
    if sp.time_step_correction:
        calibrations = [
            correct_for_time_step(
                cal, constants.threshold_gap_mV, constants.tau_m_ms, net.shape.dt_ms, sp.min_refractory_ms
            )
            for cal in calibrations
        ]
        log(f"  f-I curves fitted for the neuron as integrated at dt = {net.shape.dt_ms:g} ms "
            "(spiking.time_step_correction)")  # fmt: skip
    # every grid point's trials in one list, so that batches of copies fill up across grid points
    start = time.perf_counter()
    prepared = [task_runs(circuit, cal, trials.inputs, trials.initial_rates, seeds, constants) for cal in calibrations]
    outputs = run_many(net, [run for runs, _ in prepared for run in runs])
    wall = time.perf_counter() - start
    points = []
    for g, (max_rate, cal) in enumerate(zip(grid, calibrations, strict=True)):
        mine = outputs[g * len(seeds) : (g + 1) * len(seeds)]
        spk = task_results(mine, prepared[g][1], circuit, net.shape, constants, wall / len(calibrations))
        decoded = decode(model, spiking_readout(circuit, cal, spk.rates_hz))
        error = float(decoding_error(model, decoded, trials.states).mean())
        mean_rate = spk.counts.sum(axis=(0, 1)) / (spk.counts.shape[0] * net.shape.duration_s)
        correlation = unit_correlations(cal.lambda_s * spk.rates_hz, trials.unit_rates(circuit, "none"))
        corr, _ = median_correlation(correlation[: circuit.n_model], mean_rate[: circuit.n_model])
        points.append(SearchPoint(float(max_rate), cal, error, corr))
        log(
            f"  1/lambda {max_rate:6.1f} Hz: search error {error:8.3f}  median r {corr:5.3f}  "
            f"(gain {cal.gain_mV:.2f} mV, offset {cal.offset_mV:.2f} mV, refractory {cal.refractory_ms:.2f} ms, "
            f"fit rms {100 * cal.relative_rms_error:.1f}% of max)"
        )
    return points, (float(low), float(high))


OVERRIDABLE_SECTIONS = ("spiking", "reactivation")


def with_overrides(spec: CircuitSpec, overrides: Sequence[str]) -> CircuitSpec:
    """The spec with ``spiking.<field>=value`` / ``reactivation.<field>=value`` overrides (the circuit is trained)."""
    return with_section_overrides(spec, overrides, OVERRIDABLE_SECTIONS)


def spike(
    run_dir: str | Path,
    out: str | Path | None = None,
    build_dir: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> Path:
    """Build and run the spiking twin of the trained circuit in ``run_dir``; write spiking.nc; return its path.

    ``build_dir`` is the Brian2 build cache (default RUN_DIR/.brian_build); a sweep may share one folder.
    """
    run_dir = Path(run_dir)
    model = load_model(run_dir, "cpu")
    model.spec = with_overrides(model.spec, overrides)  # only the spiking/reactivation sections can change
    spec, task = model.spec, model.task
    sp, ev, rs = spec.spiking, spec.evaluation, spec.reactivation
    check_convertible(spec, model.state_dict().keys(), model.lif_curve)  # refuse before any work
    steps = ev.sequence_steps or spec.task.sequence_steps
    if sp.n_trials > ev.n_trials:
        raise ValueError(f"spiking.n_trials ({sp.n_trials}) exceeds evaluation.n_trials ({ev.n_trials})")
    if sp.n_quiescent_trials > ev.n_trials:
        raise ValueError(
            f"spiking.n_quiescent_trials ({sp.n_quiescent_trials}) exceeds evaluation.n_trials ({ev.n_trials})"
        )
    quiet_steps = sp.quiescent_steps or rs.duration_steps
    if sp.n_quiescent_trials and rs.burn_in_steps >= quiet_steps:
        raise ValueError(
            f"reactivation.burn_in_steps ({rs.burn_in_steps}) must be below the quiescent steps ({quiet_steps})"
        )
    if sp.n_quiescent_trials and rs.distribution_steps and rs.burn_in_steps + rs.distribution_steps > quiet_steps:
        raise ValueError(
            f"reactivation.burn_in_steps + reactivation.distribution_steps ({rs.burn_in_steps} + "
            f"{rs.distribution_steps}) exceed the quiescent steps ({quiet_steps}; spiking.quiescent_steps)"
        )
    # The search trials serve the lambda search and, with subtractive normalization, the interneurons' range.
    searched = search_trials(model, steps)
    circuit = rate_circuit_from_model(
        model,
        sp.synaptic_tau,
        searched.trajectories("none"),
        normalization_tau_s=sp.normalization_tau_ms / 1000.0,
        normalization_current=sp.normalization_current,
    )
    constants = LIFConstants(
        tau_m_ms=sp.tau_m_ms,
        v_rest_mV=-65.0,
        v_threshold_mV=-65.0 + sp.threshold_gap_mV,
        v_reset_mV=-65.0,
        tau_rise_ms=sp.tau_rise_ms,
    )
    if np.any(circuit.synaptic_tau_s * 1000.0 <= sp.tau_rise_ms):
        raise ValueError(
            f"spiking.tau_rise_ms ({sp.tau_rise_ms}) must be below the synaptic decay "
            f"({1000 * circuit.synaptic_tau_s.min():.3g} ms, spiking.synaptic_tau = {sp.synaptic_tau})"
        )
    # One binary per network size for everything: search, f-I check, task trials and quiescence (in chunks of one
    # trial length), ``copies`` trials side by side per Brian2 run.
    copies = sp.copies or default_copies(circuit.n_units)
    shape = NetworkShape(circuit.n_units, steps, spec.task.dt_s, sp.dt_ms, copies, fast_synapses=circuit.n_norm > 0)
    build_root = Path(build_dir) if build_dir is not None else run_dir / ".brian_build"
    meta = model.meta
    timer = time.perf_counter()
    norm = f" ({circuit.n_norm} normalization interneurons)" if circuit.n_norm else ""
    log(f"spiking twin of {run_dir}: {circuit.n_units} LIF neurons{norm} x {copies} copies, target {sp.target}")
    quiet = noise_state = None
    quiet_rate_sd = 0.0
    with SpikingNetwork(shape, constants, sp.target, build_root) as net:
        assert net.info is not None
        how = "compiled" if net.info.compiled else "reused"
        log(f"  network ready in {net.info.build_s:.1f} s ({how} {net.info.key})")
        search, (low, high) = lambda_search(net, model, circuit, searched, constants, log)
        best = min(search, key=lambda p: (not math.isfinite(p.mean_error), p.mean_error))
        cal = best.calibration
        log(f"  kept 1/lambda = {best.max_rate_hz:.1f} Hz")
        fi_current, fi_rate = measure_fi(net, circuit, cal, constants, sp.seed, sp.fi_check_s)
        trials = rate_trials(model, ev.seed, ev.n_trials, sp.n_trials, steps)
        task_seeds = [run_seed(sp.seed, "task", k) for k in range(sp.n_trials)]
        spk = run_task_trials(net, circuit, cal, trials.inputs, trials.initial_rates, task_seeds, constants)
        if sp.n_quiescent_trials:
            quiet_starts = evaluation_starts(model, steps, sp.n_quiescent_trials)
            quiet_seeds = [run_seed(sp.seed, "quiescence", k, 0) for k in range(sp.n_quiescent_trials)]
            if sp.quiescent_noise == "membrane+rate":
                noise_drive, noise_state, quiet_rate_sd = rate_noise_states(
                    model, circuit, sp.n_quiescent_trials, quiet_steps, sp.seed
                )
            else:
                noise_drive, noise_state, quiet_rate_sd = None, None, 0.0
            quiet = run_quiescence(
                net, circuit, cal, quiet_starts, quiet_steps, quiet_seeds, constants, sp.seed, noise_drive
            )
        infos, runs = [net.info], net.runs
    elapsed = time.perf_counter() - timer

    # ----- task agreement
    decoded = decode(model, spiking_readout(circuit, cal, spk.rates_hz))
    error = decoding_error(model, decoded, trials.states)
    error_ratio = {k: float(error.mean() / trials.error[k].mean()) for k in RATE_NOISE}
    # The f-I curve alone: the rate circuit with the twin's neuron's predicted f-I curve (its time step included
    # when spiking.time_step_correction) in place of its own and no spikes. Its error against the noise-free rate
    # circuit's separates f-I mismatch from spike noise in the twin's error.
    lif = cal.lif_activation(sp.threshold_gap_mV, sp.tau_m_ms)
    source_error = {
        "fi_only": readout_error(
            model, circuit, simulate_rate_circuit(circuit, trials.inputs, trials.initial_rates, lif), trials.states
        )
    }
    n_model = circuit.n_model
    task_stats = rate_statistics(
        spk.counts, sp.n_trials * shape.duration_s, circuit.n_exc, circuit.dale, circuit.n_norm
    )
    spiking_activity = cal.lambda_s * spk.rates_hz
    correlation = {k: unit_correlations(spiking_activity, trials.unit_rates(circuit, k)) for k in RATE_NOISE}
    unit_rate = task_stats["unit_rate"]
    medians = {k: median_correlation(correlation[k][:n_model], unit_rate[:n_model]) for k in RATE_NOISE}
    norm_medians = {k: median_correlation(correlation[k][n_model:], unit_rate[n_model:]) for k in RATE_NOISE}
    # The twin's own variability as the rate model's recurrent noise (per sqrt(tau)), on the task trials.
    twin_noise = effective_noise_sd(circuit, lif, spiking_activity, trials.inputs)
    active = unit_rate[:n_model] > ACTIVE_RATE_HZ
    twin_noise_median = float(np.median(twin_noise[active])) if active.any() else float("nan")
    # The twin's noise alone: the rate circuit with its own rate function and state noise of the twin's SD per unit
    # on the same trials, its error averaged over NOISE_ONLY_DRAWS draws of that noise (one draw's mean over a few
    # trials varies by 10-20%).
    noise_rng = np.random.default_rng(run_seed(sp.seed, "task_noise"))
    source_error["noise_only"] = np.zeros_like(error)
    for _ in range(NOISE_ONLY_DRAWS):
        draws = noise_rng.standard_normal((sp.n_trials, steps, n_model))
        noisy_rates = simulate_rate_circuit(
            circuit, trials.inputs, trials.initial_rates, state_noise=state_noise(circuit, twin_noise, draws)
        )
        source_error["noise_only"] += readout_error(model, circuit, noisy_rates, trials.states) / NOISE_ONLY_DRAWS
    # The twin without spikes: its f-I curve and synaptic kernels in continuous time (`continuous_rate_circuit`).
    mean_field_rates = continuous_rate_circuit(
        circuit, trials.inputs, trials.initial_rates, sp.tau_rise_ms / 1000.0, lif
    )
    source_error["mean_field"] = readout_error(model, circuit, mean_field_rates, trials.states)
    source_ratio = {name: float(e.mean() / trials.error["none"].mean()) for name, e in source_error.items()}

    # ----- quiescence
    kl = kl_uniform = kl_rate = float("nan")
    kl_matched = [float("nan")] * len(RATE_MAPS)
    quiet_decoded = rate_quiet = matched_quiet = None
    if quiet is not None:
        quiet_seconds = sp.n_quiescent_trials * quiet_steps * shape.step_s
        quiet_stats = rate_statistics(quiet.counts, quiet_seconds, circuit.n_exc, circuit.dale, circuit.n_norm)
        quiet_outputs = spiking_readout(circuit, cal, quiet.rates_hz)
        if noise_state is not None:
            quiet_outputs = quiet_outputs + noise_state @ circuit.output.T  # readout of h = lambda r + eps
        quiet_decoded = decode(model, quiet_outputs)
        waking_path = run_dir / WAKING_FILE
        if waking_path.is_file():
            waking_ds = open_dataset(waking_path)
            name = "decoded_position" if task.kind == "path_integration" else "decoded_heading"
            waking_decoded = np.asarray(waking_ds[name].values, dtype=np.float64)
            n_waking, n_steps = waking_decoded.shape[:2]
            waking_source = f"{WAKING_FILE} decoded states ({n_waking} trials x {n_steps} steps)"
        else:
            waking_decoded = trials.decoded["evaluation"]
            waking_source = f"rate circuit on the {sp.n_trials} spiking task trials (no {WAKING_FILE} in {run_dir})"
        arena = spec.task.arena_m if task.kind == "path_integration" else None
        kl, kl_uniform = offline_kl(model, quiet_decoded[:, rs.burn_in_steps :], waking_decoded, arena)
        rate_quiet = rate_quiescence(model, quiet_starts, quiet_steps)
        kl_rate, _ = offline_kl(model, rate_quiet, waking_decoded, arena)
        placement_drive = spec.network.noise.placement == "drive" and noise_drive is not None
        maps = {"own": circuit.phi, "twin_fi": lif}
        draws = np.random.default_rng(run_seed(sp.seed, "matched_noise")).standard_normal(
            (sp.n_quiescent_trials, quiet_steps, circuit.n_model)
        )
        matched_quiet = np.stack(
            [
                matched_rate_quiescence(
                    model, circuit, quiet_starts, quiet_steps, twin_noise, draws,
                    (quiet_rate_sd, noise_drive if placement_drive else None), maps[name],
                )  # fmt: skip
                for name in RATE_MAPS
            ]
        )
        kl_matched = [offline_kl(model, states, waking_decoded, arena)[0] for states in matched_quiet]
        log(
            f"  quiescence ({sp.n_quiescent_trials} trials): KL(offline || rate waking) spiking {kl:.3f} nat, "
            f"rate {kl_rate:.3f} nat (same starts), uniform {kl_uniform:.3f} nat; with the twin's noise: rate "
            f"{kl_matched[0]:.3f} nat, rate with the LIF f-I curve {kl_matched[1]:.3f} nat"
        )
    else:
        quiet_stats = None
        waking_source = "none (no quiescent trials)"

    log(
        f"  task: spiking error {error.mean():.3f} vs rate {trials.error['evaluation'].mean():.3f} (ratio "
        f"{error_ratio['evaluation']:.2f}; noise-free rate ratio {error_ratio['none']:.2f}); median unit r "
        f"{medians['evaluation'][0]:.3f} (noise-free rate {medians['none'][0]:.3f}); mean rate E "
        f"{task_stats['mean_rate_exc']:.1f} Hz, I {task_stats['mean_rate_inh']:.1f} Hz"
    )
    log(
        f"  the LIF f-I curve alone (rate circuit, no spikes): error {source_error['fi_only'].mean():.3f}, "
        f"{source_ratio['fi_only']:.2f} x the noise-free rate circuit's"
    )
    log(
        f"  the twin's own noise: {twin_noise_median:.3g} per sqrt(tau) (median over units firing > "
        f"{ACTIVE_RATE_HZ} Hz), against network.noise.recurrent_sd = {spec.network.noise.recurrent_sd:g}"
    )
    log(
        f"  the twin without spikes (its f-I curve and synapses in continuous time): error "
        f"{source_error['mean_field'].mean():.3f}, {source_ratio['mean_field']:.2f} x the noise-free rate circuit's; "
        f"the rate circuit with the twin's noise: {source_ratio['noise_only']:.2f} x; the twin: "
        f"{error_ratio['none']:.2f} x"
    )
    dt_over_tau = float(circuit.alpha.max())
    note = continuous_time_note(error_ratio["none"], source_ratio["mean_field"], dt_over_tau)
    if note:
        log(f"  note: {note}")
    if circuit.n_norm:
        log(
            f"  normalization interneurons: median r {norm_medians['evaluation'][0]:.3f} (noise-free rate "
            f"{norm_medians['none'][0]:.3f}; {norm_medians['none'][1]} of {circuit.n_norm} above "
            f"{ACTIVE_RATE_HZ} Hz), mean rate {task_stats['mean_rate_norm']:.1f} Hz"
        )

    ds = _dataset(
        model, circuit, cal, search, (low, high), fi_current, fi_rate, trials, spk, decoded, error, error_ratio,
        correlation, medians, norm_medians, task_stats, quiet, quiet_decoded, quiet_stats, quiet_steps,
        (kl, kl_rate, kl_uniform, kl_matched), rate_quiet, matched_quiet, (twin_noise, twin_noise_median), shape,
        constants,
    )  # fmt: skip
    kl_window = rs.distribution_window()
    kl_window_end = quiet_steps if kl_window.stop is None else kl_window.stop
    ds.attrs.update(
        {
            **provenance(
                spec, circuit=meta["circuit"], variant=meta["variant"], seed=meta["seed"], device="cpu (brian2)"
            ),
            "brian2_target": sp.target,
            "brian2_build_keys": " ".join(i.key for i in infos),
            "brian2_build_dirs": " ".join(str(i.directory) for i in infos if i.directory is not None),
            "brian2_compiled_this_job": int(any(i.compiled for i in infos)),
            "build_s": float(sum(i.build_s for i in infos)),
            "brian2_runs": int(runs),
            "brian2_copies": int(copies),
            "wall_s": float(elapsed),
            "task_run_wall_s": float(spk.wall_s),
            "quiescent_run_wall_s": float(quiet.wall_s) if quiet is not None else 0.0,
            "quiescent_noise": sp.quiescent_noise,
            "quiescent_rate_noise_sd": float(quiet_rate_sd) if quiet is not None else 0.0,
            "evaluation_seed": ev.seed,
            "rate_reference": (
                "rate_noise=evaluation: the rate circuit with the evaluation's own recurrent-noise draws (as in "
                "waking.nc); rate_noise=none: the same trials without recurrent noise"
            ),
            "waking_reference_of_kl": waking_source,
            "source_activation": circuit.source_activation,
            "quiet_burn_in_steps": rs.burn_in_steps,
            "quiet_distribution_window_steps": f"{kl_window.start + 1}-{kl_window_end}",
            "dt_s": spec.task.dt_s,
            "task_kind": task.kind,
        }
    )
    error_name, error_long, error_units = error_variable(task.kind)
    for name, (error_of, ratio_long) in ERROR_SOURCES.items():
        ds[f"{name}_{error_name}"] = label(
            xr.DataArray(source_error[name], dims=("trial", "time")), f"{error_long} {error_of}", error_units
        )
        ds[f"{name}_error_ratio"] = label(xr.DataArray(source_ratio[name]), ratio_long, "1")
    ds["dt_over_tau"] = label(
        xr.DataArray(dt_over_tau),
        "largest Euler step of the trained rate circuit over its units' time constants, dt/tau (the continuous-time "
        "twin follows the Euler map it was trained as only where this is small)",
        "1",
    )
    ds = with_sweep_dims(ds, circuit=meta["circuit"], variant=meta["variant"], seed=meta["seed"])
    path = save_dataset(ds, Path(out) if out else run_dir / SPIKING_FILE)
    log(f"  wrote {path} in {elapsed:.1f} s ({runs} Brian2 runs)")
    return path


# ------------------------------------------------------------------------------------------------------ dataset
NORM_POPULATION = "I_norm"


def twin_unit_coords(circuit: RateCircuit) -> dict[str, xr.DataArray]:
    """`unit` and `population` of every neuron of the twin: the model units' labels (E, I, or 'unconstrained'
    without Dale's law, as `unit_coords`), then NORM_POPULATION for the normalization interneurons."""
    coords = unit_coords(circuit.n_exc, circuit.n_inh, circuit.dale)
    if not circuit.n_norm:
        return coords
    population = np.concatenate([coords["population"].values.astype(str), [NORM_POPULATION] * circuit.n_norm])
    return {
        "unit": label(
            xr.DataArray(np.arange(circuit.n_units), dims="unit"),
            "neuron of the twin: recurrent units, then normalization interneurons",
            "1",
        ),
        "population": label(
            xr.DataArray(population, dims="unit"),
            f"population of the unit ({NORM_POPULATION}: normalization interneuron, inhibitory)",
            "1",
        ),
    }


def _state_vars(kind: str, name: str, values: np.ndarray, dims: tuple[str, ...], what: str) -> dict[str, xr.DataArray]:
    if kind == "path_integration":
        return {f"{name}_position": label(xr.DataArray(values, dims=(*dims, "space")), f"{what} position", "m")}
    return {f"{name}_heading": label(xr.DataArray(values[..., 0], dims=dims), f"{what} heading", "rad")}


def _events(events: list[tuple[np.ndarray, np.ndarray]], prefix: str, what: str) -> tuple[dict, dict]:
    unit = np.concatenate([u for u, _ in events]) if events else np.zeros(0, np.int32)
    times = np.concatenate([t for _, t in events]) if events else np.zeros(0)
    trial = np.concatenate([np.full(len(u), k) for k, (u, _) in enumerate(events)]) if events else np.zeros(0, int)
    dim = f"{prefix}_spike"
    data = {
        f"{prefix}_spike_time": label(xr.DataArray(times, dims=dim), f"spike time since the {what} start", "s"),
        f"{prefix}_spike_unit": label(xr.DataArray(unit.astype(np.int32), dims=dim), "spiking neuron", "1"),
        f"{prefix}_spike_trial": label(xr.DataArray(trial.astype(np.int32), dims=dim), f"{what} of the spike", "1"),
    }
    coords = {dim: label(xr.DataArray(np.arange(len(unit)), dims=dim), f"{what} spike event", "1")}
    return data, coords


def _dataset(
    model, circuit, cal, search, op_range, fi_current, fi_rate, trials, spk, decoded, error, error_ratio,
    correlation, medians, norm_medians, task_stats, quiet, quiet_decoded, quiet_stats, quiet_steps, kls, rate_quiet,
    matched_quiet, twin_noise, shape, constants,
) -> xr.Dataset:  # fmt: skip
    """spiking.nc (before the sweep dimensions): see the module docstring and the variables' long_name."""
    spec, task = model.spec, model.task
    sp = spec.spiking
    kind = task.kind
    error_name, error_long, error_units = error_variable(kind)
    n_raster = min(sp.n_raster_trials, sp.n_trials)
    scalar = lambda v, long, units: label(xr.DataArray(float(v)), long, units)  # noqa: E731
    rn = list(RATE_NOISE)
    data: dict[str, xr.DataArray] = {
        **_state_vars(kind, "true", trials.states, ("trial", "time"), "true"),
        **_state_vars(kind, "spiking_decoded", decoded, ("trial", "time"), "decoded from spikes"),
        **_state_vars(
            kind, "rate_decoded", np.stack([trials.decoded[k] for k in rn]), ("rate_noise", "trial", "time"),
            "decoded from the rate circuit",
        ),  # fmt: skip
        f"spiking_{error_name}": label(
            xr.DataArray(error, dims=("trial", "time")), f"{error_long} of the spiking twin", error_units
        ),
        f"rate_{error_name}": label(
            xr.DataArray(np.stack([trials.error[k] for k in rn]), dims=("rate_noise", "trial", "time")),
            f"{error_long} of the rate circuit",
            error_units,
        ),
        "error_ratio": label(
            xr.DataArray([error_ratio[k] for k in rn], dims="rate_noise"),
            "mean decoding error spiking / rate on the same trials",
            "1",
        ),
        "spike_count": label(
            xr.DataArray(spk.counts.astype(np.uint16), dims=("trial", "time", "unit")), "spikes per rate step", "1"
        ),
        "spiking_rate": label(
            xr.DataArray(spk.rates_hz.astype(np.float32), dims=("trial", "time", "unit")),
            "filtered spike train r (unit-area kernel, decay tau) at the end of each step",
            "Hz",
        ),
        "rate_activity": label(
            xr.DataArray(
                np.stack([trials.unit_rates(circuit, k) for k in rn]).astype(np.float32),
                dims=("rate_noise", "trial", "time", "unit"),
            ),
            "rate-unit activity h in the twin's sigmoid space ((1 + h)/2 for a tanh circuit), comparable to lambda r; "
            "normalization interneurons: their rate sigmoid(c (W_IX x - m)) at each step",
            "1",
        ),
        "unit_correlation": label(
            xr.DataArray(np.stack([correlation[k] for k in rn]), dims=("rate_noise", "unit")),
            "Pearson r of lambda r_spk with h over trials and steps",
            "1",
        ),
        "median_unit_correlation": label(
            xr.DataArray([medians[k][0] for k in rn], dims="rate_noise"),
            f"median unit correlation over model units firing > {ACTIVE_RATE_HZ} Hz",
            "1",
        ),
        "n_correlated_units": label(
            xr.DataArray([medians[k][1] for k in rn], dims="rate_noise"), "units entering the median correlation", "1"
        ),
        "median_norm_correlation": label(
            xr.DataArray([norm_medians[k][0] for k in rn], dims="rate_noise"),
            f"median correlation over normalization interneurons firing > {ACTIVE_RATE_HZ} Hz (NaN: none)",
            "1",
        ),
        # normalization interneurons (subtractive normalization; the last n_norm units)
        "n_norm_interneurons": label(
            xr.DataArray(np.int32(circuit.n_norm)), "normalization interneurons (the last units of the twin)", "1"
        ),
        "norm_current_range": scalar(
            circuit.norm_current if circuit.n_norm else np.nan,
            "half-range Y of the interneurons' current: activity percentiles 1..99 map onto [-Y, Y] (NaN: none)",
            "1",
        ),
        "norm_scale": label(
            xr.DataArray(np.concatenate([np.full(circuit.n_model, np.nan), circuit.norm_scale]), dims="unit"),
            "gain c of a normalization interneuron's current c (W_IX x - m), x = [h; u; 1] (NaN: model unit)",
            "1",
        ),
        "norm_midpoint": label(
            xr.DataArray(np.concatenate([np.full(circuit.n_model, np.nan), circuit.norm_midpoint]), dims="unit"),
            "midpoint m of a normalization interneuron's activity W_IX x on the search trials (NaN: model unit)",
            "1",
        ),
        # conversion
        "lambda_s": scalar(cal.lambda_s, "rate-to-spiking scale lambda (h = lambda r; weights x lambda)", "s"),
        "max_rate": scalar(cal.max_rate_hz, "1/lambda: rate of a saturated unit", "Hz"),
        "input_gain": scalar(cal.gain_mV, "membrane drive per unit of rate-model current", "mV"),
        "input_offset": scalar(cal.offset_mV, "membrane drive at zero current, above rest", "mV"),
        "membrane_noise": scalar(cal.noise_mV, "membrane noise sigma (free-membrane SD sigma/sqrt 2)", "mV"),
        "refractory_period": scalar(cal.refractory_ms, "absolute refractory period", "ms"),
        "tau_membrane": scalar(constants.tau_m_ms, "membrane time constant", "ms"),
        "tau_rise": scalar(constants.tau_rise_ms, "synaptic rise time", "ms"),
        "tau_synapse": label(
            xr.DataArray(circuit.synaptic_tau_s * 1000.0, dims="unit"),
            "decay of the synaptic kernel of the unit's spikes, on every synapse it makes and in its readout trace "
            "(spiking.synaptic_tau: rate tau or discrete-matched; interneurons: spiking.normalization_tau_ms)",
            "ms",
        ),
        "calibration_current_low": scalar(op_range[0], "operating range of the f-I fit, lower current", "1"),
        "calibration_current_high": scalar(op_range[1], "operating range of the f-I fit, upper current", "1"),
        "calibration_rms": scalar(cal.relative_rms_error, "f-I fit RMS error (predicted vs target) / max rate", "1"),
        # grid search
        "search_max_rate": label(xr.DataArray([p.max_rate_hz for p in search], dims="search"), "1/lambda", "Hz"),
        f"search_{error_name}": label(
            xr.DataArray([p.mean_error for p in search], dims="search"),
            f"mean {error_long} of the spiking twin on the search trials",
            error_units,
        ),
        "search_correlation": label(
            xr.DataArray([p.median_correlation for p in search], dims="search"),
            "median unit correlation with the noise-free rate circuit on the search trials",
            "1",
        ),
        "search_input_gain": label(
            xr.DataArray([p.calibration.gain_mV for p in search], dims="search"), "fitted input gain", "mV"
        ),
        "search_input_offset": label(
            xr.DataArray([p.calibration.offset_mV for p in search], dims="search"), "fitted offset", "mV"
        ),
        "search_refractory_period": label(
            xr.DataArray([p.calibration.refractory_ms for p in search], dims="search"),
            "fitted refractory period",
            "ms",
        ),
        "search_calibration_rms": label(
            xr.DataArray([p.calibration.relative_rms_error for p in search], dims="search"),
            "f-I fit RMS error / max rate",
            "1",
        ),
        # f-I check
        "fi_current": label(xr.DataArray(fi_current, dims="fi_point"), "constant rate-model current", "1"),
        "fi_rate_measured": label(
            xr.DataArray(fi_rate, dims="fi_point"), "simulated rate of a lone neuron at constant current", "Hz"
        ),
        "fi_rate_target": label(
            xr.DataArray(cal.target_rate_hz(fi_current), dims="fi_point"),
            "target phi(x) / lambda (phi: the circuit's rate function)",
            "Hz",
        ),
        "fi_rate_predicted": label(
            xr.DataArray(cal.rate_hz(fi_current, constants.threshold_gap_mV, constants.tau_m_ms), dims="fi_point"),
            "predicted rate of the calibrated neuron: as integrated at dt_ms (spiking.time_step_correction), else "
            "the diffusion-approximation (Siegert) rate",
            "Hz",
        ),
        "twin_noise_sd": label(
            xr.DataArray(np.concatenate([twin_noise[0], np.full(circuit.n_norm, np.nan)]), dims="unit"),
            "the twin's own variability as the rate model's recurrent noise: SD of the one-step innovation of "
            "lambda r against the LIF rate map / sqrt(dt/tau), task trials (spiking.effective_noise; NaN: "
            "normalization interneuron), comparable with network.noise.recurrent_sd",
            "1",
        ),
        "median_twin_noise_sd": scalar(
            twin_noise[1], f"median twin_noise_sd over model units firing > {ACTIVE_RATE_HZ} Hz on the task", "1"
        ),
        "fi_rms": scalar(
            np.sqrt(np.mean((fi_rate - cal.target_rate_hz(fi_current)) ** 2)) * cal.lambda_s,
            "RMS(simulated - target rate) / max rate over the operating range",
            "1",
        ),
    }
    coords: dict[str, xr.DataArray] = {
        "trial": label(xr.DataArray(np.arange(sp.n_trials), dims="trial"), "held-out trial", "1"),
        "time": label(
            xr.DataArray((np.arange(shape.steps) + 1) * shape.step_s, dims="time"), "time since trial start", "s"
        ),
        "rate_noise": label(
            xr.DataArray(rn, dims="rate_noise"), "rate reference: evaluation noise draws, or no recurrent noise", "1"
        ),
        "search": label(xr.DataArray(np.arange(len(search)), dims="search"), "grid point of the lambda search", "1"),
        "fi_point": label(xr.DataArray(np.arange(fi_current.size), dims="fi_point"), "point of the f-I check", "1"),
        **twin_unit_coords(circuit),
    }
    if kind == "path_integration":
        coords["space"] = label(xr.DataArray(["x", "y"], dims="space"), "spatial axis", "1")
    protocols = ["task"] + (["quiescence"] if quiet_stats is not None else [])
    stats = [task_stats] + ([quiet_stats] if quiet_stats is not None else [])
    coords["protocol"] = label(xr.DataArray(protocols, dims="protocol"), "task trials or quiescence", "1")
    data["unit_rate"] = label(
        xr.DataArray(np.stack([s["unit_rate"] for s in stats]), dims=("protocol", "unit")), "mean firing rate", "Hz"
    )
    for key, long in (
        ("mean_rate_exc", "mean firing rate of E units"),
        ("mean_rate_inh", "mean firing rate of I units"),
        ("mean_rate_norm", "mean firing rate of the normalization interneurons (NaN: none)"),
        ("max_unit_rate", "highest mean firing rate of a unit"),
    ):
        data[key] = label(xr.DataArray([s[key] for s in stats], dims="protocol"), long, "Hz")
    data["fraction_silent"] = label(
        xr.DataArray([s["fraction_silent"] for s in stats], dims="protocol"),
        f"fraction of units firing < {SILENT_RATE_HZ} Hz",
        "1",
    )
    raster, raster_coords = _events(spk.events[:n_raster], "task", "task trial")
    data.update(raster)
    coords.update(raster_coords)
    if quiet is not None:
        coords["quiet_trial"] = label(
            xr.DataArray(np.arange(quiet.counts.shape[0]), dims="quiet_trial"), "quiescent trial", "1"
        )
        coords["quiet_time"] = label(
            xr.DataArray((np.arange(quiet_steps) + 1) * shape.step_s, dims="quiet_time"),
            "time since quiescence start",
            "s",
        )
        data["quiet_spike_count"] = label(
            xr.DataArray(quiet.counts.astype(np.uint16), dims=("quiet_trial", "quiet_time", "unit")),
            "spikes per rate step during quiescence",
            "1",
        )
        quiet_dims = ("quiet_trial", "quiet_time")
        data.update(_state_vars(kind, "quiet_decoded", quiet_decoded, quiet_dims, "offline decoded from spikes"))
        window = shape.duration_s  # quiescent spike events: the first trial-length of quiescent trial 0
        units, times = quiet.events[0]
        q_events, q_coords = _events([(units[times < window], times[times < window])], "quiet", "quiescent trial")
        data.update(q_events)
        coords.update(q_coords)
        burn_in = spec.reactivation.burn_in_steps
        data.update(
            _state_vars(
                kind, "quiet_rate_decoded", rate_quiet, ("quiet_trial", "quiet_time_after_burn_in"),
                "offline decoded from the rate circuit's own quiescence (same starts)",
            )
        )  # fmt: skip
        coords["quiet_time_after_burn_in"] = label(
            xr.DataArray((np.arange(quiet_steps - burn_in) + 1) * shape.step_s, dims="quiet_time_after_burn_in"),
            "time since the end of the quiescent burn-in",
            "s",
        )
        kl, kl_rate, kl_uniform, kl_matched = kls
        data.update(
            _state_vars(
                kind, "quiet_matched_decoded", matched_quiet, ("rate_map", "quiet_trial", "quiet_time_after_burn_in"),
                "offline decoded from the rate circuit (its own rate function, or the twin's fitted LIF f-I curve) "
                "run with the twin's own noise (twin_noise_sd per unit; same starts and draws)",
            )
        )  # fmt: skip
        data["kl_offline_rate_matched"] = label(
            xr.DataArray(kl_matched, dims="rate_map"),
            "KL(rate quiescent with the twin's noise || rate waking): the rate circuit, no spikes, run offline from "
            "the same starts with state noise of twin_noise_sd per unit; rate_map own: with its own rate function, "
            "what the twin's noise level alone predicts; twin_fi: the twin's mean field (its fitted f-I curve) with "
            "that noise",
            "nat",
        )
        coords["rate_map"] = label(
            xr.DataArray(list(RATE_MAPS), dims="rate_map"),
            "rate map of the quiescence with the twin's noise: the circuit's own rate function or the twin's "
            "fitted LIF f-I curve",
            "1",
        )
        data["kl_offline"] = scalar(kl, "KL(spiking quiescent || rate waking) of decoded states after burn-in", "nat")
        data["kl_offline_rate"] = scalar(
            kl_rate, "KL(rate quiescent || rate waking) on the same quiescent starts (the rate reference)", "nat"
        )
        data["kl_uniform"] = scalar(kl_uniform, "KL(uniform || rate waking), the no-structure reference", "nat")
    ds = xr.Dataset(data, coords=coords)
    for name in ("spike_count", "quiet_spike_count", "spiking_rate", "rate_activity"):
        if name in ds:
            ds[name].encoding.update(COMPRESSION)
    return ds

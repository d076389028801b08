"""The spiking twin: conversion (weights, Dale, refusals, tanh rewrite, subtractive normalization interneurons), f-I
calibration, the Brian2 network (weights read back, build once / run many, seeds, a 2-neuron direction check), the
readout filter, and tiny end-to-end `recircuit spike` runs on the numpy target with their figures."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.special import expit
from conftest import CIRCUITS_DIR

from recircuit.circuit import Noise, build_circuit
from recircuit.spec import SpecError
from recircuit.spiking.convert import (
    ConversionRefused,
    RateTrajectories,
    calibrate_lif,
    check_convertible,
    rate_circuit_from_model,
    siegert_rate_hz,
)
from recircuit.spiking.network import (
    LIFConstants,
    NetworkShape,
    NeuronParameters,
    RunInputs,
    SpikingNetwork,
    filter_spikes,
)
from recircuit.spiking.simulate import offline_kl, simulate_rate_circuit

os.environ.setdefault("OMP_NUM_THREADS", "1")
CONSTANTS = LIFConstants()


def quiet_state(n: int, v_mV: float | np.ndarray = -65.0) -> dict[str, np.ndarray]:
    return {
        "v": np.broadcast_to(np.asarray(v_mV, dtype=float), (n,)).copy(),
        "I_rec": np.zeros(n),
        "g_rise": np.zeros(n),
        "lastspike": np.full(n, -1e4),
        "not_refractory": np.ones(n, dtype=bool),
    }


def params(n: int, cal=None, noise_mV: float | None = None, tau_s: float = 0.1) -> NeuronParameters:
    if cal is None:
        return NeuronParameters(np.full(n, tau_s), np.zeros(n), 10.0, 10.0, 3.0 if noise_mV is None else noise_mV, 5.0)
    return NeuronParameters(
        np.full(n, tau_s), np.zeros(n), cal.gain_mV, cal.offset_mV, cal.noise_mV if noise_mV is None else noise_mV,
        cal.refractory_ms,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_non_saturating_activations_are_refused(make_spec, activation):
    model, _ = build_circuit(make_spec("path_integration", {"network.activation": activation}))
    with pytest.raises(ConversionRefused, match=rf"network.activation is '{activation}'.*Kim, Li & Sejnowski"):
        rate_circuit_from_model(model)


def test_unknown_mechanisms_are_refused_not_dropped(make_spec):
    with pytest.raises(ConversionRefused, match=r"model parameter 'gate_raw'"):
        check_convertible(make_spec(), ["recurrent_raw", "gate_raw"])
    check_convertible(make_spec(), build_circuit(make_spec())[0].state_dict().keys())  # the plain circuit converts
    # divisive normalization: refused by name, with the reason and what converts instead
    divisive, _ = build_circuit(make_spec("path_integration", {"network.normalization.kind": "divisive"}))
    with pytest.raises(ConversionRefused, match=r"network.normalization.kind = 'divisive'") as refused:
        rate_circuit_from_model(divisive)
    assert "cannot divide" in str(refused.value) and "'subtractive'" in str(refused.value)
    # subtractive converts (error normalization and the homeostatic loss only act in training) ...
    overrides = {"network.normalization.kind": "subtractive", "network.normalization.errors": "full"}
    subtractive, _ = build_circuit(make_spec("path_integration", overrides))
    keys = list(subtractive.state_dict().keys())
    assert {"normalization.ix_raw", "normalization.ei_raw"} <= set(keys)
    check_convertible(subtractive.spec, keys)
    # ... but a divisive pathway's parameters on it are not dropped silently
    with pytest.raises(ConversionRefused, match=r"model parameter 'normalization.bix'"):
        check_convertible(subtractive.spec, [*keys, "normalization.bix"])
    with pytest.raises(ValueError, match="needs rate trajectories"):
        rate_circuit_from_model(subtractive)  # the interneurons' operating range comes from trajectories
    # the reference code's uniform noise has a nonzero mean, a tonic drive with no spiking counterpart
    uniform, _ = build_circuit(make_spec("path_integration", {"network.noise.distribution": "reference_uniform"}))
    with pytest.raises(ConversionRefused, match=r"network.noise.distribution is 'reference_uniform'.*gaussian"):
        rate_circuit_from_model(uniform)


def normalized_circuit(make_spec, kind="head_direction", overrides=None, seed=1):
    """A subtractive-normalization model whose interneurons differ (W_IX rows perturbed: at initialisation they are
    all the mean E row), with a nonzero bias; and its noise-free rate trajectories on 4 trials of 30 steps."""
    spec = make_spec(kind, {"network.normalization.kind": "subtractive", "network.normalization.n_interneurons": 3,
                            **(overrides or {})})  # fmt: skip
    model, task = build_circuit(spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm = model.normalization
        norm.ix_raw.mul_(1.0 + 0.5 * torch.randn(norm.ix_raw.shape, generator=g))
        model.bias.normal_(0.0, 0.5, generator=g)
        trials = task.sample(4, 30, torch.Generator().manual_seed(0))
        outputs, rates = model(trials.inputs, trials.initial_code, Noise(None, None))
        h0 = model.initial_rates(trials.initial_code)
    trajectories = RateTrajectories(rates.double().numpy(), trials.inputs.double().numpy(), h0.double().numpy())
    return model, trajectories, outputs.double().numpy()


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_subtractive_interneurons_reproduce_the_model_up_to_the_sigmoid_linearisation(make_spec, activation):
    """The rate equivalent with instantaneous sigmoid interneurons (current c (W_IX x - m) in [-Y, Y]) reproduces the
    trained model's rates; its error is the sigmoid's curvature, so it shrinks as Y^2 (exact algebra otherwise)."""
    model, trajectories, outputs = normalized_circuit(make_spec, overrides={"network.activation": activation})
    h = trajectories.rates
    reference = (1 + h) / 2 if activation == "tanh" else h
    errors = {}
    for y_range in (1.0, 0.25, 0.05):
        circuit = rate_circuit_from_model(model, trajectories=trajectories, normalization_current=y_range)
        n, k = circuit.n_model, circuit.n_norm
        assert (n, k, circuit.n_units) == (model.n_units, 3, model.n_units + 3)
        s = simulate_rate_circuit(circuit, trajectories.inputs, trajectories.initial_rates)
        assert s.shape == (*h.shape[:2], n + k)
        errors[y_range] = np.abs(s[..., :n] - reference).max()
        # the readout ignores the interneurons; the outputs follow the model's
        assert not circuit.output[:, n:].any()
        np.testing.assert_allclose(s @ circuit.output.T + circuit.output_bias, outputs, atol=2 * errors[y_range] + 1e-4)
        # the interneurons' currents span about [-Y, Y] on the trajectories that set their range
        currents = circuit.presynaptic(s[..., :n], trajectories.inputs) @ circuit.recurrent[n:].T
        currents = currents + trajectories.inputs @ circuit.input[n:].T + circuit.bias[n:]
        assert np.abs(currents).max() < 1.5 * y_range
        # the interneuron rates along the model's own trajectories are those the simulation used (up to its error)
        along_model = circuit.unit_rates(h, trajectories.inputs, trajectories.initial_rates)
        assert along_model.shape == s.shape
        np.testing.assert_allclose(along_model[..., n:], s[..., n:], atol=2 * errors[y_range] + 1e-5)
        np.testing.assert_allclose(along_model[..., :n], reference, atol=0)
        start = circuit.start_rates(trajectories.initial_rates)
        assert start.shape == (h.shape[0], n + k) and np.all((start[:, n:] > 0) & (start[:, n:] < 1))
    # Linearisation: sigmoid(y) = 1/2 + y/4 - y^3/48 + ..., relative error ~ y^2/12 <= 8 % at Y = 1 (measured here:
    # 1.0e-2 sigmoid, 4.2e-2 tanh, whose sigmoid-space current is twice the tanh one)
    assert errors[1.0] < 0.06, errors
    assert errors[0.25] < errors[1.0] / 8, errors  # ~Y^2 (16x); a wrong constant term would not shrink
    assert errors[0.05] < 1e-3, errors
    assert errors[1.0] > 1e-4  # the interneurons do act (the test would not see a dropped pathway otherwise)


def test_interneurons_are_inhibitory_and_reach_only_e_units(make_spec):
    """Dale: interneuron columns <= 0, zero on I rows and on interneuron rows; interneuron rows keep the presynaptic
    signs (E columns >= 0, I columns <= 0); a positive interneuron weight is refused."""
    import dataclasses

    model, trajectories, _ = normalized_circuit(make_spec)
    circuit = rate_circuit_from_model(model, trajectories=trajectories)
    n, n_exc = circuit.n_model, circuit.n_exc
    norm_columns = circuit.recurrent[:, n:]
    assert (norm_columns <= 0).all() and (norm_columns[:n_exc] < 0).any()
    assert not norm_columns[n_exc:].any()  # not onto I units, not onto other interneurons
    assert (circuit.recurrent[:, :n_exc] >= 0).all() and (circuit.recurrent[:, n_exc:n] <= 0).all()
    assert (circuit.recurrent[n:, :n_exc] > 0).any() and (circuit.recurrent[n:, n_exc:n] < 0).any()
    np.testing.assert_array_equal(circuit.synaptic_tau_s[n:], 0.01)  # normalization_tau_s default
    with pytest.raises(SpecError, match=r"normalization_tau_ms \(1.5\) must exceed tau_rise_ms"):
        make_spec("head_direction", {"spiking.normalization_tau_ms": 1.5})
    np.testing.assert_array_equal(circuit.synaptic_tau_s[:n], model.spec.network.tau_ms / 1000.0)
    bad = circuit.recurrent.copy()
    bad[0, n] = 0.1
    with pytest.raises(ConversionRefused, match="normalization interneuron weights"):
        dataclasses.replace(circuit, recurrent=bad).check_dale()
    bad = circuit.recurrent.copy()
    bad[n_exc, n] = -0.1  # onto an I unit
    with pytest.raises(ConversionRefused, match="reach only E units"):
        dataclasses.replace(circuit, recurrent=bad).check_dale()
    # without Dale's law the interneuron columns stay inhibitory and E-only; their inputs are free
    free, free_trajectories, _ = normalized_circuit(make_spec, overrides={"network.dale": False})
    free_circuit = rate_circuit_from_model(free, trajectories=free_trajectories)
    assert (free_circuit.recurrent[:, free_circuit.n_model :] <= 0).all()


def test_normalized_twin_weights_read_back_and_noise_spares_interneurons_numpy_target(make_spec):
    """Brian2 holds lambda x the circuit's whole matrix, both pathways (model units -> I_rec, interneurons -> I_fast)
    in one synapse matrix; the interneurons' spikes feed the fast current with their decay, the model units' the slow
    one on every neuron; both currents start at steady state; the twin's interneurons fire; quiescent rate noise is
    on model units only, read by the interneurons under state placement."""
    from recircuit.spiking.simulate import initial_state, neuron_parameters, rate_noise_states, task_runs

    model, trajectories, _ = normalized_circuit(
        make_spec, overrides={"network.n_exc": 8, "network.n_inh": 4, "network.noise.recurrent_sd": 0.2}
    )
    circuit = rate_circuit_from_model(model, trajectories=trajectories)
    n, k, n_exc = circuit.n_model, circuit.n_norm, circuit.n_exc
    cal = calibrate_lif(1 / 100, (-6.0, 6.0), 5.0, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms, 1.0)
    p = neuron_parameters(circuit, cal)
    tau = model.spec.network.tau_ms / 1000.0
    np.testing.assert_array_equal(p.tau_syn_s, np.full(n + k, tau))  # I_rec: the model units' decay, everywhere
    assert p.fast.tolist() == [False] * n + [True] * k and p.tau_fast_s == 0.01
    steps = 10
    runs, _ = task_runs(circuit, cal, trajectories.inputs[:1, :steps], trajectories.initial_rates[:1], [3], CONSTANTS)
    s0 = circuit.start_rates(trajectories.initial_rates[:1])[0]
    brian, (r0, x0) = initial_state(circuit, cal, s0, CONSTANTS, 3)
    np.testing.assert_allclose(brian["I_rec"], circuit.recurrent[:, :n] @ s0[:n], rtol=1e-12)
    np.testing.assert_allclose(brian["I_fast"], circuit.recurrent[:, n:] @ s0[n:], rtol=1e-12)
    np.testing.assert_allclose(brian["I_rec"] + brian["I_fast"], circuit.recurrent @ s0, rtol=1e-12, atol=1e-14)
    assert (brian["I_fast"][:n_exc] < 0).all() and not brian["I_fast"][n_exc:].any()  # inhibition of E units only
    np.testing.assert_allclose(brian["g_rise"], brian["I_rec"] / tau, rtol=1e-12)  # steady state: dI/dt = 0
    np.testing.assert_allclose(brian["g_fast"], brian["I_fast"] / 0.01, rtol=1e-12)
    np.testing.assert_allclose(r0[n:] * cal.lambda_s, s0[n:])
    np.testing.assert_allclose(x0, r0 / circuit.synaptic_tau_s)  # readout traces: each unit's own decay
    with SpikingNetwork(NetworkShape(n + k, steps, 0.02, 0.1), target="numpy") as net:
        with pytest.raises(ValueError, match="no fast synaptic current"):
            net.run(runs[0])  # interneurons flagged fast on a single-current network: refused, not filtered slowly
    with SpikingNetwork(NetworkShape(n + k, steps, 0.02, 0.1, fast_synapses=True), target="numpy") as net:
        out = net.run(runs[0])
        read_back = net.synapse_matrix_s()
        with pytest.raises(ValueError, match="needs NeuronParameters.fast"):
            net.run(RunInputs(runs[0].weights_s, runs[0].drive, params(n + k), runs[0].initial_state, 3))
    np.testing.assert_allclose(read_back, cal.lambda_s * circuit.recurrent, rtol=1e-12, atol=0)
    assert (read_back[:, n:] <= 0).all() and (read_back[:n_exc, n:] < 0).any() and not read_back[n_exc:, n:].any()
    assert (read_back[:, :n_exc] >= 0).all() and (read_back[:, n_exc:n] <= 0).all()
    assert np.isin(np.arange(n, n + k), out.spike_unit).all()  # every interneuron fires
    assert (out.final_state["I_fast"][:n_exc] < 0).all() and not out.final_state["I_fast"][n_exc:].any()
    drive, state, sd = rate_noise_states(model, circuit, 3, 20, seed=0)
    assert sd > 0 and state[..., :n].any() and not state[..., n:].any()
    np.testing.assert_allclose(drive[:, 1:], state[:, :-1] @ circuit.recurrent.T, atol=1e-12)
    assert drive[:, 1:, n:].any()  # the interneurons read the noisy h
    drive_placed, drive_trajectories, _ = normalized_circuit(
        make_spec,
        overrides={"network.n_exc": 8, "network.n_inh": 4, "network.noise.recurrent_sd": 0.2,
                   "network.noise.placement": "drive"},
    )  # fmt: skip
    drive, state, _ = rate_noise_states(
        drive_placed, rate_circuit_from_model(drive_placed, trajectories=drive_trajectories), 3, 20, seed=0
    )
    assert drive[..., :n].any() and not drive[..., n:].any() and not state.any()


def rate_equivalent_run(model, task, circuit):
    """(rates of the rate equivalent, the model's rates, the model's outputs) on 3 noise-free trials of 12 steps."""
    trials = task.sample(3, 12, torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs, rates = model(trials.inputs, trials.initial_code, Noise(None, None))
        h0 = model.initial_rates(trials.initial_code)
    s = simulate_rate_circuit(circuit, trials.inputs.double().numpy(), h0.double().numpy())
    return s, rates.double().numpy(), outputs.double().numpy()


def test_tanh_circuit_is_rewritten_exactly_as_sigmoid(make_spec):
    model, task = build_circuit(make_spec("head_direction", {"network.activation": "tanh"}))
    with torch.no_grad():
        model.bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    circuit = rate_circuit_from_model(model)
    assert circuit.source_activation == "tanh"
    s, rates, outputs = rate_equivalent_run(model, task, circuit)
    np.testing.assert_allclose(s, (1 + rates) / 2, atol=2e-5)
    np.testing.assert_allclose(s @ circuit.output.T + circuit.output_bias, outputs, atol=2e-4)
    exc, inh = circuit.recurrent[:, : circuit.n_exc], circuit.recurrent[:, circuit.n_exc :]
    assert (exc >= 0).all() and (inh <= 0).all()


def test_lif_activation_is_the_fitted_curve_times_lambda_and_held_beyond_its_table():
    cal = calibrate_lif(1 / 100.0, (-6.0, 7.0), 10.0, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms, 1.0)
    phi = cal.lif_activation(CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms)
    x = np.linspace(-15.0, 18.0, 97)
    exact = cal.lambda_s * cal.siegert_rate_hz(x, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms)
    np.testing.assert_allclose(phi(x), exact, atol=1e-5)
    assert phi(np.array([-1e3]))[0] == pytest.approx(phi(np.array([-32.0]))[0]) and phi(np.array([-1e3]))[0] < 1e-3
    assert phi(np.array([1e3]))[0] == pytest.approx(phi(np.array([33.0]))[0]) and phi(np.array([1e3]))[0] > 0.9


def test_rate_circuit_with_the_sigmoid_as_activation_is_the_rate_circuit(make_spec):
    model, task = build_circuit(make_spec("head_direction", {"network.activation": "sigmoid"}))
    circuit = rate_circuit_from_model(model)
    trials = task.sample(3, 12, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h0 = model.initial_rates(trials.initial_code).double().numpy()
    inputs = trials.inputs.double().numpy()
    default = simulate_rate_circuit(circuit, inputs, h0)
    np.testing.assert_array_equal(simulate_rate_circuit(circuit, inputs, h0, expit), default)
    halved = simulate_rate_circuit(circuit, inputs, h0, lambda x: 0.5 * expit(x))
    assert not np.allclose(halved, default)


def test_calibration_fits_sigmoid_over_lambda_within_a_few_percent():
    for max_rate in (25.0, 100.0, 200.0):
        cal = calibrate_lif(1 / max_rate, (-8.0, 9.0), 5.0, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms, 1.0)
        assert cal.relative_rms_error < 0.06, (max_rate, cal)
        assert 1.0 <= cal.refractory_ms < 1000.0 / max_rate
        x = np.linspace(-8.0, 9.0, 50)
        fitted = cal.siegert_rate_hz(x, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms)
        assert np.sqrt(np.mean((fitted - cal.target_rate_hz(x)) ** 2)) == pytest.approx(cal.rms_error_hz, rel=0.2)
    with pytest.raises(ValueError, match="high > low"):
        calibrate_lif(0.01, (2.0, 1.0), 5.0, 15.0, 10.0, 1.0)
    # Siegert sanity: strong drive -> close to the deterministic LIF rate 1/(t_ref + tau ln(mu/(mu - gap)))
    deterministic = 1 / (0.002 + 0.01 * math.log(30 / 15))
    assert siegert_rate_hz(np.array([30.0]), 0.2, 15.0, 0.01, 0.002)[0] == pytest.approx(deterministic, rel=0.01)


# --------------------------------------------------------------------------------------------- readout filter
def test_readout_filter_has_unit_area_and_chains_across_runs():
    rate_hz, step, steps, tau = 40.0, 0.02, 100, np.array([0.1, 0.05])
    spikes = np.arange(0, steps * step, 1 / rate_hz) + 1e-4
    unit = np.zeros(spikes.size, dtype=np.int64)
    unit[1::2] = 1  # unit 1 gets every other spike: 20 Hz
    zeros = (np.zeros(2), np.zeros(2))
    whole, _ = filter_spikes(unit, spikes, steps, step, tau, 0.002, zeros)
    assert whole[steps // 2 :, 0].mean() == pytest.approx(rate_hz / 2, rel=0.05)
    assert whole[steps // 2 :, 1].mean() == pytest.approx(rate_hz / 2, rel=0.05)
    half = steps // 2
    first = spikes < half * step
    a, carried = filter_spikes(unit[first], spikes[first], half, step, tau, 0.002, zeros)
    b, _ = filter_spikes(unit[~first], spikes[~first] - half * step, half, step, tau, 0.002, carried)
    np.testing.assert_allclose(np.concatenate([a, b]), whole, rtol=1e-10)


# ------------------------------------------------------------------------------------------------ Brian2 network
def test_fi_curve_matches_sigmoid_over_lambda_numpy_target():
    """Lone neurons at constant currents (no synapses): rate = sigmoid(x)/lambda within 10% RMS of the max rate."""
    lam, low, high, replicas = 1 / 100, -6.0, 7.0, 12
    cal = calibrate_lif(lam, (low, high), 5.0, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms, 1.0)
    currents = np.linspace(low, high, 30)
    n = currents.size * replicas
    shape = NetworkShape(n, 15, 0.02, 0.1)  # 0.3 s x 12 replicas = 3.6 neuron-seconds per current
    rng = np.random.default_rng(0)
    with SpikingNetwork(shape, target="numpy") as net:
        out = net.run(
            RunInputs(
                np.zeros((n, n)),
                np.tile(np.repeat(currents, replicas), (shape.steps, 1)),
                params(n, cal),
                quiet_state(n, rng.uniform(-65, -50, n)),
                seed=1,
            )
        )
    rate = np.bincount(out.spike_unit, minlength=n).reshape(currents.size, replicas).mean(1) / shape.duration_s
    rms = np.sqrt(np.mean((rate - cal.target_rate_hz(currents)) ** 2)) * lam
    assert rms < 0.10, f"f-I RMS error {100 * rms:.1f}% of the max rate"
    assert rate[-1] > 0.8 / lam and rate[0] < 0.05 / lam  # saturates near 1/lambda, silent at the low end


def test_two_neuron_toy_excites_only_downstream_numpy_target():
    """Only 0 -> 1 (w > 0): spikes of 0 raise the synaptic current of 1; spikes of 1 do nothing to 0."""
    shape = NetworkShape(2, 5, 0.02, 0.1)
    weights = np.array([[0.0, 0.0], [0.02, 0.0]])  # post x pre: row 1 receives from column 0
    with SpikingNetwork(shape, target="numpy") as net:
        p = params(2, noise_mV=0.0)
        drive_0 = np.tile([3.0, -3.0], (shape.steps, 1))  # 0 fires, 1 is far below threshold
        out = net.run(RunInputs(weights, drive_0, p, quiet_state(2), seed=0))
        assert (out.spike_unit == 0).sum() > 5 and (out.spike_unit == 1).sum() == 0
        assert out.final_state["I_rec"][1] > 0.05 and out.final_state["I_rec"][0] == 0.0
        drive_1 = np.tile([-3.0, 3.0], (shape.steps, 1))  # now only 1 fires
        out = net.run(RunInputs(weights, drive_1, p, quiet_state(2), seed=0))
        assert (out.spike_unit == 1).sum() > 5 and (out.spike_unit == 0).sum() == 0
        assert out.final_state["I_rec"][0] == 0.0 and out.final_state["I_rec"][1] == 0.0


# The single-current network as it was before the fast current existed: its binary and build key must not change.
OLD_NEURON_EQUATIONS = """
dv/dt = (v_rest - v + gain*(I_rec + I_ext(t,i) + bias) + offset)/tau_m + noise*twin_normal(key_high, key_low, t_in_timesteps)/sqrt(tau_m*dt) : volt (unless refractory)
dI_rec/dt = -I_rec*syn_rate + g_rise : 1
dg_rise/dt = -g_rise/tau_rise : Hz
syn_rate : Hz (constant)
spike_gain : Hz**2 (constant)
bias : 1 (constant)
gain : volt (constant)
offset : volt (constant)
noise : volt (constant)
t_ref : second (constant)
key_high : integer (constant)
key_low : integer (constant)
"""
OLD_ON_PRE = "g_rise_post += w*spike_gain_post"


def test_a_build_is_keyed_to_the_host_cpu_it_was_compiled_for(monkeypatch):
    from recircuit.spiking import network

    shape = NetworkShape(128, 50, 0.02, 0.1, copies=16)
    assert "-march=native" in network.COMPILE_ARGS and network.host_cpu().strip()
    here = network.build_key(shape, CONSTANTS)
    monkeypatch.setattr(network, "host_cpu", lambda: "x86_64 model name: another CPU")
    assert network.build_key(shape, CONSTANTS) != here  # a shared cache gives another CPU its own binary


def test_network_without_interneurons_keeps_its_equations_and_build_key():
    import hashlib
    import json

    import brian2

    from recircuit.spiking import network, noise

    shape = NetworkShape(128, 50, 0.02, 0.1, copies=16)
    assert (shape.equations, shape.on_pre) == (OLD_NEURON_EQUATIONS, OLD_ON_PRE)
    assert shape.state_variables == ("v", "I_rec", "g_rise", "lastspike", "not_refractory")
    old_payload = {
        "equations": OLD_NEURON_EQUATIONS,
        "reset": network.RESET,
        "refractory": network.REFRACTORY,
        "on_pre": OLD_ON_PRE,
        "connect": network.CONNECT,
        "noise_code": noise.CPP_CODE,
        "compile_args": network.COMPILE_ARGS,
        "host_cpu": network.host_cpu(),
        "constants": CONSTANTS.__dict__,
        "shape": {"n_units": 128, "steps": 50, "step_s": 0.02, "dt_ms": 0.1, "copies": 16},
        "brian2": brian2.__version__,
    }
    digest = hashlib.sha256(json.dumps(old_payload, sort_keys=True).encode()).hexdigest()[:12]
    assert network.build_key(shape, CONSTANTS) == f"N128x16_{digest}"
    fast = NetworkShape(128, 50, 0.02, 0.1, copies=16, fast_synapses=True)
    assert network.build_key(fast, CONSTANTS) != network.build_key(shape, CONSTANTS)  # its own binary per size
    assert "I_fast" in fast.equations and "is_fast_pre" in fast.on_pre
    assert fast.state_variables[-2:] == ("I_fast", "g_fast")
    with SpikingNetwork(NetworkShape(3, 2, 0.02, 0.1), target="numpy") as net:
        assert "I_fast" not in net._objects["group"].variables and "g_fast" not in net.run(
            RunInputs(np.zeros((3, 3)), np.zeros((2, 3)), params(3), quiet_state(3), seed=0)
        ).final_state


def euler_current(spike_time_s, jump, decay_s, shape):
    """The synaptic current (and rise variable) at the end of a run, by Brian's Euler steps: each step updates
    dI/dt = -I/decay + g, dg/dt = -g/tau_rise, then the spikes of that step add ``jump`` to g."""
    dt, tau_rise = shape.dt_ms * 1e-3, CONSTANTS.tau_rise_ms * 1e-3
    per_step = np.bincount(np.rint(np.asarray(spike_time_s) / dt).astype(int), minlength=round(shape.duration_s / dt))
    current = rise = 0.0
    for count in per_step:
        current, rise = current + dt * (-current / decay_s + rise), rise - dt * rise / tau_rise
        rise += jump * count
    return current, rise


def fast_toy(net):
    """Neuron 0: an E model unit (slow decay 100 ms); neuron 1: a normalization interneuron (fast decay 10 ms),
    1 -> 0 inhibitory, 0 -> 1 excitatory; any further neurons idle. Run A: only the interneuron fires (strong drive
    in the first step only); run B: only the E unit fires. Returns both outputs and the weights."""
    n, steps = net.shape.n_units, net.shape.steps
    weights = np.zeros((n, n))
    weights[0, 1], weights[1, 0] = -0.02, 0.03  # post x pre
    fast = np.zeros(n, dtype=bool)
    fast[1] = True
    p = NeuronParameters(np.full(n, 0.1), np.zeros(n), 10.0, 10.0, 0.0, 5.0, fast=fast, tau_fast_s=0.01)
    outputs = []
    for firing in (1, 0):
        drive = np.full((steps, n), -3.0)
        drive[0, firing] = 3.0
        state = quiet_state(n) | {"I_fast": np.zeros(n), "g_fast": np.zeros(n)}
        outputs.append(net.run(RunInputs(weights, drive, p, state, seed=0)))
    return outputs, weights


def check_fast_toy(outputs, weights, shape, rtol):
    """Each synapse decays with its presynaptic neuron's constant: the interneuron's spikes reach the E unit's fast
    current (10 ms), the E unit's spikes the interneuron's slow current (100 ms), nothing else."""
    tau_rise = CONSTANTS.tau_rise_ms * 1e-3
    (inter, exc) = outputs
    assert set(inter.spike_unit) == {1} and set(exc.spike_unit) == {0} and inter.spike_unit.size >= 2
    cases = (
        (inter, 0, "I_fast", "g_fast", weights[0, 1], 0.01, 0.1),  # interneuron -> E: fast decay (not E's 100 ms)
        (exc, 1, "I_rec", "g_rise", weights[1, 0], 0.1, 0.01),  # E -> interneuron: slow decay (not its own 10 ms)
    )
    for out, post, current, rise, w, decay, wrong in cases:
        expected = euler_current(out.spike_time_s, w / (decay * tau_rise), decay, shape)
        np.testing.assert_allclose([out.final_state[current][post], out.final_state[rise][post]], expected, rtol=rtol)
        other, _ = euler_current(out.spike_time_s, w / (wrong * tau_rise), wrong, shape)
        assert abs(other - expected[0]) > 0.5 * abs(expected[0])  # the other decay would be far off
        for name in ("I_rec", "g_rise", "I_fast", "g_fast"):  # every other current stays empty
            received = out.final_state[name].copy()
            if name in (current, rise):
                received[post] = 0.0
            assert not received.any(), name


def test_each_synapse_decays_with_its_presynaptic_neuron_numpy_target():
    shape = NetworkShape(2, 3, 0.02, 0.1, fast_synapses=True)
    with SpikingNetwork(shape, target="numpy") as net:
        outputs, weights = fast_toy(net)
    check_fast_toy(outputs, weights, shape, rtol=1e-9)


def test_cpp_standalone_fast_synapses_match_the_numpy_target_through_run_args(make_spec, tmp_path):
    """The two-current network compiled: the toy's decays; the normalized circuit's weights read back (both
    pathways) and its spikes equal the numpy target's; the fast flags are per-run arrays (no rebuild)."""
    from recircuit.spiking.simulate import task_runs

    model, trajectories, _ = normalized_circuit(make_spec, overrides={"network.n_exc": 8, "network.n_inh": 4})
    circuit = rate_circuit_from_model(model, trajectories=trajectories)
    n_exc = circuit.n_exc
    cal = calibrate_lif(1 / 100, (-6.0, 6.0), 5.0, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms, 1.0)
    runs, _ = task_runs(circuit, cal, trajectories.inputs[:2, :10], trajectories.initial_rates[:2], [3, 4], CONSTANTS)
    empty = {"I_fast": np.zeros(circuit.n_units), "g_fast": np.zeros(circuit.n_units)}
    unflagged = RunInputs(
        runs[0].weights_s, runs[0].drive, replace(runs[0].parameters, fast=np.zeros(circuit.n_units, dtype=bool)),
        {**runs[0].initial_state, **empty}, 3,
    )  # fmt: skip
    shape = NetworkShape(circuit.n_units, 10, 0.02, 0.1, copies=2, fast_synapses=True)
    results = {}
    for target in ("numpy", "cpp_standalone"):
        with SpikingNetwork(shape, CONSTANTS, target, tmp_path / "build", keep_synapses=True) as net:
            together = net.run_batch(runs)
            np.testing.assert_allclose(net.synapse_matrix_s(1), cal.lambda_s * circuit.recurrent, rtol=1e-12, atol=0)
            results[target] = [*together, net.run(unflagged)]
            if target == "cpp_standalone":
                assert net.info.compiled
                toy, toy_weights = fast_toy(net)
    check_fast_toy(toy, toy_weights, shape, rtol=1e-6)  # -ffast-math
    for a, b in zip(results["numpy"], results["cpp_standalone"]):
        assert a.spike_unit.size > 0
        assert np.array_equal(a.spike_unit, b.spike_unit) and np.allclose(a.spike_time_s, b.spike_time_s, atol=1e-9)
        for key in ("I_rec", "g_rise", "I_fast", "g_fast", "v"):
            np.testing.assert_allclose(b.final_state[key], a.final_state[key], rtol=1e-6, atol=1e-9)
    flagged, unflagged_out = results["cpp_standalone"][0], results["cpp_standalone"][2]
    assert (flagged.final_state["I_fast"][:n_exc] < 0).all()
    assert not unflagged_out.final_state["I_fast"].any()  # no fast neuron: the fast current stays empty
    assert not np.array_equal(flagged.spike_time_s, unflagged_out.spike_time_s)


def test_run_inputs_are_checked_numpy_target():
    shape = NetworkShape(3, 2, 0.02, 0.1)
    with SpikingNetwork(shape, target="numpy") as net:
        good = RunInputs(np.zeros((3, 3)), np.zeros((2, 3)), params(3), quiet_state(3), seed=0)
        with pytest.raises(ValueError, match="post x pre"):
            net.run(RunInputs(np.zeros((2, 3)), good.drive, good.parameters, good.initial_state, 0))
        with pytest.raises(ValueError, match="steps x units"):
            net.run(RunInputs(good.weights_s, np.zeros((3, 3)), good.parameters, good.initial_state, 0))
        with pytest.raises(ValueError, match="refractory"):
            bad = NeuronParameters(np.full(3, 0.1), np.zeros(3), 10.0, 10.0, 3.0, 0.05)
            net.run(RunInputs(good.weights_s, good.drive, bad, good.initial_state, 0))
    with pytest.raises(ValueError, match="whole number of spiking.dt_ms"):
        SpikingNetwork(NetworkShape(3, 2, 0.02, 0.3), target="numpy")


def test_cpp_standalone_builds_once_and_runs_many(make_spec, tmp_path):
    """One build: weights read back = lambda W (Dale kept, no synapse between copies); seeds reproduce; batched
    runs give the same spikes as runs alone; a second session reuses the binary; a new circuit and a new lambda
    through run_args change the spikes."""
    model, task = build_circuit(make_spec("path_integration"))
    circuit = rate_circuit_from_model(model)
    n = circuit.n_units
    cal = calibrate_lif(1 / 100, (-6.0, 6.0), 5.0, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms, 1.0)
    shape = NetworkShape(n, 10, 0.02, 0.1, copies=3)
    trials = task.sample(1, shape.steps, torch.Generator().manual_seed(0))
    drive = trials.inputs[0].double().numpy() @ circuit.input.T
    start = quiet_state(n, np.random.default_rng(0).uniform(-65, -50, n))
    run_params = NeuronParameters(
        circuit.tau_s, circuit.bias, cal.gain_mV, cal.offset_mV, cal.noise_mV, cal.refractory_ms
    )

    def inputs(weights, seed, p=run_params):
        return RunInputs(weights, drive, p, start, seed)

    build = tmp_path / "build"
    with SpikingNetwork(shape, CONSTANTS, "cpp_standalone", build, keep_synapses=True) as net:
        first = net.info
        assert first.compiled and (first.directory / "main").is_file()
        a = net.run(inputs(cal.lambda_s * circuit.recurrent, 7))
        read_back = net.synapse_matrix_s()
        np.testing.assert_allclose(read_back, cal.lambda_s * circuit.recurrent, rtol=1e-12, atol=0)
        assert (read_back[:, : circuit.n_exc] >= 0).all() and (read_back[:, circuit.n_exc :] <= 0).all()
        assert a.spike_unit.size > 0
        b = net.run(inputs(cal.lambda_s * circuit.recurrent, 7))
        c = net.run(inputs(cal.lambda_s * circuit.recurrent, 8))
        assert np.array_equal(a.spike_unit, b.spike_unit) and np.array_equal(a.spike_time_s, b.spike_time_s)
        assert not (a.spike_unit.size == c.spike_unit.size and np.array_equal(a.spike_time_s, c.spike_time_s))
        # one simulation of three different runs = the three runs alone (same seeds), in any order
        half = cal.lambda_s * circuit.recurrent * 0.5
        batch = [inputs(cal.lambda_s * circuit.recurrent, 8), inputs(half, 9), inputs(cal.lambda_s * circuit.recurrent, 7)]
        together = net.run_batch(batch)
        np.testing.assert_allclose(net.synapse_matrix_s(1), half, rtol=1e-12, atol=0)
        for alone, batched in zip([c, net.run(batch[1]), a], together):
            assert np.array_equal(alone.spike_unit, batched.spike_unit)
            assert np.array_equal(alone.spike_time_s, batched.spike_time_s)
            for key, value in alone.final_state.items():
                np.testing.assert_array_equal(value, batched.final_state[key])
        assert net.runs == 5
        with pytest.raises(ValueError, match="1 to 3 runs"):
            net.run_batch(batch + batch[:1])

    binary_mtime = (first.directory / "main").stat().st_mtime
    other, _ = build_circuit(make_spec("path_integration", {"training.seed": 5}))
    other_circuit = rate_circuit_from_model(other)
    with SpikingNetwork(shape, CONSTANTS, "cpp_standalone", build, keep_synapses=True) as net:
        assert net.info.key == first.key and not net.info.compiled
        assert (first.directory / "main").stat().st_mtime == binary_mtime  # no new make
        again = net.run(inputs(cal.lambda_s * circuit.recurrent, 7))
        assert np.array_equal(again.spike_time_s, a.spike_time_s)  # the reused binary reproduces the first session
        new_circuit = net.run(inputs(cal.lambda_s * other_circuit.recurrent, 7))
        np.testing.assert_allclose(net.synapse_matrix_s(), cal.lambda_s * other_circuit.recurrent, rtol=1e-12)
        cal2 = calibrate_lif(1 / 40, (-6.0, 6.0), 5.0, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms, 1.0)
        p2 = NeuronParameters(
            circuit.tau_s, circuit.bias, cal2.gain_mV, cal2.offset_mV, cal2.noise_mV, cal2.refractory_ms
        )
        new_lambda = net.run(inputs(cal2.lambda_s * circuit.recurrent, 7, p2))
        assert not np.array_equal(new_circuit.spike_time_s, a.spike_time_s)
        assert new_lambda.spike_unit.size < 0.7 * a.spike_unit.size  # max rate 40 Hz instead of 100 Hz
    with SpikingNetwork(shape, CONSTANTS, "cpp_standalone", build) as net:  # the default: synapses not written back
        assert not net.info.compiled
        assert np.array_equal(net.run(inputs(cal.lambda_s * circuit.recurrent, 7)).spike_time_s, a.spike_time_s)
        with pytest.raises(RuntimeError, match="keep_synapses"):
            net.synapse_matrix_s()
    assert not list(build.glob("*.run-*")), "private run folders must be removed"


def test_counter_based_noise_is_standard_normal_and_a_function_of_stream_and_step():
    from scipy import stats

    from recircuit.spiking.noise import split_keys, standard_normal, stream_keys

    high, low = split_keys(stream_keys(11, 500))
    z = np.stack([standard_normal(high, low, np.int64(t)) for t in range(400)])  # (step, neuron)
    assert abs(z.mean()) < 0.01 and z.var() == pytest.approx(1.0, abs=0.01)
    assert abs(stats.kurtosis(z.ravel())) < 0.05 and stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    assert (np.abs(z) > 3.7).mean() == pytest.approx(2 * stats.norm.sf(3.7), rel=0.3)  # the ziggurat's tail
    assert abs(np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]) < 0.01
    np.testing.assert_array_equal(standard_normal(high[7:9], low[7:9], np.int64(123)), z[123, 7:9])
    other_high, other_low = split_keys(stream_keys(12, 500))
    assert not np.array_equal(standard_normal(other_high, other_low, np.int64(0)), z[0])


def test_batched_runs_equal_runs_alone_numpy_target():
    """Copies of one simulation share nothing: each run's spikes and final state equal those of the run alone."""
    n, steps = 5, 8
    runs = []
    for seed in (3, 4, 5):
        rng = np.random.default_rng(seed)
        runs.append(
            RunInputs(
                rng.normal(0, 0.03, (n, n)),
                rng.normal(2.0, 1.0, (steps, n)),
                NeuronParameters(np.full(n, 0.1), rng.normal(0, 0.3, n), 10.0, 10.0, 3.0, 2.0),
                quiet_state(n, rng.uniform(-65, -50, n)),
                seed,
            )
        )
    with SpikingNetwork(NetworkShape(n, steps, 0.02, 0.1, copies=3), target="numpy") as net:
        together = net.run_batch(runs)
        np.testing.assert_array_equal(net.synapse_matrix_s(2), runs[2].weights_s)
    with SpikingNetwork(NetworkShape(n, steps, 0.02, 0.1), target="numpy") as net:
        alone = [net.run(r) for r in runs]
    assert all(out.spike_unit.size > 5 for out in alone)
    for a, b in zip(alone, together):
        assert np.array_equal(a.spike_unit, b.spike_unit) and np.array_equal(a.spike_time_s, b.spike_time_s)
        for key, value in a.final_state.items():
            np.testing.assert_array_equal(value, b.final_state[key])


def test_task_trials_and_quiescence_batched_equal_one_trial_per_run_numpy_target(make_spec):
    """simulate.py's batching (copies per Brian2 run, quiescence chunk by chunk) changes no spike."""
    from recircuit.spiking.simulate import run_quiescence, run_task_trials

    model, task = build_circuit(make_spec("head_direction", {"network.n_exc": 8, "network.n_inh": 4}))
    circuit = rate_circuit_from_model(model)
    cal = calibrate_lif(1 / 100, (-6.0, 6.0), 5.0, CONSTANTS.threshold_gap_mV, CONSTANTS.tau_m_ms, 1.0)
    steps, n_trials = 6, 3
    trials = task.sample(n_trials, steps, torch.Generator().manual_seed(1))
    with torch.no_grad():
        h0 = model.initial_rates(trials.initial_code).double().numpy()
    inputs = trials.inputs.double().numpy()
    seeds = [11, 12, 13]
    results = {}
    for copies in (1, 2):
        with SpikingNetwork(NetworkShape(circuit.n_units, steps, 0.02, 0.1, copies), target="numpy") as net:
            task_spikes = run_task_trials(net, circuit, cal, inputs, h0, seeds, CONSTANTS)
            quiet = run_quiescence(net, circuit, cal, h0, 2 * steps + 1, seeds, CONSTANTS, base_seed=0)
            results[copies] = (task_spikes, quiet, net.runs)
    (task_1, quiet_1, runs_1), (task_2, quiet_2, runs_2) = results[1], results[2]
    assert runs_1 == n_trials + 3 * n_trials and runs_2 == 2 + 3 * 2  # 3 quiescent chunks
    assert task_1.n_spikes > 0 and quiet_1.n_spikes > 0
    for one, two in ((task_1, task_2), (quiet_1, quiet_2)):
        np.testing.assert_array_equal(one.counts, two.counts)
        np.testing.assert_array_equal(one.rates_hz, two.rates_hz)
        for (u1, t1), (u2, t2) in zip(one.events, two.events):
            assert np.array_equal(u1, u2) and np.array_equal(t1, t2)


# ----------------------------------------------------------------------------------------------- end to end
def test_spike_command_writes_spiking_nc_and_figures(make_spec, tmp_path, tiny_set_args, capsys):
    from recircuit.cli import main
    from recircuit.results import check_labelled
    from recircuit.spiking.figures import make_spiking_figures

    run = tmp_path / "run"
    spec_file = str(CIRCUITS_DIR / "path_integration.yaml")
    sigmoid = tiny_set_args(overrides={"network.activation": "sigmoid"})  # so the lambda search runs (lif needs none)
    assert main(["train", spec_file, "--out", str(run), "--set", *sigmoid]) == 0
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    settings = [
        "spiking.target=numpy",
        "spiking.dt_ms=0.5",  # coarse, so the numpy target is quick; the f-I check below still holds
        "spiking.n_trials=2",
        "spiking.n_search_trials=1",
        "spiking.max_rate_grid_hz=[50,100]",
        "spiking.n_quiescent_trials=1",
        "spiking.quiescent_steps=30",
        "spiking.fi_check_s=0.4",
        "reactivation.burn_in_steps=10",
        "reactivation.kl_samples=200",
    ]
    assert main(["spike", str(run), "--set", *settings]) == 0
    ds = xr.open_dataset(run / "spiking.nc", engine="h5netcdf").load()
    check_labelled(ds)
    one = ds.isel(circuit=0, variant=0, seed=0)
    assert one.sizes["trial"] == 2 and one.sizes["unit"] == 32 and one.sizes["quiet_time"] == 30
    assert one.sizes["search"] == 2 and float(one["max_rate"]) in one["search_max_rate"].values
    assert one["search_max_rate"].values.tolist() == [50.0, 100.0]
    assert np.isfinite(one["error_ratio"].values).all() and (one["error_ratio"].values > 0).all()
    assert float(one["fi_only_error_ratio"]) > 0 and one["fi_only_position_error"].dims == ("trial", "time")
    assert one["fi_only_position_error"].shape == one["spiking_position_error"].shape
    assert float(one["noise_only_error_ratio"]) > 0
    assert one["noise_only_position_error"].shape == one["spiking_position_error"].shape
    assert float(one["mean_field_error_ratio"]) > 0
    assert one["mean_field_position_error"].shape == one["spiking_position_error"].shape
    spec = json.loads(ds.attrs["spec_json"])
    assert float(one["dt_over_tau"]) == pytest.approx(spec["task"]["dt_s"] / (spec["network"]["tau_ms"] / 1000))
    assert "the twin without spikes (its f-I curve and synapses in continuous time)" in capsys.readouterr().out
    assert np.isfinite(float(one["kl_offline"])) and np.isfinite(float(one["kl_offline_rate"]))
    assert ds.attrs["quiet_distribution_window_steps"] == "11-30"  # after the burn-in, to the end (no window set)
    # the twin's own noise: positive where units fire, and the rate quiescence run with it, for both rate maps
    assert one["twin_noise_sd"].dims == ("unit",) and (one["twin_noise_sd"].values >= 0).all()
    assert float(one["median_twin_noise_sd"]) > 0
    assert one["kl_offline_rate_matched"].dims == ("rate_map",)
    assert one["rate_map"].values.tolist() == ["own", "twin_fi"]
    assert np.isfinite(one["kl_offline_rate_matched"].values).all()
    matched_dims = ("rate_map", "quiet_trial", "quiet_time_after_burn_in", "space")
    assert one["quiet_matched_decoded_position"].dims == matched_dims
    assert int(one["spike_count"].sum()) > 0 and one["spike_count"].dtype == np.uint16
    assert float(one["fi_rms"]) < 0.2
    assert ds.attrs["brian2_target"] == "numpy" and "spec_json" in ds.attrs
    summary = tmp_path / "summary"
    summary.mkdir()
    (summary / "spiking.nc").write_bytes((run / "spiking.nc").read_bytes())
    paths = make_spiking_figures(summary, tmp_path / "figures")
    names = {p.name for p in paths}
    assert {"spiking_agreement.png", "spiking_agreement.pdf", "spiking_fi_curves.png"} <= names
    assert any(n.startswith("spiking_raster_") and n.endswith(".png") for n in names)
    assert any(n.startswith("spiking_offline_") for n in names)
    assert all(p.stat().st_size > 0 for p in paths)

    # bad input: a missing folder (exit 2), a refused activation (exit 2, the reason named)
    capsys.readouterr()
    assert main(["spike", str(tmp_path / "nowhere")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    relu = tmp_path / "relu"
    relu_settings = tiny_set_args(overrides={"network.activation": "relu", "training.steps": 2})
    assert main(["train", spec_file, "--out", str(relu), "--set", *relu_settings]) == 0
    capsys.readouterr()
    assert main(["spike", str(relu), "--set", "spiking.target=numpy"]) == 2
    assert "network.activation is 'relu'" in capsys.readouterr().err
    assert not (relu / "spiking.nc").exists()
    assert main(["spike", str(run), "--set", "network.tau_ms=5"]) == 2


def test_spike_command_converts_subtractive_normalization(tmp_path, tiny_set_args):
    """A tiny trained subtractive circuit: spiking.nc holds n + n_I neurons, the interneurons labelled I_norm, with
    their scales; they fire, and the raster colours them."""
    from recircuit.cli import main
    from recircuit.results import check_labelled
    from recircuit.spiking.figures import NORM_COLOUR, _population_colour, make_spiking_figures

    run = tmp_path / "run"
    spec_file = str(CIRCUITS_DIR / "head_direction.yaml")
    train = tiny_set_args("head_direction", {"network.normalization.kind": "subtractive", "training.steps": 10})
    assert main(["train", spec_file, "--out", str(run), "--set", *train]) == 0
    settings = [
        "spiking.target=numpy",
        "spiking.copies=2",  # the numpy target simulates idle copies too
        "spiking.dt_ms=0.5",
        "spiking.n_trials=2",
        "spiking.n_search_trials=1",
        "spiking.max_rate_grid_hz=[100]",
        "spiking.n_quiescent_trials=1",
        "spiking.quiescent_steps=20",
        "spiking.quiescent_noise=membrane+rate",
        "spiking.fi_check_s=0.2",
        "reactivation.burn_in_steps=5",
        "reactivation.kl_samples=100",
    ]
    assert main(["spike", str(run), "--set", *settings]) == 0
    ds = xr.open_dataset(run / "spiking.nc", engine="h5netcdf").load()
    check_labelled(ds)
    one = ds.isel(circuit=0, variant=0, seed=0)
    n, k = 32, 2  # 24 E + 8 I model units; n_interneurons = n_exc // 10
    assert one.sizes["unit"] == n + k and int(one["n_norm_interneurons"]) == k
    population = one["population"].values.astype(str)
    assert population.tolist() == ["E"] * 24 + ["I"] * 8 + ["I_norm"] * k
    assert np.isnan(one["norm_scale"].values[:n]).all() and (one["norm_scale"].values[n:] > 0).all()
    assert np.isfinite(one["norm_midpoint"].values[n:]).all() and float(one["norm_current_range"]) == 1.0
    np.testing.assert_allclose(one["tau_synapse"].values[n:], 10.0)  # spiking.normalization_tau_ms
    assert (one["spike_count"].isel(unit=slice(n, None)).sum(("trial", "time")) > 0).all()
    assert np.isfinite(one["mean_rate_norm"].values).all() and (one["mean_rate_norm"].values > 0).all()
    assert np.isfinite(one["error_ratio"].values).all() and np.isfinite(float(one["kl_offline"]))
    assert one["rate_activity"].sizes["unit"] == n + k and np.isfinite(one["unit_correlation"].values[:, n:]).all()
    summary = tmp_path / "summary"
    summary.mkdir()
    (summary / "spiking.nc").write_bytes((run / "spiking.nc").read_bytes())
    paths = make_spiking_figures(summary, tmp_path / "figures")
    assert any(p.name.startswith("spiking_raster_") for p in paths)
    assert _population_colour(one, np.array([0, n])) == [_population_colour(one, np.array([0]))[0], NORM_COLOUR]


def test_rate_matched_quiescent_noise_follows_the_rate_model(make_spec):
    """membrane+rate quiescence: eps is the rate model's accumulated state noise (AR(1), leak a), fed as W eps."""
    from recircuit.spiking.simulate import rate_noise_states

    spec = make_spec("head_direction", {"network.noise.recurrent_sd": 0.2, "reactivation.noise_mode": "same"})
    model, _ = build_circuit(spec)
    circuit = rate_circuit_from_model(model)
    drive, state, sd = rate_noise_states(model, circuit, 40, 200, seed=0)
    assert sd == 0.2
    a = spec.alpha
    stationary = sd**2 * a / (1 - (1 - a) ** 2)
    assert state[:, 50:].var() == pytest.approx(stationary, rel=0.1)
    np.testing.assert_allclose(drive[:, 1:], state[:, :-1] @ circuit.recurrent.T, atol=1e-12)
    assert (drive[:, 0] == 0).all()
    quiet_model, _ = build_circuit(make_spec("head_direction", {"network.noise.recurrent_sd": 0.0}))
    drive0, state0, sd0 = rate_noise_states(quiet_model, rate_circuit_from_model(quiet_model), 2, 10, seed=0)
    assert sd0 == 0 and not drive0.any() and not state0.any()


def test_discrete_matched_synaptic_decay_reproduces_the_euler_leak():
    from recircuit.spiking.convert import synaptic_decay_s

    tau, step = np.array([0.1, 0.04]), 0.02
    matched = synaptic_decay_s(tau, step, "discrete_matched")
    np.testing.assert_allclose(np.exp(-step / matched), 1 - step / tau, rtol=1e-12)
    np.testing.assert_array_equal(synaptic_decay_s(tau, step, "rate_tau"), tau)
    with pytest.raises(ValueError, match="dt/tau < 1"):
        synaptic_decay_s(np.array([0.02]), 0.02, "discrete_matched")


def test_twin_offline_kl_reads_the_distribution_window_only(make_spec):
    """The twin's offline KL uses reactivation.distribution_steps after the burn-in, as the rate analysis does:
    steps past the window (here far from the waking positions) change nothing."""
    window = {"reactivation.duration_steps": 300, "reactivation.burn_in_steps": 100,
              "reactivation.distribution_steps": 50}  # fmt: skip
    model, _ = build_circuit(make_spec("path_integration", window))
    rng = np.random.default_rng(0)
    waking = rng.uniform(-1.0, 1.0, (20, 50, 2))
    inside = rng.uniform(-0.5, 0.5, (20, 50, 2))
    far = np.concatenate([inside, np.full((20, 150, 2), 0.9)], axis=1)
    kl_window, kl_uniform = offline_kl(model, far, waking, 2.2)
    assert kl_window == offline_kl(model, inside, waking, 2.2)[0]
    model.spec = model.spec.model_copy(update={"reactivation": model.spec.reactivation.model_copy(
        update={"distribution_steps": None})})  # fmt: skip
    assert offline_kl(model, far, waking, 2.2)[0] > kl_window + 0.5
    assert kl_uniform < kl_window


def test_spiking_report_counts_the_seeds_where_each_twin_claim_holds(tmp_path, capsys):
    """The report reads the error ratio and the correlation against the rate circuit with its evaluation noise, and
    orders the twins of the noisy / noise-free pairs the sweep has; a file that is not a spiking summary is refused."""
    from recircuit.cli import main
    from recircuit.spiking.report import error_source_rows, report, report_rows

    variants = ["noisy", "noise_free", "biased"]
    shape = (1, len(variants), 3)
    ratio = np.ones(shape + (2,))
    ratio[0, 0, :, 0] = [1.2, 1.6, 1.4]  # against the rate circuit with its evaluation noise: 2 of 3 within 1.5
    ratio[0, 0, :, 1] = 9.0  # against the noise-free rate circuit: not what the bound reads
    correlation = np.full(shape + (2,), 0.9)
    correlation[0, 1, :, 0] = [0.7, np.nan, 0.85]  # the noise-free twin in seed 1 has no active unit
    kl = np.full(shape, 0.5)
    kl[0, 1] = [0.6, 0.4, 0.7]  # the noisy twin is closer in seeds 0 and 2
    kl_rate = np.full(shape, 0.5)
    kl_rate[0, 1] = [0.6, 0.6, 0.6]
    dims = ("circuit", "variant", "seed")
    ds = xr.Dataset(
        {"error_ratio": (dims + ("rate_noise",), ratio), "median_unit_correlation": (dims + ("rate_noise",), correlation),
         "kl_offline": (dims, kl), "kl_offline_rate": (dims, kl_rate)},
        coords={"circuit": ["pi"], "variant": variants, "seed": [0, 1, 2], "rate_noise": ["evaluation", "none"]},
        attrs={"quiet_distribution_window_steps": "101-1000"},
    )
    rows = {r["claim"]: (r["holds"], r["seeds"], r["value"]) for r in report_rows(ds)}
    assert rows["noisy: error ratio spiking / rate <= 1.5"] == (2, 3, 1.4)
    assert rows["biased: error ratio spiking / rate <= 1.5"][:2] == (3, 3)
    assert rows["noise_free: median unit correlation >= 0.8"][:2] == (1, 2)
    assert rows["KL(twin of noisy offline || awake) < KL(twin of noise_free offline || awake)"] == (2, 3, 0.5)
    assert rows["  the rate circuits from the same starts: noisy < noise_free"][:2] == (3, 3)
    assert not any("unconstrained" in claim for claim in rows)  # no such pair in this sweep
    assert report(ds).endswith("offline KL on quiescent steps 101-1000 since input removal")
    # with both error sources in the summary, a table per variant of medians over seeds (error_ratio at none)
    sources = ds.assign(
        fi_only_error_ratio=(dims, np.full(shape, 1.01)),
        mean_field_error_ratio=(dims, np.full(shape, 1.5)),
        noise_only_error_ratio=(dims, np.array([[[2.0, 3.0, 4.0], [1.5, 1.5, 1.5], [1.1, 1.2, 1.3]]])),
        dt_over_tau=(dims, np.full(shape, 0.5)),
    )
    table = {(r["circuit"], r["variant"]): r for r in error_source_rows(sources)}
    assert table["pi", "noisy"] == {
        "circuit": "pi", "variant": "noisy", "twin": 9.0, "fi_only_error_ratio": 1.01, "mean_field_error_ratio": 1.5,
        "noise_only_error_ratio": 3.0, "dt_over_tau": 0.5,
    }  # fmt: skip
    assert table["pi", "biased"]["noise_only_error_ratio"] == pytest.approx(1.2)
    assert report(sources).splitlines()[-3].split() == ["pi", "noisy", "9.00", "1.01", "1.50", "3.00", "0.5"]
    # a summary from before dt_over_tau existed still gets its table, with the step left blank
    older = error_source_rows(sources.drop_vars("dt_over_tau"))
    assert len(older) == 3 and all(np.isnan(row["dt_over_tau"]) for row in older)
    assert report(sources.drop_vars("dt_over_tau")).splitlines()[-1].split()[-1] == "nan"
    assert error_source_rows(ds) == []  # a summary written before these ratios existed
    ds.to_netcdf(tmp_path / "spiking.nc", engine="h5netcdf")
    assert main(["spiking-report", str(tmp_path / "spiking.nc")]) == 0
    assert "2/3 seeds" in capsys.readouterr().out
    assert main(["spiking-report", str(tmp_path / "missing.nc")]) == 2
    assert "no spiking summary" in capsys.readouterr().err
    xr.Dataset({"loss": ("step", np.zeros(3))}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    assert main(["spiking-report", str(tmp_path / "other.nc")]) == 2
    assert "not a spiking summary (lacks circuit, error_ratio" in capsys.readouterr().err

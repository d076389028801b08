"""The twin without spikes (`continuous_rate_circuit`): the rate circuit in continuous time with the twin's synaptic
kernels. With the decay whose one-step decay is the Euler leak, no rise and one substep per step it is the trained
Euler map exactly, interneurons included; a unit driven at a constant rate follows the unit-area double-exponential
kernel's step response for any substep."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_spiking import normalized_circuit
from test_spiking_effective_noise import trials_of

from recircuit.circuit import build_circuit
from recircuit.spiking.convert import rate_circuit_from_model
from recircuit.spiking.simulate import continuous_rate_circuit, continuous_time_note, simulate_rate_circuit


def test_one_substep_with_the_matched_decay_and_no_rise_is_the_euler_map(make_spec):
    """exp(-dt / tau_d) = 1 - dt / tau (synaptic_tau discrete_matched): a step of the continuous circuit with phi held
    over the step is s + (1 - exp(-dt/tau_d)) (phi - s), the Euler update; with normalization interneurons too."""
    model, trajectories, _ = normalized_circuit(make_spec)
    circuit = rate_circuit_from_model(model, "discrete_matched", trajectories)
    assert circuit.n_norm > 0
    euler = simulate_rate_circuit(circuit, trajectories.inputs, trajectories.initial_rates)
    continuous = continuous_rate_circuit(
        circuit, trajectories.inputs, trajectories.initial_rates, 0.0, max_substep_s=circuit.step_s
    )
    n = circuit.n_model
    np.testing.assert_allclose(continuous[..., :n], euler[..., :n], rtol=0, atol=1e-12)
    # the interneurons' columns: their instantaneous rates at the end of each step (the Euler map's are those its
    # model units read during the step, from the rates of the step before)
    at_end = circuit.interneuron_rates(continuous[..., :n], trajectories.inputs)
    np.testing.assert_allclose(continuous[..., n:], at_end, rtol=0, atol=1e-12)
    # finer substeps solve the continuous system instead, which differs from the one-step map
    finer = continuous_rate_circuit(circuit, trajectories.inputs, trajectories.initial_rates, 0.0)
    assert np.abs(finer - euler).max() > 1e-3


@pytest.mark.parametrize("substep_s", [0.02, 0.004, 0.0005])
def test_a_constant_drive_gives_the_double_exponential_step_response(make_spec, substep_s):
    """phi held at 0.7 from rest: s(t) = 0.7 [1 - (tau e^(-t/tau) - tau_r e^(-t/tau_r)) / (tau - tau_r)], sampled at
    the end of every step, exact whatever the substep (the update is the exact solution for constant phi)."""
    model, task = build_circuit(make_spec("head_direction", {"network.activation": "sigmoid"}))
    circuit = rate_circuit_from_model(model)
    inputs, _ = trials_of(model, task, 2, 12)
    h0 = np.zeros((2, circuit.n_model))  # sigmoid rates 0
    tau, tau_rise = circuit.synaptic_tau_s[0], 0.006
    s = continuous_rate_circuit(circuit, inputs, h0, tau_rise, lambda x: np.full_like(x, 0.7), substep_s)
    t = circuit.step_s * np.arange(1, 13)
    expected = 0.7 * (1 - (tau * np.exp(-t / tau) - tau_rise * np.exp(-t / tau_rise)) / (tau - tau_rise))
    model_units = s[:, :, : circuit.n_model]
    np.testing.assert_allclose(model_units, np.broadcast_to(expected[None, :, None], model_units.shape), atol=1e-12)


def test_continuous_rate_circuit_refuses_a_rise_as_slow_as_the_decay(make_spec):
    model, task = build_circuit(make_spec("head_direction"))
    circuit = dataclasses.replace(rate_circuit_from_model(model))
    inputs, h0 = trials_of(model, task, 1, 3)
    with pytest.raises(ValueError, match="must exceed the rise time"):
        continuous_rate_circuit(circuit, inputs, h0, float(circuit.synaptic_tau_s.max()))


def test_the_spike_command_points_at_the_time_step_only_when_the_twin_and_its_mean_field_err():
    assert continuous_time_note(2.46, 1.1, 0.5) is None  # the twin errs, but not for want of its time step
    assert continuous_time_note(1.06, 1.41, 0.5) is None  # the twin does not err
    assert continuous_time_note(float("nan"), 2.0, 0.5) is None
    note = continuous_time_note(2.46, 2.52, 0.5)
    assert note is not None and "2.46 x" in note and "2.52 x" in note and "dt/tau = 0.5" in note
    assert "network.tau_ms" in note

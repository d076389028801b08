"""The twin's effective noise (`recircuit.spiking.effective_noise`) and the rate quiescence run with it: the
one-step innovation recovers a known state noise, is zero on the map's own noise-free trajectories (interneurons
included), counts a wrong map, and the matched quiescence is the rate circuit with that noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit
from test_spiking import normalized_circuit

from recircuit.circuit import build_circuit
from recircuit.spiking.convert import rate_circuit_from_model
from recircuit.spiking.effective_noise import effective_noise_sd, step_innovations
from recircuit.spiking.simulate import decode, matched_rate_quiescence, simulate_rate_circuit, state_noise


def trials_of(model, task, n_trials: int, steps: int):
    trials = task.sample(n_trials, steps, torch.Generator().manual_seed(0))
    with torch.no_grad():
        h0 = model.initial_rates(trials.initial_code).double().numpy()
    return trials.inputs.double().numpy(), h0


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_effective_noise_recovers_the_state_noise_of_a_rate_circuit(make_spec, activation):
    """A rate circuit run with state noise of SD sd per sqrt(tau) in its own units gives back sd for every unit (tanh:
    the noise is drawn in h = 2 s - 1 and the estimate is reported in h)."""
    model, task = build_circuit(make_spec("head_direction", {"network.activation": activation}))
    circuit = rate_circuit_from_model(model)
    inputs, h0 = trials_of(model, task, 40, 100)
    sd = np.linspace(0.02, 0.2, circuit.n_model)  # per unit, per sqrt(tau), model units
    alpha = circuit.step_s / circuit.tau_s[: circuit.n_model]
    to_sigmoid = 0.5 if activation == "tanh" else 1.0
    draws = np.random.default_rng(1).standard_normal(inputs.shape[:2] + (circuit.n_model,))
    noise = state_noise(circuit, sd, draws)
    np.testing.assert_allclose(noise, draws * sd * np.sqrt(alpha) * to_sigmoid, rtol=1e-12)
    rates = simulate_rate_circuit(circuit, inputs, h0, state_noise=noise)
    estimate = effective_noise_sd(circuit, expit, rates, inputs)
    # 40 x 99 innovations per unit: the SD's relative standard error is about 1/sqrt(2 x 3960) = 1.1 %
    np.testing.assert_allclose(estimate, sd, rtol=0.05)
    # the innovations are the draws themselves (the map is exact), whatever the noise did to the trajectory
    innovations = step_innovations(circuit, expit, rates, inputs)
    np.testing.assert_allclose(innovations, noise[:, 1:], atol=1e-12)


def test_no_noise_and_the_right_map_give_zero_interneurons_included(make_spec):
    """On the noise-free trajectories of a circuit with normalization interneurons the innovation is zero to rounding
    (the interneurons enter the map as they enter the rate equivalent); a wrong map is counted."""
    model, trajectories, _ = normalized_circuit(make_spec)
    circuit = rate_circuit_from_model(model, trajectories=trajectories)
    assert circuit.n_norm > 0
    rates = simulate_rate_circuit(circuit, trajectories.inputs, trajectories.initial_rates)
    assert np.abs(step_innovations(circuit, circuit.phi, rates, trajectories.inputs)).max() < 1e-12
    assert effective_noise_sd(circuit, circuit.phi, rates, trajectories.inputs).shape == (circuit.n_model,)
    flatter = effective_noise_sd(circuit, lambda x: circuit.phi(0.8 * x), rates, trajectories.inputs)
    assert (flatter > 1e-4).mean() > 0.5


def test_effective_noise_checks_its_input(make_spec):
    model, task = build_circuit(make_spec("head_direction"))
    circuit = rate_circuit_from_model(model)
    inputs, h0 = trials_of(model, task, 2, 5)
    rates = simulate_rate_circuit(circuit, inputs, h0)
    with pytest.raises(ValueError, match="at least 2 time steps"):
        step_innovations(circuit, expit, rates[:, :1], inputs[:, :1])
    with pytest.raises(ValueError, match="must be"):
        step_innovations(circuit, expit, rates[..., :3], inputs)
    with pytest.raises(ValueError, match="state_noise"):
        simulate_rate_circuit(circuit, inputs, h0, state_noise=np.zeros((2, 5, 3)))


def test_matched_quiescence_is_the_rate_circuit_with_that_noise(make_spec):
    """The matched quiescence: zero input, the given per-unit noise, decoded after the burn-in; zero noise is the
    deterministic rate circuit; under state placement the rate circuit's own noise adds in quadrature."""
    spec = make_spec("head_direction", {"reactivation.burn_in_steps": 5})
    model, task = build_circuit(spec)
    circuit = rate_circuit_from_model(model)
    _, h0 = trials_of(model, task, 3, 2)
    n, steps = circuit.n_model, 20
    zeros = np.zeros((3, steps, circuit.input.shape[1]))

    def rate_decoded(state_noise=None):
        rates = simulate_rate_circuit(circuit, zeros, h0, state_noise=state_noise)
        return decode(model, rates[:, 5:] @ circuit.output.T + circuit.output_bias)

    unit_draws = np.random.default_rng(0).standard_normal((3, steps, n))
    quiet = matched_rate_quiescence(model, circuit, h0, steps, np.zeros(n), unit_draws)
    assert quiet.shape == (3, steps - 5, 1)
    np.testing.assert_array_equal(quiet, rate_decoded())
    sd = np.full(n, 0.3)
    noisy = matched_rate_quiescence(model, circuit, h0, steps, sd, unit_draws)
    draws = unit_draws * 0.3 * np.sqrt(spec.alpha)
    np.testing.assert_allclose(noisy, rate_decoded(draws), atol=1e-12)
    split = matched_rate_quiescence(model, circuit, h0, steps, np.full(n, 0.3 * 0.6), unit_draws, (0.3 * 0.8, None))
    np.testing.assert_allclose(split, noisy, atol=1e-9)
    assert not np.allclose(noisy, quiet)
    # the LIF map instead of the sigmoid changes the run; the same draws otherwise
    halved = matched_rate_quiescence(model, circuit, h0, steps, sd, unit_draws, activation=lambda x: expit(x / 2))
    assert not np.allclose(halved, noisy)


def test_state_noise_in_simulate_rate_circuit_matches_the_torch_model(make_spec):
    """simulate_rate_circuit with state noise is the trained model's own noisy run (state placement)."""
    spec = make_spec("head_direction", {"network.noise.recurrent_sd": 0.1})
    model, task = build_circuit(spec)
    circuit = rate_circuit_from_model(model)
    trials = task.sample(3, 15, torch.Generator().manual_seed(0))
    noise = model.draw_noise(3, 15, torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, rates = model(trials.inputs, trials.initial_code, noise)
        h0 = model.initial_rates(trials.initial_code).double().numpy()
    state_noise = noise.recurrent.double().numpy().transpose(1, 0, 2)  # (time, batch, units) -> (batch, time, units)
    s = simulate_rate_circuit(circuit, trials.inputs.double().numpy(), h0, state_noise=state_noise)
    np.testing.assert_allclose(s, rates.double().numpy(), atol=2e-5)

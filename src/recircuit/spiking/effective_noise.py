"""The spiking twin's own variability, in the units of the rate model's recurrent noise.

A twin is never noise-free: spikes and membrane noise make its smoothed rates s = lambda r wander around the rate
map it implements. Its effective noise is the one-step innovation of s against that map,

    e_t = s_t - [(1 - a) s_{t-1} + a f(W [s_{t-1}; s_I,t] + W_in u_t + b)],   t >= 1, a = dt / tau,

with f the twin's fitted LIF f-I curve (`LIFCalibration.lif_activation`), so that the f-I mismatch with the sigmoid
is not counted as noise. This is the map the rate model runs with state-placed Gaussian noise, h_t = ... +
sd sqrt(a) xi_t, so SD(e) / sqrt(a) is in the units of ``network.noise.recurrent_sd`` (SD per sqrt(tau)): on a rate
circuit run with noise sd it returns sd. Besides spike and membrane noise it holds what the one-step map leaves out
of the twin's continuous dynamics (synaptic rise, exact rather than Euler decay within a step) and the diffusion
approximation of the f-I curve. A tanh circuit's value is doubled (h = 2 s - 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recircuit.spiking.convert import RateCircuit


def step_innovations(
    circuit: RateCircuit,
    activation: Callable[[np.ndarray], np.ndarray],
    rates: np.ndarray,
    inputs: np.ndarray,
) -> np.ndarray:
    """e_t (trial, time - 1, n_model) for t >= 1: sigmoid-space ``rates`` (trial, time, >= n_model units; model units
    first) minus the one-step map with ``activation`` applied to the rates of step t - 1 and ``inputs`` (trial, time,
    n_inputs) of step t. The normalization interneurons enter the map as the rate equivalent's instantaneous units."""
    n = circuit.n_model
    if rates.ndim != 3 or rates.shape[-1] < n or inputs.shape[:2] != rates.shape[:2]:
        raise ValueError(
            f"rates {rates.shape} and inputs {inputs.shape} must be (trial, time, units >= {n}) and (trial, time, .)"
        )
    if rates.shape[1] < 2:
        raise ValueError("the one-step innovation needs at least 2 time steps")
    alpha = circuit.alpha
    previous, now = rates[:, :-1, :n], rates[:, 1:, :n]
    step_inputs = inputs[:, 1:]
    presynaptic = circuit.presynaptic(previous, step_inputs)
    current = presynaptic @ circuit.recurrent[:n].T + step_inputs @ circuit.input[:n].T + circuit.bias[:n]
    return now - ((1 - alpha) * previous + alpha * activation(current))


def effective_noise_sd(
    circuit: RateCircuit,
    activation: Callable[[np.ndarray], np.ndarray],
    rates: np.ndarray,
    inputs: np.ndarray,
) -> np.ndarray:
    """Per model unit (n_model,): SD over trials and steps of the one-step innovation (`step_innovations`) / sqrt(a),
    in the model's own units, i.e. the recurrent noise SD per sqrt(tau) of state-placed Gaussian noise that gives
    the same one-step variability."""
    innovations = step_innovations(circuit, activation, rates, inputs)
    return innovations.reshape(-1, innovations.shape[-1]).std(0) / (circuit.state_scale * np.sqrt(circuit.alpha))

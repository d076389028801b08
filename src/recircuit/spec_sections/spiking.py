"""Spec section `spiking`: the Brian2 leaky integrate-and-fire twin of a trained rate circuit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recircuit.spec_sections.base import NonNegativeInt, PositiveFloat, PositiveInt, StrictModel

LIF_MIN_REFRACTORY_MS = 1.0  # lower bound of a lif curve's fitted refractory period (recircuit.circuit.lif_curve)


def max_refractory_ms(max_rate_hz: float) -> float:
    """Upper bound of a fitted refractory period, ms: 0.97 lambda, so the neuron saturates near 1/lambda."""
    return 0.97 * 1000.0 / max_rate_hz


class SpikingSpec(StrictModel):
    target: Literal["cpp_standalone", "numpy"] = Field(
        "cpp_standalone", description="Brian2 code-generation target (numpy: no compiler needed, slower)"
    )
    dt_ms: PositiveFloat = Field(0.1, description="integration step of the spiking network, ms")
    copies: PositiveInt | None = Field(
        None,
        description="trials simulated side by side (independent copies of the network) per Brian2 run; the binary "
        "is specific to it; null = as many as keep copies x units^2 <= 2^21 synapses, at most 16",
    )
    # --- protocol
    n_trials: PositiveInt = Field(
        20, description="held-out task trials: the first n of the evaluation trials (evaluation.seed)"
    )
    n_quiescent_trials: NonNegativeInt = Field(
        20, description="quiescent trials (no input, membrane noise on) from the first held-out trials' start states"
    )
    quiescent_noise: Literal["membrane", "membrane+rate"] = Field(
        "membrane",
        description="membrane: quiescent variability from spikes and membrane noise only; membrane+rate: also the "
        "rate circuit's own offline noise (as `recircuit quiesce` adds it) mapped into the currents",
    )
    quiescent_steps: PositiveInt | None = Field(
        None, description="rate steps per quiescent trial; null = reactivation.duration_steps"
    )
    n_raster_trials: NonNegativeInt = Field(1, description="task trials whose spike times are stored as events")
    seed: NonNegativeInt = Field(0, description="base seed of the membrane noise and initial voltages")
    fi_check_s: PositiveFloat = Field(4.0, description="simulated time per neuron of the f-I check, s")
    # --- conversion
    max_rate_grid_hz: list[PositiveFloat] = Field(
        [25.0, 50.0, 100.0, 150.0, 200.0],
        min_length=1,
        description="grid of 1/lambda (the rate of a saturated unit), Hz; the best on the search trials is kept",
    )
    n_search_trials: PositiveInt = Field(8, description="trials of the lambda grid search (not the evaluation trials)")
    search_seed: NonNegativeInt = Field(30_000, description="seed of the grid-search trajectories")
    calibration_percentiles: tuple[float, float] = Field(
        (1.0, 99.0), description="operating range of the f-I fit: these percentiles of the rate circuit's currents"
    )
    # --- neuron (for network.activation lif also the rate circuit's f-I curve, so fixed once the circuit is trained)
    membrane_noise_mV: PositiveFloat = Field(
        3.0,
        description="sigma of the white membrane noise (tau_m dv = ... + sigma sqrt(tau_m) dW), mV; less noise fires "
        "more regularly, so the twin adds less spike-count noise of its own (10 until 2026-12-06)",
    )
    tau_m_ms: PositiveFloat = Field(10.0, description="membrane time constant, ms")
    threshold_gap_mV: PositiveFloat = Field(15.0, description="threshold minus rest (= reset), mV")
    lif_max_rate_hz: PositiveFloat = Field(
        400.0,
        description="1/lambda of a lif circuit (network.activation lif): the rate at which its activation is 1 "
        "(sigmoid-like, saturating near 1.5/lambda); a higher rate fires more spikes for the same activity, so the "
        "twin adds less spike-count noise (200 until 2026-12-06); other activations search max_rate_grid_hz instead",
    )
    synaptic_tau: Literal["rate_tau", "discrete_matched"] = Field(
        "rate_tau",
        description="synaptic decay: the rate tau (Kim et al. 2019), or -dt/ln(1 - dt/tau), whose exponential decay "
        "over one step equals the rate model's Euler leak",
    )
    tau_rise_ms: PositiveFloat = Field(2.0, description="synaptic rise time of the double-exponential kernel, ms")
    normalization_tau_ms: PositiveFloat = Field(
        10.0,
        description="synaptic decay of the normalization interneurons (subtractive network.normalization), ms: short, "
        "as they are fast and stateless in the rate model; must exceed tau_rise_ms",
    )
    normalization_current: PositiveFloat = Field(
        1.0,
        le=4.0,
        description="half-range Y of a normalization interneuron's sigmoid current: its activity between the 1st "
        "and 99th percentiles on the search trials maps linearly onto [-Y, Y]; larger Y modulates its firing more "
        "(0.27-0.73 of the max rate at Y = 1) but adds more linearisation error (relative about Y^2/12)",
    )
    time_step_correction: bool = Field(
        True,
        description="fit the neuron's drive and refractory period (whole steps) to the f-I curve of the neuron as "
        "integrated at dt_ms (Euler steps, one threshold check per step), not to the continuous-time Siegert rate, "
        "which is 1-2% of the max rate off at 0.1 ms; false: the continuous-time fit",
    )
    min_refractory_ms: PositiveFloat = Field(1.0, description="lower bound of the fitted refractory period, ms")

    @model_validator(mode="after")
    def _consistent(self) -> SpikingSpec:
        low, high = self.calibration_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(
                f"calibration_percentiles {self.calibration_percentiles} must satisfy 0 <= low < high <= 100"
            )
        if self.normalization_tau_ms <= self.tau_rise_ms:
            raise ValueError(
                f"normalization_tau_ms ({self.normalization_tau_ms}) must exceed tau_rise_ms ({self.tau_rise_ms}): "
                "the synaptic kernel's decay must be slower than its rise"
            )
        if self.dt_ms >= self.tau_m_ms:
            raise ValueError(
                f"dt_ms ({self.dt_ms}) must be smaller than tau_m_ms ({self.tau_m_ms}): the membrane is integrated in "
                "Euler steps of dt_ms"
            )
        if self.min_refractory_ms < self.dt_ms:
            raise ValueError(f"min_refractory_ms ({self.min_refractory_ms}) must be >= dt_ms ({self.dt_ms})")
        if max_refractory_ms(self.lif_max_rate_hz) <= LIF_MIN_REFRACTORY_MS:
            raise ValueError(
                f"lif_max_rate_hz ({self.lif_max_rate_hz}) must be below {970.0 / LIF_MIN_REFRACTORY_MS:g} Hz: a lif "
                f"curve's refractory period (at least {LIF_MIN_REFRACTORY_MS} ms) must fit within 0.97 lambda"
            )
        if max_refractory_ms(max(self.max_rate_grid_hz)) <= self.min_refractory_ms:
            raise ValueError(
                f"max_rate_grid_hz up to {max(self.max_rate_grid_hz)} Hz leaves no room for a refractory period >= "
                f"min_refractory_ms ({self.min_refractory_ms} ms)"
            )
        return self

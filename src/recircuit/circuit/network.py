"""The leaky E/I rate network.

Dynamics (one step of length dt, a = dt/tau, rates h, input u):

    h_t = (1 - a) h_{t-1} + a phi(W_rec h_{t-1} + W_in u_t + b [+ drive noise]) [+ state noise]
    y_t = W_out h_t + b_out

Dale's law holds by construction: sign-constrained matrices are stored as unconstrained parameters and used as
``|raw| * column_sign``, so no optimizer step can flip a sign. The readout reads excitatory units only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from recircuit.circuit.lif_curve import TabulatedCurve, lif_activation, tabulated_lif
from recircuit.circuit.noise import standard_normal, standard_uniform
from recircuit.circuit.normalization import InhibitoryNormalization
from recircuit.circuit.scan import fused_scan_available, rate_scan
from recircuit.spec import CircuitSpec

if TYPE_CHECKING:  # rules live in recircuit.learning, which imports this module
    from recircuit.learning.rules import Rule

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "lif": lif_activation,  # the default neuron's; a circuit's own is `activation_of(spec)`
}


def activation_of(spec: CircuitSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """phi of a circuit: ``network.activation``; for ``lif`` the curve of the twin's neuron (``spiking``'s membrane
    noise, tau_m, threshold and lif_max_rate_hz)."""
    if spec.network.activation == "lif":
        neuron = spec.spiking
        return tabulated_lif(neuron.membrane_noise_mV, neuron.tau_m_ms, neuron.threshold_gap_mV, neuron.lif_max_rate_hz)
    return ACTIVATIONS[spec.network.activation]


@dataclass(frozen=True)
class Noise:
    """Pre-drawn noise for a whole run (already scaled per step); None where that noise is off."""

    recurrent: torch.Tensor | None  # (time, batch, units)
    input: torch.Tensor | None  # (batch, time, n_inputs)


def circuit_step(
    rates: torch.Tensor,
    drive: torch.Tensor,
    recurrent_t: torch.Tensor,
    alpha: float,
    phi: Callable[[torch.Tensor], torch.Tensor],
    noise: torch.Tensor | None,
    noise_on_drive: bool,
) -> torch.Tensor:
    """One Euler step of the rate dynamics.

    rates (batch, units) at t-1; drive = W_in u_t + b (batch, units); recurrent_t = W_rec transposed (pre, post);
    noise (batch, units) already scaled by sd*sqrt(dt/tau), added to the drive or to the new state.
    """
    return split_circuit_step(rates, rates, drive, recurrent_t, alpha, phi, noise, noise_on_drive)


def split_circuit_step(
    rates: torch.Tensor,
    presynaptic: torch.Tensor,
    drive: torch.Tensor,
    recurrent_t: torch.Tensor,
    alpha: float,
    phi: Callable[[torch.Tensor], torch.Tensor],
    noise: torch.Tensor | None,
    noise_on_drive: bool,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """circuit_step with the recurrent input taken from ``presynaptic`` (same values as ``rates``; e-prop passes
    ``rates.detach()`` so only the backward pass differs) and the leak path from ``rates``; ``normalize`` maps the
    total current (batch, units) before noise and nonlinearity (inhibitory normalization)."""
    current = torch.addmm(drive, presynaptic, recurrent_t)
    if normalize is not None:
        current = normalize(current)
    if noise is not None and noise_on_drive:
        current = current + noise
    new_rates = torch.lerp(rates, phi(current), alpha)
    if noise is not None and not noise_on_drive:
        new_rates = new_rates + noise
    return new_rates


def _affine(bias: torch.Tensor, inputs: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """bias + inputs @ weight_t: one matrix product (addmm), or one per member (baddbmm) when the tensors carry a
    leading member dimension; bias (..., 1, out), inputs (..., rows, in), weight_t (..., in, out)."""
    if inputs.dim() == 2:
        return torch.addmm(bias, inputs, weight_t)
    return torch.baddbmm(bias, inputs, weight_t)


def _exact_bptt(rule: Rule | None, steps: int) -> bool:
    """True when ``rule`` leaves the whole backward pass of a ``steps``-step run exact (bptt, or tbptt with no cut
    inside it), so the fused scan computes it."""
    if rule is None:
        return True
    return not rule.detach_presynaptic and rule.feedback is None and not any(map(rule.cut_before, range(steps)))


def balanced_dale_matrix(
    n_exc: int, n_inh: int, spectral_radius: float, zero_diagonal: bool, generator: torch.Generator
) -> torch.Tensor:
    """Non-negative magnitudes whose signed matrix (E columns +, I columns -) has zero row sums and the given radius.

    Zero row sums (each unit's E input equals its I input) remove the outlier eigenvalue that an unbalanced
    Dale matrix has, so the spectral radius is set by the bulk.
    """
    n = n_exc + n_inh
    magnitude = torch.randn(n, n, generator=generator, dtype=torch.float64).abs()
    if zero_diagonal:
        magnitude.fill_diagonal_(0.0)
    exc_sum = magnitude[:, :n_exc].sum(1, keepdim=True)
    inh_sum = magnitude[:, n_exc:].sum(1, keepdim=True).clamp_min(1e-12)
    magnitude[:, n_exc:] *= exc_sum / inh_sum
    signed = magnitude * torch.cat([torch.ones(n_exc), -torch.ones(n_inh)]).double()
    radius = torch.linalg.eigvals(signed).abs().max().item()
    return (magnitude * (spectral_radius / radius)).float()


class EICircuit(nn.Module):
    """Noisy leaky rate RNN with excitatory and inhibitory units (or an unconstrained control when dale is false)."""

    def __init__(self, spec: CircuitSpec, n_inputs: int, n_outputs: int, input_scale: float, generator=None):
        super().__init__()
        net = spec.network
        self.spec = spec
        self.n_exc, self.n_inh = net.n_exc, net.n_inh
        self.n_units = net.n_units
        self.dale = net.dale
        self.alpha = spec.alpha
        self.phi = activation_of(spec)
        self.lif_curve = self.phi if isinstance(self.phi, TabulatedCurve) else None  # a lif circuit's own curve
        self.noise_on_drive = net.noise.placement == "drive"
        self.n_readout = self.n_exc if self.dale else self.n_units
        n = self.n_units
        sign = torch.cat([torch.ones(self.n_exc), -torch.ones(self.n_inh)]) if self.dale else torch.ones(n)
        self.register_buffer("column_sign", sign)
        mask = torch.ones(n, n)
        if net.zero_self_connections:
            mask.fill_diagonal_(0.0)
        self.register_buffer("recurrent_mask", mask)

        g = generator if generator is not None else torch.Generator().manual_seed(spec.training.seed)
        if self.dale:
            recurrent = balanced_dale_matrix(
                self.n_exc, self.n_inh, net.spectral_radius, net.zero_self_connections, g
            )
            output = torch.randn(n_outputs, self.n_readout, generator=g).abs() * (0.1 / math.sqrt(self.n_readout))
        else:
            recurrent = torch.randn(n, n, generator=g, dtype=torch.float64) * mask.double()
            recurrent *= net.spectral_radius / torch.linalg.eigvals(recurrent).abs().max()
            recurrent = recurrent.float()
            output = torch.randn(n_outputs, self.n_readout, generator=g) * (0.1 / math.sqrt(self.n_readout))
        if net.input_init == "fan_in":
            bound = 1 / math.sqrt(n_inputs)
            input_w = torch.rand(n, n_inputs, generator=g) * (2 * bound) - bound
        else:
            input_w = torch.randn(n, n_inputs, generator=g) / (input_scale * math.sqrt(n_inputs))
        if net.input_weights == "excitatory":
            input_w = input_w.abs()
        self.recurrent_raw = nn.Parameter(recurrent)
        self.input_raw = nn.Parameter(input_w)
        if net.learned_bias:
            self.bias = nn.Parameter(torch.zeros(n))
        else:
            self.register_buffer("bias", torch.zeros(n))
        self.output_raw = nn.Parameter(output)
        self.output_bias = nn.Parameter(torch.zeros(n_outputs))
        self.learned_initial_state = net.initial_state == "learned_encoder"
        if self.learned_initial_state:
            self.encoder = nn.Parameter(torch.randn(n, n_outputs, generator=g))
            self.encoder_bias = nn.Parameter(torch.zeros(n))
        self.normalization: InhibitoryNormalization | None = None
        self.homeostatic_loss = torch.zeros(())
        norm = net.normalization
        if norm.kind != "none":
            # presynaptic activity of the fast interneurons: [h_{t-1}; u_t; 1]; Dale signs on h, free on u and 1
            presynaptic_sign = torch.cat([sign if self.dale else torch.zeros(n), torch.zeros(n_inputs + 1)])
            self.normalization = InhibitoryNormalization(
                self.n_exc,
                n + n_inputs + 1,
                presynaptic_sign,
                norm.n_interneurons or max(1, self.n_exc // 10),
                norm.kind,
                norm.errors,
                norm.homeostatic_weight,
                g,
            )
            with torch.no_grad():
                excitatory_rows = torch.cat(
                    [self.recurrent_weight(), self.input_weight(), self.bias[:, None]], dim=1
                )[: self.n_exc]
            self.normalization.initialise_from(excitatory_rows)

    # ------------------------------------------------------------------------------------------- effective weights
    def recurrent_weight(self) -> torch.Tensor:
        """W_rec (post x pre) as the dynamics use it: E columns >= 0, I columns <= 0 under Dale's law."""
        magnitude = self.recurrent_raw.abs() if self.dale else self.recurrent_raw
        return magnitude * self.recurrent_mask * self.column_sign

    def input_weight(self) -> torch.Tensor:
        return self.input_raw.abs() if self.spec.network.input_weights == "excitatory" else self.input_raw

    def output_weight(self) -> torch.Tensor:
        """W_out over the readout units (E units under Dale's law), non-negative under Dale's law."""
        return self.output_raw.abs() if self.dale else self.output_raw

    def effective_weights(self) -> dict[str, torch.Tensor]:
        """The matrices the dynamics use, post x pre, detached: input, recurrent, bias, output (over all units).

        With inhibitory normalization also: normalization_ix (interneurons x [units, inputs, 1], presynaptic signs
        kept), normalization_ei (E units x interneurons, >= 0) and, when divisive, normalization_bix (signed).
        """
        with torch.no_grad():
            output = self.output_raw.new_zeros(self.output_raw.shape[0], self.n_units)
            output[:, : self.n_readout] = self.output_weight()
            weights = {
                "input": self.input_weight().clone(),
                "recurrent": self.recurrent_weight().clone(),
                "bias": self.bias.detach().clone(),
                "output": output,
                "output_bias": self.output_bias.detach().clone(),
            }
            if self.normalization is not None:
                weights["normalization_ix"] = self.normalization.ix().clone()
                weights["normalization_ei"] = self.normalization.ei().clone()
                if self.normalization.kind == "divisive":
                    weights["normalization_bix"] = self.normalization.bix.detach().clone()
            return weights

    # --------------------------------------------------------------------------------------------------- dynamics
    def noise_step_scale(self, sd: float) -> float:
        """Per-step multiplier of the unit draws (``unit_noise``) for a noise level ``sd`` in the spec's units:
        sd * sqrt(dt / tau) for gaussian noise, sd for reference_uniform (the reference does not scale with dt)."""
        if self.spec.network.noise.distribution == "reference_uniform":
            return sd
        return sd * math.sqrt(self.alpha)

    def noise_sd_per_step(self, scale: float = 1.0) -> tuple[float, float]:
        """(recurrent, input) per-step multipliers of the unit draws, times an optional scale (for gaussian noise
        the per-step SD, sd * sqrt(dt / tau))."""
        noise = self.spec.network.noise
        return self.noise_step_scale(noise.recurrent_sd * scale), self.noise_step_scale(noise.input_sd * scale)

    def unit_noise(self, shape: tuple[int, ...], generator: torch.Generator, *, parallel: bool = True) -> torch.Tensor:
        """Draws of the spec's noise law, N(0, 1) or U[0, 1) (reference_uniform), on the circuit's device: on all CPU
        threads (circuit.noise), or with ``parallel=False`` as one serial stream of ``generator``."""
        uniform = self.spec.network.noise.distribution == "reference_uniform"
        device = self.recurrent_raw.device
        if parallel:
            return (standard_uniform if uniform else standard_normal)(shape, generator, device)
        return (torch.rand if uniform else torch.randn)(shape, generator=generator, device=device)

    def draw_noise(
        self, batch: int, steps: int, generator: torch.Generator, scale: float = 1.0, input_scale: float | None = None
    ) -> Noise:
        """All the noise of one run (recurrent noise on all CPU threads: circuit.noise); ``scale`` multiplies the
        recurrent noise level (e.g. sqrt(2) offline)."""
        rec_sd, in_sd = self.noise_sd_per_step(scale)
        if input_scale is not None:
            in_sd = self.noise_sd_per_step(input_scale)[1]
        n_inputs = self.input_raw.shape[1]
        recurrent = None
        if rec_sd > 0:
            recurrent = self.unit_noise((steps, batch, self.n_units), generator).mul_(rec_sd)
        inputs = self.unit_noise((batch, steps, n_inputs), generator, parallel=False).mul_(in_sd) if in_sd > 0 else None
        return Noise(recurrent, inputs)

    def initial_rates(self, initial_code: torch.Tensor) -> torch.Tensor:
        """h0 = phi(W_enc code/|code| + b_enc) from the cell code of the start state, or zeros.

        Like ``run``, it accepts a leading member dimension: with parameters stacked over K
        circuits (torch.func.functional_call), codes (K, batch, n_cells) give rates (K, batch, units).
        """
        if not self.learned_initial_state:
            return initial_code.new_zeros(*initial_code.shape[:-1], self.n_units)
        unit_code = initial_code / torch.linalg.vector_norm(initial_code, dim=-1, keepdim=True).clamp_min(1e-12)
        return self.phi(_affine(self.encoder_bias.unsqueeze(-2), unit_code, self.encoder.mT))

    def run(
        self, inputs: torch.Tensor, initial_rates: torch.Tensor, noise: Noise, *, rule: Rule | None = None
    ) -> torch.Tensor:
        """Rates (batch, time, units) for inputs (batch, time, n_inputs) from initial rates (batch, units).

        ``rule`` (recircuit.learning.rules.Rule) changes only the backward pass: tbptt detaches the state every K
        steps, eprop/rflo detach h_{t-1} in the recurrent input; the values equal rule=None (bptt). Exact BPTT
        without normalization runs the fused scan (recircuit.circuit.scan), which also takes a leading member
        dimension on every tensor and parameter (ensembles); under torch.func transforms (the curvature analysis)
        it runs as the autograd loop over ``circuit_step``.
        """
        if noise.input is not None:
            inputs = inputs + noise.input
        # W_in^T made contiguous: autograd then forms its gradient as u^T g (fast), not (g^T u)^T (6x slower here)
        input_t = self.input_weight().mT.contiguous()
        drive = _affine(self.bias.unsqueeze(-2), inputs.flatten(-3, -2), input_t).view(
            *inputs.shape[:-1], self.n_units
        )
        recurrent_t = self.recurrent_weight().mT
        self.homeostatic_loss = torch.zeros((), device=drive.device)
        plain = self.normalization is None and _exact_bptt(rule, inputs.shape[-2])
        if plain and fused_scan_available():
            activation = self.lif_curve if self.lif_curve is not None else self.spec.network.activation
            return rate_scan(recurrent_t, drive, initial_rates, noise.recurrent, self.alpha, activation,
                             self.noise_on_drive)
        step_noise = noise.recurrent.unbind(0) if noise.recurrent is not None else [None] * inputs.shape[1]
        if plain:
            rates, history = initial_rates, []
            for drive_t, noise_t in zip(drive.unbind(1), step_noise):
                rates = circuit_step(rates, drive_t, recurrent_t, self.alpha, self.phi, noise_t, self.noise_on_drive)
                history.append(rates)
            return torch.stack(history, 1)
        return self._run_general(inputs, drive, recurrent_t, initial_rates, step_noise, rule)

    def _run_general(self, inputs, drive, recurrent_t, rates, step_noise, rule) -> torch.Tensor:
        """The time loop with a credit-assignment rule's detaches and/or inhibitory normalization of the excitatory
        current at every step; sets ``self.homeostatic_loss`` to the local loss averaged over time steps (it trains
        only the normalizing interneurons; computed once over all steps after the loop)."""
        normalization, n_exc = self.normalization, self.n_exc
        prepared = normalization.prepare(inputs) if normalization is not None else None
        history, drives_exc, presynaptic_rates = [], [], []
        for step, (drive_t, noise_t) in enumerate(zip(drive.unbind(1), step_noise)):
            if rule is not None and rule.cut_before(step):
                rates = rates.detach()
            presynaptic = rates.detach() if rule is not None and rule.detach_presynaptic else rates
            normalize = None
            if normalization is not None:
                presynaptic_rates.append(rates.detach())  # what the fast interneurons read: [h_{t-1}; u_t; 1]

                def normalize(current, rates=rates, step=step):
                    drives_exc.append(current[:, :n_exc].detach())
                    z = normalization.normalize_step(current[:, :n_exc], rates, prepared, step)
                    return torch.cat([z, current[:, n_exc:]], dim=1)

            rates = split_circuit_step(
                rates, presynaptic, drive_t, recurrent_t, self.alpha, self.phi, noise_t, self.noise_on_drive, normalize
            )
            history.append(rates)
        if normalization is not None:
            x = torch.cat(
                [torch.stack(presynaptic_rates, 1), inputs, torch.ones_like(inputs[..., :1])], dim=-1
            )
            self.homeostatic_loss = normalization.homeostatic_loss(torch.stack(drives_exc, 1), x)
        else:
            self.homeostatic_loss = torch.zeros((), device=drive.device)
        return torch.stack(history, 1)

    def readout(
        self,
        rates: torch.Tensor,
        *,
        rule: Rule | None = None,
        weights: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Outputs (batch, time, n_outputs) from rates (batch, time, units); rflo routes the error through B.

        ``weights`` = (W_out, b_out) replaces the circuit's own (one member's, when the parameters are stacked).
        """
        weight, bias = weights if weights is not None else (self.output_weight(), self.output_bias)
        if rule is not None and rule.feedback is not None:
            return rule.readout(rates, weight, bias, self.n_readout)
        return F.linear(rates[..., : self.n_readout], weight, bias)

    def forward(
        self, inputs: torch.Tensor, initial_code: torch.Tensor, noise: Noise, *, rule: Rule | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, rates) for a batch of trials; ``rule`` selects the credit-assignment backward pass."""
        rates = self.run(inputs, self.initial_rates(initial_code), noise, rule=rule)
        return self.readout(rates, rule=rule), rates

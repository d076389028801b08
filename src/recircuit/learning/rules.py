"""Credit-assignment rules: bptt, tbptt, eprop, rflo. One forward pass, bit for bit; only the backward differs.

Our network is in *r-form* (rate-filtered; Murray 2019):

    u_t = W h_{t-1} + W_in x_t + b,     h_t = (1 - a) h_{t-1} + a phi(u_t) [+ noise],     y_t = W_out h^E_t + b_out

- ``bptt``: exact gradient (plain autograd through the unrolled loop).
- ``tbptt``: truncated BPTT with a *full-state cut* every K = ``training.tbptt_window_steps`` steps: h is detached
  before steps K, 2K, ... (never before step 0, so the initial-state encoder keeps its gradient). In the r-form h is
  the whole state, so the "detach h only" variant of some a-form codes is the same thing here. At K = 1 the leak
  path is cut too, so tbptt(1) equals e-prop only when a = dt/tau = 1.
- ``eprop`` (symmetric e-prop, Bellec et al. 2020): h_{t-1} is detached in the recurrent input W h_{t-1} only; the
  leak path (1 - a) h_{t-1} keeps its gradient. Autograd then computes exactly sum_t L_t * e_t with the learning
  signal L_t = dE/dh_t|partial = W_out^T dE/dy_t and the r-form eligibility trace
  e_ij,t = (1 - a) e_ij,t-1 + a phi'(u_i,t) h_j,t-1 (:func:`eprop_reference_gradients` computes it explicitly).
- ``rflo`` (Murray 2019): e-prop with the learning signal sent through a fixed random feedback matrix B
  (units x outputs, :func:`rflo_feedback`) instead of W_out^T. The readout W_out itself gets its exact gradient.

Feedback to inhibitory units (Dale's law): the readout reads E units only, so the symmetric learning signal
W_out^T dE/dy is zero on I units. Under ``eprop`` the I units therefore receive no learning signal at all: their
incoming recurrent and input weights and their biases never change (their outgoing weights onto E units do learn,
through the E units' eligibility traces). ``tbptt`` and ``bptt`` reach I units through the recurrent path inside the
window. Under ``rflo`` B has a row for every unit, so I units get a random learning signal like E units do.

MDGL is not implemented (the spec's training.rule does not list it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from recircuit.spec import CircuitSpec

RULES = ("bptt", "tbptt", "eprop", "rflo")
RFLO_FEEDBACK_SEED = 2_000_000  # B is drawn from a CPU generator seeded RFLO_FEEDBACK_SEED + training.seed


class FeedbackReadout(torch.autograd.Function):
    """y = W_out h^E + b_out (as EICircuit.readout); the backward sends dE/dy to all units through B, not W_out^T."""

    @staticmethod
    def forward(ctx, rates, weight, bias, feedback, n_readout):  # noqa: D401 - autograd signature
        ctx.save_for_backward(rates, feedback)
        ctx.n_readout = n_readout
        return F.linear(rates[..., :n_readout], weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        rates, feedback = ctx.saved_tensors
        grad_rates = grad_out @ feedback.T  # (..., units): the learning signal B dE/dy
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = flat_grad.T @ rates[..., : ctx.n_readout].reshape(-1, ctx.n_readout)  # exact delta rule
        grad_bias = flat_grad.sum(0)
        return grad_rates, grad_weight, grad_bias, None, None


@dataclass(frozen=True)
class Rule:
    """A credit-assignment rule as the forward pass sees it (EICircuit.run/forward take it as ``rule=``).

    name: one of RULES; window_steps: tbptt window K (steps); feedback: rflo matrix B (units x outputs).
    """

    name: str
    window_steps: int | None = None
    feedback: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"unknown credit-assignment rule {self.name!r}; known: {', '.join(RULES)}")
        if self.name == "tbptt" and (self.window_steps is None or self.window_steps < 1):
            raise ValueError("tbptt needs window_steps >= 1")
        if self.name == "rflo" and self.feedback is None:
            raise ValueError("rflo needs a feedback matrix B (units x outputs)")

    @property
    def detach_presynaptic(self) -> bool:
        """True when h_{t-1} is detached in the recurrent input W h_{t-1} (e-prop family)."""
        return self.name in ("eprop", "rflo")

    def cut_before(self, step: int) -> bool:
        """True when the whole state is detached before time step ``step`` (0-based; tbptt only)."""
        return self.name == "tbptt" and step > 0 and step % self.window_steps == 0

    def readout(self, rates: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_readout: int) -> torch.Tensor:
        """Outputs (batch, time, outputs); identical values to F.linear(rates[..., :n_readout], weight, bias)."""
        if self.feedback is None:
            return F.linear(rates[..., :n_readout], weight, bias)
        feedback = self.feedback.to(device=rates.device, dtype=rates.dtype)
        return FeedbackReadout.apply(rates, weight, bias, feedback, n_readout)


def rflo_feedback(
    n_units: int, n_outputs: int, seed: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Fixed random feedback B (units x outputs), B_ij ~ N(0, 1/n_outputs) (Murray 2019), from a CPU generator."""
    generator = torch.Generator().manual_seed(RFLO_FEEDBACK_SEED + int(seed))
    b = torch.randn(n_units, n_outputs, generator=generator, dtype=torch.float64) / n_outputs**0.5
    return b.to(device=device, dtype=dtype)


def make_rule(spec: CircuitSpec, n_units: int, n_outputs: int, device: str | torch.device = "cpu") -> Rule:
    """The rule of ``spec.training`` (B for rflo recreated deterministically from training.seed)."""
    cfg = spec.training
    if cfg.rule == "tbptt":
        return Rule("tbptt", window_steps=cfg.tbptt_window_steps)
    if cfg.rule == "rflo":
        return Rule("rflo", feedback=rflo_feedback(n_units, n_outputs, cfg.seed, device=device))
    return Rule(cfg.rule)


# ------------------------------------------------------------------------------------ explicit reference (tests)
def eprop_reference_gradients(
    model, inputs: torch.Tensor, initial_rates: torch.Tensor, noise, output_grad: torch.Tensor,
    feedback: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """e-prop / RFLO gradients of recurrent_raw, input_raw and bias by explicit forward eligibility traces.

    The reference the autograd-with-detach implementation is tested against (O(batch N^2) memory per step).
    output_grad = dE/dy (batch, time, outputs); the learning signal is L_t = W_out^T dE/dy_t on readout units
    (zero elsewhere) or B dE/dy_t with ``feedback`` B (units x outputs). Traces, r-form:
    e^W_ij,t = (1-a) e^W_ij,t-1 + a phi'(u_i,t) h_j,t-1 (same for W_in with x_t and for b with 1). The chain
    factor of Dale's parametrisation W = |raw| * mask * sign is applied by hand.
    """
    alpha = model.alpha
    with torch.no_grad():
        w_rec = model.recurrent_weight()
        w_in = model.input_weight()
        if noise.input is not None:
            inputs = inputs + noise.input
        batch, steps, _ = inputs.shape
        n = model.n_units
        if feedback is None:
            signal = torch.zeros(batch, steps, n, dtype=output_grad.dtype, device=output_grad.device)
            signal[..., : model.n_readout] = output_grad @ model.output_weight()
        else:
            signal = output_grad @ feedback.T
        trace_w = torch.zeros(batch, n, n, dtype=inputs.dtype)
        trace_in = torch.zeros(batch, n, inputs.shape[-1], dtype=inputs.dtype)
        trace_b = torch.zeros(batch, n, dtype=inputs.dtype)
        grad_w = torch.zeros(n, n, dtype=inputs.dtype)
        grad_in = torch.zeros_like(w_in)
        grad_b = torch.zeros(n, dtype=inputs.dtype)
        rates = initial_rates
        for t in range(steps):
            u = rates @ w_rec.T + inputs[:, t] @ w_in.T + model.bias
            if noise.recurrent is not None and model.noise_on_drive:
                u = u + noise.recurrent[t]
            u = u.detach().requires_grad_(True)
            with torch.enable_grad():
                slope = torch.autograd.grad(model.phi(u).sum(), u)[0]  # phi'(u), (batch, units)
            a_slope = alpha * slope
            trace_w = (1 - alpha) * trace_w + a_slope[:, :, None] * rates[:, None, :]
            trace_in = (1 - alpha) * trace_in + a_slope[:, :, None] * inputs[:, t, None, :]
            trace_b = (1 - alpha) * trace_b + a_slope
            lt = signal[:, t]
            grad_w += torch.einsum("bi,bij->ij", lt, trace_w)
            grad_in += torch.einsum("bi,bik->ik", lt, trace_in)
            grad_b += (lt * trace_b).sum(0)
            rates = torch.lerp(rates, model.phi(u.detach()), alpha)
            if noise.recurrent is not None and not model.noise_on_drive:
                rates = rates + noise.recurrent[t]
        raw = model.recurrent_raw
        chain_w = (torch.sign(raw) if model.dale else torch.ones_like(raw)) * model.recurrent_mask * model.column_sign
        chain_in = torch.sign(model.input_raw) if model.spec.network.input_weights == "excitatory" else 1.0
        return {"recurrent_raw": grad_w * chain_w, "input_raw": grad_in * chain_in, "bias": grad_b}

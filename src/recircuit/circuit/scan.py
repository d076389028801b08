"""Fused BPTT scan of the leaky rate dynamics (the plain path: rule bptt, no inhibitory normalization).

The forward pass runs the time loop without autograd,

    c_t = h_{t-1} W_rec^T + d_t [+ n_t]        d_t = W_in u_t + b (precomputed for all steps), noise n on the drive
    h_t = lerp(h_{t-1}, phi(c_t), a) [+ n_t]   or on the state,

writing every h_t into one preallocated (..., batch, time, units) tensor and a * phi'(c_t) into another. The
backward pass walks time backwards with one matmul per step for the state gradient,

    g_c,t = a phi'(c_t) * g_h,t        g_h,t-1 = G_t-1 + (1 - a) g_h,t + g_c,t W_rec,

storing every g_c,t (the drive's gradient), then forms dL/dW_rec^T = sum_t h_{t-1}^T g_c,t as one matmul over all
trials and steps (one big product runs near the matmul ceiling; 100 small ones do not on 2 shared cores). Forward
values equal the autograd loop over ``circuit_step`` bit for bit (the same float operations in the same order),
gradients to float32 rounding (sums in another order). Every tensor may carry leading member dimensions (an
ensemble of K circuits: (K, ...) everywhere, the matmuls become batched matmuls), so the same code trains one
circuit or K at once.

Only first derivatives are provided (the backward is once-differentiable), and torch.func transforms (vmap, grad,
jvp: the curvature analysis) cannot see inside a custom autograd Function, so callers use ``fused_scan_available``
and fall back to the autograd loop where it says no.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from recircuit.circuit.lif_curve import TabulatedCurve, lif_activation

# Each activation maps the current c (batch, units) to phi(c), in place where it can, and, when ``slope`` is given,
# writes alpha * phi'(c) into it (from phi(c) where that is exact, so no second pass over c is needed).


def _sigmoid(current: torch.Tensor, slope: torch.Tensor | None, alpha: float) -> torch.Tensor:
    response = current.sigmoid_()
    if slope is not None:
        torch.addcmul(response, response, response, value=-1.0, out=slope).mul_(alpha)  # a r (1 - r)
    return response


def _relu(current: torch.Tensor, slope: torch.Tensor | None, alpha: float) -> torch.Tensor:
    response = current.relu_()
    if slope is not None:
        torch.gt(response, 0, out=slope).mul_(alpha)  # a [c > 0], the subgradient 0 at c = 0 as torch.relu
    return response


def _tanh(current: torch.Tensor, slope: torch.Tensor | None, alpha: float) -> torch.Tensor:
    response = current.tanh_()
    if slope is not None:
        torch.mul(response, response, out=slope).mul_(-alpha).add_(alpha)  # a (1 - r^2)
    return response


def _softplus(current: torch.Tensor, slope: torch.Tensor | None, alpha: float) -> torch.Tensor:
    if slope is not None:
        torch.sigmoid(current, out=slope).mul_(alpha)  # a sigmoid(c)
    return F.softplus(current)


def _tabulated(
    curve: TabulatedCurve, current: torch.Tensor, slope: torch.Tensor | None, alpha: float
) -> torch.Tensor:
    response, derivative = curve.value_and_slope(current)
    if slope is not None:
        torch.mul(derivative, alpha, out=slope)  # a phi'(c), the interpolant's exact derivative
    return response


Activate = Callable[[torch.Tensor, torch.Tensor | None, float], torch.Tensor]
ACTIVATE: dict[str, Activate] = {
    "sigmoid": _sigmoid,
    "relu": _relu,
    "tanh": _tanh,
    "softplus": _softplus,
    "lif": partial(_tabulated, lif_activation),  # the default neuron's curve
}


def _activate(activation: str | TabulatedCurve) -> Activate:
    """The in-place activation of a name, or of a tabulated curve (a ``lif`` circuit's own, `EICircuit.phi`)."""
    if isinstance(activation, TabulatedCurve):
        return partial(_tabulated, activation)
    return ACTIVATE[activation]


def fused_scan_available() -> bool:
    """True unless a torch.func transform (vmap, grad, jvp, ...) is active, which the fused Function cannot join.

    torch has no public query for this; the functorch interpreter stack is what torch.func itself consults.
    """
    return torch._C._functorch.peek_interpreter_stack() is None


def _affine(bias: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """bias + left @ right for matrices, or for stacks of them (leading member dimension)."""
    return torch.addmm(bias, left, right) if left.dim() == 2 else torch.baddbmm(bias, left, right)


def _affine_(total: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """total += left @ right in place (no copy of ``total`` first, as the out-of-place product makes)."""
    return total.addmm_(left, right) if left.dim() == 2 else total.baddbmm_(left, right)


def _forward(
    recurrent_t: torch.Tensor,
    drive: torch.Tensor,
    initial: torch.Tensor,
    noise: torch.Tensor | None,
    alpha: float,
    activation: str | TabulatedCurve,
    noise_on_drive: bool,
    keep_slopes: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rates (..., batch, time, units) and, if asked, alpha * phi'(c) as (time, ..., batch, units)."""
    activate = _activate(activation)
    *lead, batch, steps, units = drive.shape
    rates = drive.new_empty(drive.shape)
    slopes = drive.new_empty(steps, *lead, batch, units) if keep_slopes else None
    noise_steps = noise.unbind(-3) if noise is not None else (None,) * steps
    rates_t = initial
    for step, (drive_t, out_t, noise_t) in enumerate(zip(drive.unbind(-2), rates.unbind(-2), noise_steps)):
        current = _affine(drive_t, rates_t, recurrent_t)
        if noise_t is not None and noise_on_drive:
            current.add_(noise_t)
        response = activate(current, slopes[step] if slopes is not None else None, alpha)
        torch.lerp(rates_t, response, alpha, out=out_t)
        if noise_t is not None and not noise_on_drive:
            out_t.add_(noise_t)
        rates_t = out_t
    return rates, slopes


class _FusedScan(torch.autograd.Function):
    """The whole time loop as one autograd node; see the module docstring for the formulas."""

    @staticmethod
    def forward(ctx, recurrent_t, drive, initial, noise, alpha, activation, noise_on_drive):
        rates, slopes = _forward(recurrent_t, drive, initial, noise, alpha, activation, noise_on_drive, True)
        ctx.save_for_backward(recurrent_t, initial, rates, slopes)
        ctx.alpha, ctx.noise_on_drive = alpha, noise_on_drive
        ctx.noise_shape = noise.shape if noise is not None else None
        return rates

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rates):
        recurrent_t, initial, rates, slopes = ctx.saved_tensors
        need_w, need_drive, need_initial, need_noise = ctx.needs_input_grad[:4]
        alpha, steps = ctx.alpha, rates.shape[-2]
        weight = recurrent_t.mT  # g_c @ W_rec: back from the current to the presynaptic rates
        grad_drive = torch.empty_like(rates, memory_format=torch.contiguous_format)  # g_c,t for every step
        grad_noise = rates.new_empty(ctx.noise_shape) if need_noise else None
        noise_slots = grad_noise.unbind(-3) if need_noise else None
        incoming, drive_slots = grad_rates.unbind(-2), grad_drive.unbind(-2)
        grad_h = incoming[-1]
        for step in range(steps - 1, -1, -1):
            grad_c = torch.mul(grad_h, slopes[step], out=drive_slots[step])
            if need_noise:
                noise_slots[step].copy_(grad_c if ctx.noise_on_drive else grad_h)
            if step > 0:
                grad_h = _affine_(torch.add(incoming[step - 1], grad_h, alpha=1.0 - alpha), grad_c, weight)
            elif need_initial:
                grad_h = _affine_(grad_h * (1.0 - alpha), grad_c, weight)
        grad_w = _recurrent_gradient(rates, grad_drive, initial) if need_w else None
        return (
            grad_w,
            grad_drive if need_drive else None,
            grad_h if need_initial else None,
            grad_noise,
            None,
            None,
            None,
        )


def _recurrent_gradient(rates: torch.Tensor, grad_current: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """dL/dW_rec^T = sum over trials and steps of h_{t-1}^T g_c,t, as one (batched) matmul over all of them.

    Rows of the flattened (batch * time) tensors pair h at row r - 1 with g_c at row r; the pairs that cross from
    one trial into the next (g_c at t = 0) are zeroed for the product, then h_0^T g_c,0 is added and g_c,0 restored.
    """
    first = grad_current.select(-2, 0)
    saved = first.clone()
    first.zero_()
    flat_rates, flat_grad = rates.flatten(-3, -2), grad_current.flatten(-3, -2)
    grad_w = torch.matmul(flat_rates[..., :-1, :].mT, flat_grad[..., 1:, :])
    grad_w += torch.matmul(initial.mT, saved)
    first.copy_(saved)
    return grad_w


def rate_scan(
    recurrent_t: torch.Tensor,
    drive: torch.Tensor,
    initial: torch.Tensor,
    noise: torch.Tensor | None,
    alpha: float,
    activation: str | TabulatedCurve,
    noise_on_drive: bool,
) -> torch.Tensor:
    """Rates (..., batch, time, units) of the leaky dynamics, differentiable by the fused BPTT backward.

    recurrent_t: W_rec transposed (..., pre, post); drive: W_in u + b (..., batch, time, units); initial: h_0
    (..., batch, units); noise: per-step noise already scaled by sd*sqrt(dt/tau), (..., time, batch, units) or None,
    added to the current (``noise_on_drive``) or to the new state; alpha = dt/tau. Without gradients the same loop
    runs without storing the slopes.
    """
    tensors = (recurrent_t, drive, initial) + ((noise,) if noise is not None else ())
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _FusedScan.apply(recurrent_t, drive, initial, noise, alpha, activation, noise_on_drive)
    return _forward(recurrent_t, drive, initial, noise, alpha, activation, noise_on_drive, False)[0]

"""The fused BPTT scan: values and gradients equal the autograd loop over circuit_step; derivatives pass gradcheck."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close

from recircuit.circuit import ACTIVATIONS, build_circuit, circuit_step
from recircuit.circuit import network as network_module
from recircuit.circuit.scan import fused_scan_available, rate_scan
from recircuit.learning import task_loss

ALPHA = 0.2


def scan_inputs(batch=5, steps=7, units=6, members=(), dtype=torch.float32, seed=0, noise=True):
    """(W_rec^T, drive, h0, noise) with gradients on; currents spread around 0 so every activation bends."""
    g = torch.Generator().manual_seed(seed)
    recurrent_t = torch.randn(*members, units, units, generator=g, dtype=dtype) * (1.5 / units**0.5)
    drive = torch.randn(*members, batch, steps, units, generator=g, dtype=dtype)
    initial = torch.rand(*members, batch, units, generator=g, dtype=dtype)
    step_noise = 0.1 * torch.randn(*members, steps, batch, units, generator=g, dtype=dtype) if noise else None
    tensors = (recurrent_t, drive, initial) + ((step_noise,) if noise else ())
    for t in tensors:
        t.requires_grad_()
    return recurrent_t, drive, initial, step_noise


def autograd_loop(recurrent_t, drive, initial, step_noise, activation, noise_on_drive):
    """The reference: autograd through circuit_step, step by step."""
    rates, history = initial, []
    for t, drive_t in enumerate(drive.unbind(1)):
        noise_t = step_noise[t] if step_noise is not None else None
        rates = circuit_step(rates, drive_t, recurrent_t, ALPHA, ACTIVATIONS[activation], noise_t, noise_on_drive)
        history.append(rates)
    return torch.stack(history, 1)


def gradients(rates, tensors, seed=1):
    """Gradients of a fixed random projection of the rates w.r.t. ``tensors``."""
    weights = torch.randn(rates.shape, generator=torch.Generator().manual_seed(seed), dtype=rates.dtype)
    return torch.autograd.grad((rates * weights).sum(), [t for t in tensors if t is not None])


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("placement", ["state", "drive"])
def test_fused_scan_equals_the_autograd_loop(activation, placement):
    tensors = scan_inputs()
    on_drive = placement == "drive"
    fused = rate_scan(*tensors, ALPHA, activation, on_drive)
    loop = autograd_loop(*tensors, activation, on_drive)
    assert torch.equal(fused, loop)  # the same float32 operations in the same order
    for got, want in zip(gradients(fused, tensors), gradients(loop, tensors)):
        assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("placement", ["state", "drive"])
def test_fused_scan_derivatives_pass_gradcheck(activation, placement):
    tensors = scan_inputs(batch=3, steps=4, units=4, dtype=torch.float64, seed=2)

    def run(recurrent_t, drive, initial, step_noise):
        return rate_scan(recurrent_t, drive, initial, step_noise, ALPHA, activation, placement == "drive")

    assert torch.autograd.gradcheck(run, tensors, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_fused_scan_without_noise_and_without_gradients():
    tensors = scan_inputs(noise=False)
    fused = rate_scan(*tensors, ALPHA, "sigmoid", False)
    assert torch.equal(fused, autograd_loop(*tensors, "sigmoid", False))
    for got, want in zip(gradients(fused, tensors), gradients(autograd_loop(*tensors, "sigmoid", False), tensors)):
        assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(rate_scan(*tensors, ALPHA, "sigmoid", False), fused)


@pytest.mark.parametrize("placement", ["state", "drive"])
def test_member_dimension_equals_each_member_alone(placement):
    stacked = scan_inputs(members=(3,))
    on_drive = placement == "drive"
    together = rate_scan(*stacked, ALPHA, "relu", on_drive)
    grads_together = gradients(together, stacked)
    for k in range(3):
        alone = [t[k].detach().requires_grad_() for t in stacked]
        rates = rate_scan(*alone, ALPHA, "relu", on_drive)
        assert_close(together[k], rates, rtol=1e-6, atol=1e-7)
        weights = torch.randn(together.shape, generator=torch.Generator().manual_seed(1))[k]
        for got, want in zip(grads_together, torch.autograd.grad((rates * weights).sum(), alone)):
            assert_close(got[k], want, rtol=1e-5, atol=1e-6)


def test_second_derivatives_are_refused_not_wrong():
    tensors = scan_inputs()
    (grad_w,) = torch.autograd.grad(rate_scan(*tensors, ALPHA, "tanh", False).sum(), tensors[0], create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad_w.sum(), tensors[0])


def test_torch_func_transforms_use_the_autograd_loop(make_spec):
    """Inside torch.func.grad (the curvature analysis) the fused Function is bypassed; the gradient is the same."""
    model, task = build_circuit(make_spec("path_integration", {"network.noise.recurrent_sd": 0.1}))
    trials = task.sample(4, 6, torch.Generator().manual_seed(0))
    noise = model.draw_noise(4, 6, torch.Generator().manual_seed(1))
    seen = []

    def loss(weight):
        seen.append(fused_scan_available())
        arguments = (trials.inputs, trials.initial_code, noise)
        outputs, _ = torch.func.functional_call(model, {"recurrent_raw": weight}, arguments)
        return task_loss(outputs, trials.targets, "cross_entropy")

    transformed = torch.func.grad(loss)(model.recurrent_raw.detach())
    plain = torch.autograd.grad(loss(model.recurrent_raw), model.recurrent_raw)[0]
    assert seen == [False, True]
    assert_close(transformed, plain, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("overrides", [{}, {"network.dale": False, "network.noise.placement": "drive"},
                                       {"network.initial_state": "zeros", "network.activation": "relu"}])
def test_circuit_gradients_equal_the_autograd_loop(make_spec, monkeypatch, overrides):
    """Every parameter's gradient through EICircuit with the fused scan equals the one through the autograd loop."""
    spec = make_spec("path_integration", {"network.noise.recurrent_sd": 0.1, "network.noise.input_sd": 0.05,
                                          **overrides})
    model, task = build_circuit(spec)
    trials = task.sample(4, 9, torch.Generator().manual_seed(0))
    noise = model.draw_noise(4, 9, torch.Generator().manual_seed(1))

    def grads():
        outputs, rates = model(trials.inputs, trials.initial_code, noise)
        loss = task_loss(outputs, trials.targets, "cross_entropy")
        return rates.detach(), dict(zip(dict(model.named_parameters()), torch.autograd.grad(loss, model.parameters())))

    fused_rates, fused = grads()
    monkeypatch.setattr(network_module, "fused_scan_available", lambda: False)
    loop_rates, loop = grads()
    assert torch.equal(fused_rates, loop_rates)
    for name, value in loop.items():
        assert_close(fused[name], value, rtol=1e-5, atol=1e-7)

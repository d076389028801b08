"""Inhibitory normalization (Eyono et al.): LayerNorm at init, error-normalization backward passes, routing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recircuit.circuit.normalization import InhibitoryNormalization, layer_norm_vjp, normalize_errors


def make_population(kind="divisive", error_mode="none", n_exc=40, n_pre=60, n_inh_pre=10, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # presynaptic columns: 40 E-like (+), 10 I-like (-), the rest inputs and bias (free)
    sign = torch.cat([torch.ones(n_pre - n_inh_pre - 3), -torch.ones(n_inh_pre), torch.zeros(3)])
    magnitude = torch.rand(n_exc, n_pre, generator=g)
    weights = torch.where(sign == 0, torch.randn(n_exc, n_pre, generator=g), magnitude * sign)
    pop = InhibitoryNormalization(n_exc, n_pre, sign, n_interneurons=8, kind=kind, error_mode=error_mode,
                                  homeostatic_weight=0.01, generator=g).to(dtype)
    pop.initialise_from(weights.to(dtype))
    x = torch.rand(16, n_pre, generator=g, dtype=dtype)
    x[:, -1] = 1.0
    return pop, weights.to(dtype), x


def test_divisive_normalization_equals_layer_norm_at_init():
    pop, weights, x = make_population("divisive")
    drive = x @ weights.T
    z, _ = pop(drive, x)
    expected = F.layer_norm(drive, (drive.shape[-1],), eps=1e-5)
    torch.testing.assert_close(z, expected, atol=1e-5, rtol=0)


def test_subtractive_normalization_centres_the_drive_at_init():
    pop, weights, x = make_population("subtractive")
    drive = x @ weights.T
    z, _ = pop(drive, x)
    torch.testing.assert_close(z, drive - drive.mean(-1, keepdim=True), atol=1e-5, rtol=0)


def test_signs_of_inhibitory_weights_follow_dale():
    pop, _, _ = make_population("divisive")
    ix, sign = pop.ix(), pop.presynaptic_sign
    assert (ix[:, sign > 0] >= 0).all() and (ix[:, sign < 0] <= 0).all()
    assert (pop.ei() >= 0).all()


def test_full_backward_matches_torch_layer_norm_gradient_in_float64():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 30, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(8, 30, generator=g, dtype=torch.float64)
    (normalize_errors(z, "full") * upstream).sum().backward()
    ours = z.grad.clone()
    z.grad = None
    (F.layer_norm(z, (30,), eps=1e-5) * upstream).sum().backward()
    torch.testing.assert_close(ours, z.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer_norm_vjp(upstream, z.detach()), z.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["center", "fa_center"])
def test_centred_errors_sum_to_zero_over_excitatory_units(mode):
    g = torch.Generator().manual_seed(2)
    pop, weights, x = make_population("divisive", error_mode=mode, dtype=torch.float64)
    drive = (x @ weights.T).requires_grad_(True)
    z, _ = pop(drive, x)
    upstream = torch.randn(z.shape, generator=g, dtype=torch.float64)
    (z * upstream).sum().backward()
    # the error reaching the drive is the normalized error divided by the (detached) sigma
    sigma = torch.sqrt((x @ pop.bix.T) ** 2 @ pop.bei.T + 1e-5)
    error = drive.grad * sigma
    if mode == "center":
        assert error.sum(-1).abs().max() < 1e-10 * upstream.abs().sum()
    else:
        torch.testing.assert_close(error, upstream - (upstream * pop.fa_weights).sum(-1, keepdim=True))


def test_forward_pass_is_identity_for_every_error_mode():
    z = torch.randn(4, 10, requires_grad=True)
    for mode in ("none", "center", "full", "fa_center"):
        assert torch.equal(normalize_errors(z, mode, torch.full((10,), 0.1)), z)


def test_gradient_routing_task_loss_never_reaches_inhibition_and_local_loss_never_reaches_excitation():
    pop, weights, x = make_population("divisive", error_mode="full")
    w_e = weights.clone().requires_grad_(True)
    z, local = pop(x @ w_e.T, x)
    task = (z**2).sum()
    task_grads = torch.autograd.grad(task, [w_e, pop.ix_raw, pop.ei_raw, pop.bix], allow_unused=True)
    assert task_grads[0] is not None and task_grads[0].abs().sum() > 0
    assert all(g is None for g in task_grads[1:])
    z, local = pop(x @ w_e.T, x)
    # perturb the inhibitory weights so the homeostatic loss is not at its minimum
    with torch.no_grad():
        pop.ix_raw.mul_(1.3)
    z, local = pop(x @ w_e.T, x)
    local_grads = torch.autograd.grad(local, [w_e, pop.ix_raw, pop.ei_raw, pop.bix], allow_unused=True)
    assert local_grads[0] is None
    assert all(g is not None and g.abs().sum() > 0 for g in local_grads[1:])


def test_homeostatic_loss_is_zero_at_init_up_to_eps():
    pop, weights, x = make_population("divisive")
    _, local = pop(x @ weights.T, x)
    assert float(local.detach()) < 1e-6

"""Inhibitory normalization (Eyono et al.): LayerNorm at init, error-normalization backward passes, routing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from scipy import stats

from recircuit.analysis.normalization import FORWARD_ONLY, spearman_with_exact_p, table
from recircuit.circuit.normalization import (
    InhibitoryNormalization,
    layer_norm_vjp,
    normalize_errors,
)


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


@pytest.mark.parametrize("kind,error_mode", [("subtractive", "none"), ("divisive", "full"), ("divisive", "fa_center")])
def test_run_with_normalization_equals_the_step_by_step_reference(kind, error_mode):
    """EICircuit's run (per-run constants, inhibition without a graph, one batched homeostatic loss) gives the
    rates, homeostatic loss and every gradient of a loop calling the one-step `InhibitoryNormalization.forward`."""
    from recircuit.circuit.io import build_circuit
    from recircuit.circuit.network import split_circuit_step
    from recircuit.spec import load_spec

    spec = load_spec("circuits/path_integration.yaml", {
        "network.n_exc": 30, "network.n_inh": 10, "task.place_cells.n_cells": 32, "network.noise.input_sd": 0.05,
        "network.normalization.kind": kind, "network.normalization.errors": error_mode,
    })
    model, task = build_circuit(spec)
    model.double()
    with torch.no_grad():  # move the interneurons off their initial (homeostatic-loss-free) point
        model.normalization.ix_raw.mul_(1.2)
        if kind == "divisive":
            model.normalization.bei.fill_(1.0 / 30)  # B_EI = 1/n_E in float64 (the buffer was made in float32)
    g = torch.Generator().manual_seed(3)
    trials = task.sample(6, 12, g)
    noise = model.draw_noise(6, 12, g)
    noise = type(noise)(noise.recurrent.double(), noise.input.double())
    inputs, code = trials.inputs.double(), trials.initial_code.double()

    def gradients():
        return [p.grad.clone() if p.grad is not None else None for p in model.parameters()]

    outputs, rates = model(inputs, code, noise)
    model.zero_grad()
    ((outputs**2).mean() + model.homeostatic_loss).backward()
    fast = (rates.detach(), model.homeostatic_loss.detach(), gradients())

    model.zero_grad()
    fed = inputs + noise.input
    drive = fed @ model.input_weight().T + model.bias
    recurrent_t = model.recurrent_weight().T
    h, history, local = model.initial_rates(code), [], 0.0
    for t in range(12):
        activity = torch.cat([h, fed[:, t], torch.ones_like(fed[:, t, :1])], dim=1)

        def normalize(current, activity=activity):
            nonlocal local
            z, step_local = model.normalization(current[:, : model.n_exc], activity)
            local = local + step_local
            return torch.cat([z, current[:, model.n_exc :]], dim=1)

        h = split_circuit_step(h, h, drive[:, t], recurrent_t, model.alpha, model.phi, noise.recurrent[t],
                               model.noise_on_drive, normalize)
        history.append(h)
    reference_rates = torch.stack(history, 1)
    homeostatic = local / 12
    ((model.readout(reference_rates) ** 2).mean() + homeostatic).backward()
    torch.testing.assert_close(fast[0], reference_rates.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(fast[1], homeostatic.detach(), rtol=1e-10, atol=1e-14)
    for (name, _), a, b in zip(model.named_parameters(), fast[2], gradients()):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


def test_spearman_p_of_the_gap_against_epsilon_is_exact_for_few_levels():
    levels = np.array([0.0, 0.25, 0.5, 0.75])
    # 4 levels in perfect rank order: 2 of the 24 orderings are as extreme, so p = 1/12 (scipy's t approximation: 0)
    assert spearman_with_exact_p(levels, np.array([1.0, 2.0, 5.0, 9.0])) == pytest.approx((1.0, 1 / 12))
    assert spearman_with_exact_p(levels, np.array([9.0, 5.0, 2.0, 1.0])) == pytest.approx((-1.0, 1 / 12))
    # against every ordering enumerated by hand: with a tie in y, and with ties in x and rho exactly 0
    cases = [
        (np.arange(6.0), np.array([2.0, 1.0, 3.0, 3.0, 6.0, 5.0])),
        (np.array([1.0, 2.0, 2.0, 1.0, 0.0]), np.array([0.87, -0.34, 0.83, -1.06, 0.57])),
    ]
    for x, y in cases:
        observed = stats.spearmanr(x, y).statistic
        every = np.array([stats.spearmanr(x, np.array(order)).statistic for order in itertools.permutations(y)])
        expected = min(1.0, 2 * min(np.mean(every >= observed - 1e-12), np.mean(every <= observed + 1e-12)))
        assert spearman_with_exact_p(x, y) == pytest.approx((observed, expected), abs=1e-12)
    # beyond EXACT_SPEARMAN_MAX_POINTS: scipy's own p-value
    many = np.arange(12.0)
    assert spearman_with_exact_p(many, many**2)[1] == pytest.approx(stats.spearmanr(many, many**2).pvalue)


def test_summary_table_prints_p_values_and_the_gain_trend_against_epsilon():
    conditions, epsilons = ["divisive/full", FORWARD_ONLY], [0.0, 0.5]
    cell = ("circuit", "condition", "epsilon")
    ds = xr.Dataset(
        {
            "final_error": ((*cell, "seed"), np.array([[[[1.0, 3.0]] * 2, [[5.0, 7.0]] * 2]])),
            "diverged": ((*cell, "seed"), np.array([[[[0, 1]] * 2, [[0, 0]] * 2]])),
            "p_vs_forward_only": (cell, np.array([[[2e-5, 0.25], [np.nan, np.nan]]])),
            "gap_vs_epsilon_spearman": (("circuit", "condition"), np.array([[1.0, np.nan]])),
            "gap_vs_epsilon_p": (("circuit", "condition"), np.array([[1 / 12, np.nan]])),
        },
        coords={"circuit": ["pi"], "condition": conditions, "epsilon": epsilons, "seed": [0, 1]},
    )
    ds.final_error.attrs["units"] = "pi: cm"
    lines = table(ds).splitlines()
    assert lines[0] == "pi (final error, pi: cm)" and lines[1].endswith("gain vs eps")
    full, forward = lines[2].split(), lines[3].split()
    expected = ["divisive/full", "2.00", "p<0.001", "div=1", "2.00", "p=0.250", "div=1", "rho", "+1.00", "(p", "0.083)"]
    assert full == expected
    assert forward == [FORWARD_ONLY, "6.00", "--", "div=0", "6.00", "--", "div=0"]

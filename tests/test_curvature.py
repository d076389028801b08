"""Curvature tools (HVP, Lanczos, Hutchinson), generalization shifts, the curvature command and its figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

from recircuit.analysis.curvature import (
    HessianOperator,
    exact_loss_operator,
    extreme_eigenvalue,
    hutchinson_trace,
    power_iteration,
)
from recircuit.analysis.curvature_figures import make_curvature_figures
from recircuit.analysis.generalization import applicable_shifts, generalization, make_shift
from recircuit.circuit.io import build_circuit
from recircuit.circuit.network import circuit_step
from recircuit.cli import main
from recircuit.learning.train import task_loss, train
from recircuit.results import combine, open_dataset, save_dataset
from recircuit.spec import CircuitSpec


def toy_spec(kind: str = "path_integration", **training) -> CircuitSpec:
    task = {"kind": kind, "sequence_steps": 6}
    if kind == "path_integration":
        task["place_cells"] = {"n_cells": 5, "width_m": 0.5}
    else:
        task["hd_cells"] = {"n_cells": 6}
    return CircuitSpec.model_validate(
        {
            "task": task,
            "network": {"n_exc": 6, "n_inh": 2, "activation": "tanh", "tau_ms": 60.0, "spectral_radius": 0.9,
                        "noise": {"recurrent_sd": 0.05}},
            "training": {"device": "cpu", "loss": "mse", **training},
        }
    )


def toy_operator(mode="forward_over_reverse", parameters=("recurrent_raw",), seed=0, loss="cross_entropy"):
    spec = toy_spec()
    model, task = build_circuit(spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.output_raw.mul_(20.0)
        model.bias.copy_(0.3 * torch.randn(model.n_units, generator=g))
    trials = task.sample(4, 6, g)
    noise = model.draw_noise(4, 6, g)
    return exact_loss_operator(model, trials, noise, loss, parameters, mode), model, trials, noise


@pytest.fixture(scope="module")
def dense_case():
    op, model, trials, noise = toy_operator()
    return op, op.dense(), model, trials, noise


def test_free_coordinates_exclude_the_masked_diagonal(dense_case):
    op, dense, *_ = dense_case
    assert op.size == 8 * 8 - 8
    assert dense.shape == (56, 56)
    assert torch.allclose(dense, dense.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["forward_over_reverse", "reverse_over_reverse"])
def test_hvp_is_symmetric_and_matches_the_dense_hessian(dense_case, mode):
    _, dense, model, trials, noise = dense_case
    op = exact_loss_operator(model, trials, noise, "cross_entropy", ("recurrent_raw",), mode)
    g = torch.Generator().manual_seed(3)
    u, v = (torch.randn(op.size, generator=g, dtype=torch.float64) for _ in range(2))
    uhv, vhu = float(u @ op.hvp(v)), float(v @ op.hvp(u))
    assert abs(uhv - vhu) / abs(uhv) < 1e-8
    assert torch.linalg.vector_norm(op.hvp(v) - dense @ v) / torch.linalg.vector_norm(dense @ v) < 1e-10
    assert op.n_hvp == 3


def test_lanczos_extremes_match_the_dense_spectrum(dense_case):
    op, dense, *_ = dense_case
    exact = torch.linalg.eigvalsh(dense)
    top = extreme_eigenvalue(op, "LA", tol=1e-10, ncv=20)
    bottom = extreme_eigenvalue(op, "SA", tol=1e-10, ncv=20)
    assert abs(top.value - exact[-1].item()) / abs(exact[-1].item()) < 1e-8
    assert abs(bottom.value - exact[0].item()) / abs(exact[0].item()) < 1e-8
    assert top.n_hvp > 0 and bottom.n_hvp > 0
    again = extreme_eigenvalue(op, "LA", tol=1e-10, ncv=20)  # frozen noise + fixed batch: deterministic
    assert abs(again.value - top.value) <= 1e-8 * abs(top.value)


def test_bottom_eigenvalue_shifted_by_the_top_is_accurate_to_tol_times_the_spread(dense_case):
    op, dense, *_ = dense_case
    exact = torch.linalg.eigvalsh(dense)
    spread = (exact[-1] - exact[0]).item()
    top = extreme_eigenvalue(op, "LA", tol=1e-10, ncv=20)
    for tol in (1e-6, 1e-10):
        plain = extreme_eigenvalue(op, "SA", tol=tol, ncv=20)
        shifted = extreme_eigenvalue(op, "SA", tol=tol, ncv=20, shift=top.value)
        assert abs(shifted.value - exact[0].item()) <= 10 * tol * spread
        assert shifted.n_hvp <= plain.n_hvp


def test_raw_hessian_has_the_spectrum_of_the_effective_weight_hessian(dense_case):
    """Under Dale's law W = |raw| * mask * sign: the raw Hessian is D H_W D with D = +-1 on the free entries."""
    op, dense, model, trials, noise = dense_case
    m = model.double()
    inputs, code, targets = (t.double() for t in (trials.inputs, trials.initial_code, trials.targets))
    rec_noise = noise.recurrent.double()
    free = m.recurrent_mask.bool()

    def loss_of_weights(w: torch.Tensor) -> torch.Tensor:
        drive = inputs @ m.input_weight().T + m.bias
        rates, history = m.initial_rates(code), []
        for t in range(inputs.shape[1]):
            rates = circuit_step(rates, drive[:, t], w.T, m.alpha, m.phi, rec_noise[t], False)
            history.append(rates)
        return task_loss(m.readout(torch.stack(history, 1)), targets, "cross_entropy")

    weights = m.recurrent_weight().detach()
    h_w = torch.func.hessian(loss_of_weights)(weights).reshape(64, 64)
    h_w = h_w[free.flatten()][:, free.flatten()]  # the effective nonzero (off-diagonal) weights
    sign = (torch.sign(m.recurrent_raw) * m.column_sign).detach()[free]
    assert torch.allclose(dense, sign[:, None] * h_w * sign[None, :], rtol=1e-9, atol=1e-12)
    assert torch.allclose(torch.linalg.eigvalsh(dense), torch.linalg.eigvalsh(h_w), rtol=1e-9, atol=1e-12)


def test_signed_eigenvalues_of_an_indefinite_quadratic():
    """|lambda_min| > lambda_max: Lanczos returns the signed extremes; power iteration returns lambda_min instead."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    eig = torch.tensor([-3.5, -1.0, -0.2, 0.1, 0.3, 0.5, 0.7, 1.0, 1.2, 1.5, 1.9, 2.4], dtype=torch.float64)
    a = q @ torch.diag(eig) @ q.T
    a = (a + a.T) / 2
    op = HessianOperator(lambda w: 0.5 * w @ a @ w, (torch.zeros(12, dtype=torch.float64),), (torch.ones(12),))
    top = extreme_eigenvalue(op, "LA", tol=1e-13, ncv=11)
    bottom = extreme_eigenvalue(op, "SA", tol=1e-13, ncv=11)
    assert abs(top.value - 2.4) / 2.4 < 1e-12
    assert abs(bottom.value + 3.5) / 3.5 < 1e-12
    dominant, _, _ = power_iteration(op, tol=1e-12, max_iter=2000)
    assert abs(dominant + 3.5) < 1e-6  # the pitfall the signed Lanczos extremes avoid


def test_hutchinson_trace_within_four_standard_errors(dense_case):
    _, dense, model, trials, noise = dense_case
    op = exact_loss_operator(model, trials, noise, "cross_entropy", ("recurrent_raw",), "reverse_over_reverse")
    probes = 400
    mean, se, samples = hutchinson_trace(op, probes, seed=1)
    exact = float(torch.trace(dense))
    off_diagonal = dense - torch.diag(torch.diag(dense))
    sd_pred = math.sqrt(2 * float((off_diagonal**2).sum()))  # Rademacher: var(v.Hv) = 2 sum_{i!=j} H_ij^2
    assert abs(mean - exact) < 4 * sd_pred / math.sqrt(probes)
    assert abs(se * math.sqrt(probes) / sd_pred - 1) < 0.15
    assert samples.shape == (probes,)
    with pytest.raises(ValueError):
        hutchinson_trace(op, 1)


def test_mse_loss_hvp_reverse_mode_and_clear_error_in_forward_mode():
    op, *_ = toy_operator("reverse_over_reverse", loss="mse")
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(op.hvp(v), op.dense() @ v, rtol=1e-10, atol=1e-14)
    forward, *_ = toy_operator("forward_over_reverse", loss="mse")
    try:
        forward_hv = forward.hvp(v)
    except RuntimeError as exc:  # torch's F.mse_loss double backward lacks forward mode (torch 2.13)
        assert "reverse_over_reverse" in str(exc)
    else:  # a torch that supports it must agree
        assert torch.allclose(forward_hv, op.hvp(v), rtol=1e-10, atol=1e-14)


def test_operator_rejects_unknown_parameters_and_modes(dense_case):
    _, _, model, trials, noise = dense_case
    with pytest.raises(ValueError, match="unknown Hessian parameter"):
        exact_loss_operator(model, trials, noise, "mse", ("nope",))
    with pytest.raises(ValueError, match="HVP mode"):
        exact_loss_operator(model, trials, noise, "mse", ("bias",), "sideways")


def test_multi_parameter_operator_matches_dense():
    op, *_ = toy_operator(parameters=("recurrent_raw", "bias"))
    dense = op.dense()
    assert op.size == 56 + 8
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(op.hvp(v), dense @ v, rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------------------------------------- generalization
def test_shifts_keep_the_trained_code():
    spec = toy_spec(n_train_trajectories=8)
    model, task = build_circuit(spec)
    assert applicable_shifts(spec) == ["none", "longer", "faster", "larger_arena", "noisier"]
    arena = make_shift(spec, "larger_arena", task)
    assert arena.task.spec.arena_m == pytest.approx(2.2 * 1.5)
    assert torch.equal(arena.task.centres, task.centres)
    positions = arena.task.sample(200, 6, torch.Generator().manual_seed(0)).states
    assert positions.abs().max() > 1.1  # trajectories leave the trained arena
    assert make_shift(spec, "longer", task).steps == 12
    assert make_shift(spec, "faster", task).task.spec.speed_scale_m_per_s == pytest.approx(0.26 * math.pi * 1.5)
    assert make_shift(spec, "noisier", task).noise_scale == 2.0
    hd = toy_spec("head_direction")
    assert "larger_arena" not in applicable_shifts(hd)
    hd_task = build_circuit(hd)[1]
    assert make_shift(hd, "faster", hd_task).task.spec.turn_sd_rad_per_s == pytest.approx(11.52 * 1.5)


def test_generalization_gap_is_test_minus_train_loss():
    spec = toy_spec(n_train_trajectories=8)
    spec = spec.model_copy(update={"curvature": spec.curvature.model_copy(update={"n_test_trials": 8})})
    model, _ = build_circuit(spec)
    out = generalization(model, spec)
    assert out["shifts"] == list(spec.curvature.shifts)
    np.testing.assert_allclose(np.array(out["gap"]), np.array(out["test_loss"]) - out["train_loss"])
    assert all(math.isfinite(v) for v in out["test_loss"] + out["test_error"])
    assert out["test_loss"][1] != out["test_loss"][0]  # longer sequences change the loss


# ------------------------------------------------------------------------------------------- command + figures
@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for rule, seed in (("bptt", 0), ("bptt", 1), ("eprop", 0)):  # eprop seed 1 missing: an outer join
        spec = toy_spec(rule=rule, seed=seed, steps=2, batch_size=4, n_train_trajectories=6, log_every_steps=2)
        out = root / rule / f"seed{seed}"
        train(spec, out, circuit="toy", variant=rule, log=lambda _: None)
        runs.append(out)
    return runs


SMALL = ["--set", "curvature.n_test_trials=8", "curvature.n_eval_trials=4", "curvature.hutchinson_probes=3"]


def test_curvature_command_writes_a_combinable_dataset(trained_runs, tmp_path, capsys):
    files = []
    for run in trained_runs:
        assert main(["curvature", str(run), *SMALL]) == 0
        files.append(run / "curvature.nc")
    ds = open_dataset(files[0])
    progress = capsys.readouterr().out
    for line_start in ("curvature of", "Hessian of the exact loss", "  top eigenvalue", "  bottom eigenvalue",
                       "  trace", "generalization (", "wrote"):
        assert progress.count(line_start) == len(trained_runs), line_start
    top = f"{ds['top_eigenvalue'].item(): .6e}"
    assert f"top eigenvalue    {top}  ({int(ds['n_hvp_top'].item())} HVPs" in progress
    assert ds["top_eigenvalue"].dims == ("circuit", "variant", "seed")
    assert ds["generalization_gap"].dims == ("circuit", "variant", "seed", "shift")
    assert list(ds["shift"].values) == ["none", "longer", "faster", "larger_arena", "noisier"]
    assert ds["top_eigenvalue"].item() >= ds["bottom_eigenvalue"].item()
    assert ds.attrs["hessian_parameters"] == "recurrent_raw" and ds.attrs["hessian_data"] == "training_set"
    np.testing.assert_allclose(
        ds["generalization_gap"].values, ds["test_loss"].values - ds["train_loss"].values[..., None]
    )
    combined = combine([open_dataset(f) for f in files])
    assert dict(combined.sizes) == {"circuit": 1, "variant": 2, "seed": 2, "shift": 5}
    assert combined["rule"].sel(circuit="toy", variant="eprop", seed=0).item() == "eprop"
    assert combined["rule"].sel(circuit="toy", variant="bptt", seed=1).item() == "bptt"
    assert np.isnan(combined["top_eigenvalue"].sel(circuit="toy", variant="eprop", seed=1).item())
    summary = tmp_path / "summary"
    save_dataset(combined, summary / "curvature.nc")
    paths = make_curvature_figures(summary, tmp_path / "figures")
    assert sorted(p.name for p in paths) == sorted(
        f"{n}.{e}" for n in ("curvature_vs_gap", "curvature_by_rule") for e in ("png", "pdf")
    )
    assert all(p.stat().st_size > 0 for p in paths)


def test_curvature_of_both_tasks_combines_and_the_comparison_command_prints_its_table(trained_runs, tmp_path, capsys):
    hd_spec = toy_spec("head_direction", rule="bptt", seed=0, steps=2, batch_size=4, n_train_trajectories=6,
                       log_every_steps=2, loss="cross_entropy")
    hd_run = tmp_path / "hd"
    train(hd_spec, hd_run, circuit="toy_hd", variant="bptt", log=lambda _: None)
    runs = [*trained_runs, hd_run]
    for run in runs:
        assert main(["curvature", str(run), *SMALL]) == 0
    summary = tmp_path / "summary" / "curvature.nc"
    assert main(["collect", *[str(r / "curvature.nc") for r in runs], "--out", str(summary)]) == 0
    combined = open_dataset(summary)
    assert {"train_position_error", "train_heading_error", "heading_error_gap"} <= set(combined.data_vars)
    assert set(combined["circuit"].values) == {"toy", "toy_hd"}
    capsys.readouterr()
    assert main(["curvature-comparison", str(summary), "--out", str(tmp_path / "comparison.nc")]) == 0
    printed = capsys.readouterr().out
    assert "toy_hd" in printed and "eprop" in printed
    comparison = open_dataset(tmp_path / "comparison.nc")
    assert float(comparison["n_runs"].sel(circuit="toy", rule="bptt")) == 2


def test_curvature_command_bad_input_exits_2(tmp_path, trained_runs, capsys):
    assert main(["curvature", str(tmp_path / "missing")]) == 2
    assert main(["curvature", str(trained_runs[0]), "--set", "training.steps=3"]) == 2
    assert main(["curvature", str(trained_runs[0]), "--set", "curvature.hvp_mode=sideways"]) == 2
    assert "curvature" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        make_curvature_figures(tmp_path, tmp_path / "figures")


def test_figures_report_spearman_over_rules_and_seeds(tmp_path):
    rng = np.random.default_rng(0)
    top = rng.uniform(1, 2, (1, 2, 3))
    gap = np.stack([top * 0.1, top * 0.2], -1) + rng.normal(0, 1e-3, (1, 2, 3, 2))
    ds = xr.Dataset(
        {"top_eigenvalue": (("circuit", "variant", "seed"), top), "train_loss": (("circuit", "variant", "seed"), top),
         "generalization_gap": (("circuit", "variant", "seed", "shift"), gap)},
        coords={"circuit": ["c"], "variant": ["bptt", "eprop"], "seed": [0, 1, 2], "shift": ["none", "longer"],
                "rule": (("circuit", "variant", "seed"), np.array([[["bptt"] * 3, ["eprop"] * 3]], dtype=object))},
    )
    (tmp_path / "s").mkdir()
    ds.to_netcdf(tmp_path / "s" / "curvature.nc", engine="h5netcdf")
    from recircuit.analysis.curvature_figures import points, spearman_title

    x, y, rules = points(open_dataset(tmp_path / "s" / "curvature.nc"), "c", "generalization_gap", "none")
    assert len(x) == 6 and set(rules) == {"bptt", "eprop"}
    assert spearman_title(x, y).startswith("Spearman rho = +1.00")
    assert len(make_curvature_figures(tmp_path / "s", tmp_path / "f")) == 4


def synthetic_summary(rule_factor: dict[str, float], seeds: int = 5) -> xr.Dataset:
    """A collected-summary-shaped dataset: top eigenvalue = rule factor x train_loss^0.5 exactly; gap = top."""
    rules = list(rule_factor)
    rng = np.random.default_rng(0)
    loss = rng.uniform(0.5, 2.0, size=(1, len(rules), seeds)) * np.array([1, 2, 3, 4][: len(rules)])[None, :, None]
    top = np.array([rule_factor[r] for r in rules])[None, :, None] * np.sqrt(loss)
    gap = np.stack([top, 2 * top], axis=-1)
    dims = ("circuit", "variant", "seed")
    return xr.Dataset(
        {"top_eigenvalue": (dims, top), "train_loss": (dims, loss),
         "generalization_gap": (dims + ("shift",), gap)},
        coords={"circuit": ["pi"], "variant": [f"rule_{r}" for r in rules], "seed": np.arange(seeds),
                "shift": ["longer", "faster"],
                "rule": (dims, np.broadcast_to(np.array(rules, dtype=object)[None, :, None], top.shape))},
    )


def test_curvature_comparison_recovers_the_matched_loss_rule_effect_and_rank_correlation():
    from recircuit.analysis.curvature_comparison import comparison_table, compare_rules

    factors = {"bptt": 1.0, "tbptt": 1.5, "eprop": 3.0, "rflo": 0.5}
    comparison = compare_rules(synthetic_summary(factors))
    pi = comparison.sel(circuit="pi")
    for rule, factor in factors.items():
        assert float(pi["n_runs"].sel(rule=rule)) == 5
        if rule != "bptt":  # the losses differ by rule, so the raw ratio is confounded; the matched one is not
            assert float(pi["matched_loss_ratio_to_bptt"].sel(rule=rule)) == pytest.approx(factor, rel=1e-9)
            assert float(pi["matched_loss_p"].sel(rule=rule)) < 1e-6
    assert float(pi["top_eigenvalue_ratio_to_bptt"].sel(rule="eprop")) > 3.0  # eprop's losses are 3x larger
    # eprop's eigenvalues are all above BPTT's: the exact two-sided Mann-Whitney p for 5 vs 5 separated samples
    assert float(pi["mannwhitney_p"].sel(rule="eprop")) == pytest.approx(2 / math.comb(10, 5))
    assert np.isnan(float(pi["mannwhitney_p"].sel(rule="bptt")))
    assert float(pi["spearman_rho"].sel(shift="longer")) == pytest.approx(1.0)
    assert "eprop" in comparison_table(comparison)

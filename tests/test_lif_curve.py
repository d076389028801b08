"""The ``lif`` activation (`recircuit.circuit.lif_curve`): its constants are the LIF neuron's fit to the sigmoid, the
torch interpolant is the exact Siegert curve with exact first and second derivatives, and a circuit trained with it
converts to a twin whose neuron is its own activation (no fit), refusing a twin with another neuron."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit
from test_spiking import normalized_circuit, rate_equivalent_run

from recircuit.circuit import ACTIVATIONS, build_circuit
from recircuit.circuit.lif_curve import (
    LIF_CURVE,
    LIF_CURVE_10MV_200HZ,
    X_HIGH,
    X_LOW,
    lif_activation,
    lif_curve,
    siegert_rate_hz,
    tabulated_lif,
)
from recircuit.spec import with_section_overrides
from recircuit.spec_sections.spiking import SpikingSpec
from recircuit.spiking.convert import (
    ConversionRefused,
    calibrate_lif,
    lif_curve_calibration,
    rate_circuit_from_model,
)
from recircuit.spiking.simulate import simulate_rate_circuit


@pytest.mark.parametrize("pinned", [LIF_CURVE, LIF_CURVE_10MV_200HZ], ids=["default", "until_2026_12_06"])
def test_constants_are_the_lif_neurons_fit_to_the_sigmoid(pinned):
    """A pinned curve's gain, offset and refractory period are calibrate_lif's fit of sigmoid(x) on [-6, 6] for its
    neuron, and the default spec's neuron is LIF_CURVE's."""
    fit = calibrate_lif(1 / pinned.max_rate_hz, (-6.0, 6.0), pinned.noise_mV, pinned.threshold_gap_mV,
                        pinned.tau_m_ms, 1.0)  # fmt: skip
    assert fit.gain_mV == pytest.approx(pinned.gain_mV, rel=1e-3)
    assert fit.offset_mV == pytest.approx(pinned.offset_mV, rel=1e-3)
    assert fit.refractory_ms == pytest.approx(pinned.refractory_ms, rel=1e-3)
    default = SpikingSpec()
    neuron = (default.membrane_noise_mV, default.tau_m_ms, default.threshold_gap_mV, default.lif_max_rate_hz)
    assert lif_curve(*neuron) is LIF_CURVE
    assert fit.relative_rms_error < 0.05  # sigmoid-like to 4 % of the maximum rate
    # phi = lambda f: zero far below, 1/2-ish at 0, saturating at lambda / t_ref
    assert LIF_CURVE(np.array([-10.0]))[0] < 1e-6 and 0.4 < LIF_CURVE(np.array([0.0]))[0] < 0.7
    ceiling = LIF_CURVE.lambda_s / (LIF_CURVE.refractory_ms / 1e3)
    assert LIF_CURVE(np.array([1e4]))[0] == pytest.approx(ceiling, rel=1e-3)


def test_interpolant_is_the_siegert_curve_with_its_derivatives():
    x = torch.linspace(X_LOW - 5, X_HIGH + 5, 20_001, dtype=torch.float64, requires_grad=True)
    phi = lif_activation(x)
    inside = (x.detach() >= X_LOW) & (x.detach() <= X_HIGH)
    exact = LIF_CURVE(x.detach().clamp(X_LOW, X_HIGH).numpy())
    # 3e-8 at most (at the steep onset of the default neuron's curve): below float32's resolution near phi = 1
    np.testing.assert_allclose(phi.detach().numpy(), exact, atol=5e-8)
    assert np.abs(phi.detach().numpy() - exact).mean() < 1e-9
    drive = LIF_CURVE.gain_mV * 1.5 + LIF_CURVE.offset_mV
    direct = LIF_CURVE.lambda_s * siegert_rate_hz(np.array([drive]), LIF_CURVE.noise_mV, LIF_CURVE.threshold_gap_mV,
                                                  LIF_CURVE.tau_m_ms / 1e3, LIF_CURVE.refractory_ms / 1e3)  # fmt: skip
    assert lif_activation(torch.tensor([1.5], dtype=torch.float64))[0].item() == pytest.approx(direct[0], abs=1e-9)
    (slope,) = torch.autograd.grad(phi.sum(), x, create_graph=True)
    value, analytic = lif_activation.value_and_slope(x.detach())
    assert torch.equal(value, phi.detach())  # the fused scan's forward is the autograd forward
    np.testing.assert_allclose(analytic.numpy(), slope.detach().numpy(), atol=1e-12)
    step, points = 1e-6, x.detach().numpy()
    numeric = (LIF_CURVE(points + step) - LIF_CURVE(points - step)) / (2 * step)
    # the interpolant's slope is the curve's to 1e-5 (its steepest 0.3): training differentiates the interpolant
    # exactly (above), and the twin needs only the values
    np.testing.assert_allclose(slope.detach().numpy()[inside], numeric[inside], atol=2e-5)
    assert (slope.detach()[~inside] == 0).all()  # held beyond the table
    (curvature,) = torch.autograd.grad(slope.sum(), x)  # second derivative (the curvature analysis's HVPs)
    probe = (x.detach() > -3) & (x.detach() < 3)
    numeric2 = np.gradient(slope.detach().numpy(), x.detach().numpy())
    np.testing.assert_allclose(curvature.numpy()[probe.numpy()], numeric2[probe.numpy()], rtol=0.02, atol=2e-3)
    # float32 keeps the curve to float32 rounding
    x32 = torch.linspace(-8, 12, 1001)
    np.testing.assert_allclose(lif_activation(x32).numpy(), LIF_CURVE(x32.double().numpy()), atol=2e-6)
    assert ACTIVATIONS["lif"] is lif_activation


def test_non_finite_currents_give_nan_or_the_curves_ends():
    """phi(NaN) is NaN (so training's divergence check sees it; it once indexed the table at -2^63), and +-inf sit at
    the table's ends, in the autograd and the fused-scan forms alike."""
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), X_HIGH], dtype=torch.float64)
    for values in (lif_activation(x), lif_activation.value_and_slope(x)[0]):
        assert values[0].isnan()
        assert values[1].item() == pytest.approx(LIF_CURVE(np.array([X_HIGH]))[0], abs=1e-9)
        assert values[2].item() == 0.0


def test_a_lif_circuit_converts_without_a_fit(make_spec):
    """The rate equivalent of a lif circuit reproduces the torch model; its twin's neuron is the curve's own (exact
    calibration); another neuron in the spiking section is refused by name."""
    model, task = build_circuit(make_spec("head_direction", {"network.activation": "lif"}))
    with torch.no_grad():
        model.bias.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    circuit = rate_circuit_from_model(model)
    assert circuit.source_activation == "lif"
    s, rates, outputs = rate_equivalent_run(model, task, circuit)
    np.testing.assert_allclose(s, rates, atol=2e-5)
    np.testing.assert_allclose(s @ circuit.output.T + circuit.output_bias, outputs, atol=2e-4)
    cal = lif_curve_calibration((-3.0, 4.0), circuit.lif_curve)
    assert cal.target == "lif" and cal.relative_rms_error < 1e-8
    x = np.linspace(-3.0, 4.0, 50)
    np.testing.assert_allclose(
        cal.siegert_rate_hz(x, LIF_CURVE.threshold_gap_mV, LIF_CURVE.tau_m_ms), cal.target_rate_hz(x), rtol=1e-12
    )
    model.spec = with_section_overrides(model.spec, ["spiking.membrane_noise_mV=5"], ["spiking"])
    with pytest.raises(ConversionRefused, match=r"spiking.membrane_noise_mV = 5.0 \(the activation's is 3.0\)"):
        rate_circuit_from_model(model)
    model.spec = with_section_overrides(model.spec, ["spiking.membrane_noise_mV=3", "spiking.lif_max_rate_hz=200"],
                                        ["spiking"])  # fmt: skip
    with pytest.raises(ConversionRefused, match=r"spiking.lif_max_rate_hz = 200.0 \(the activation's is 400.0\)"):
        rate_circuit_from_model(model)


def test_a_quieter_neurons_curve_is_fitted_to_the_sigmoid_and_cached():
    """lif_curve of a pinned neuron is its pinned curve; another neuron's (less membrane noise, a higher 1/lambda) is
    fitted to the sigmoid on [-6, 6] (as well as the pinned ones, to 5 % of the maximum rate), once per neuron; the
    spec refuses a 1/lambda that leaves no room for the refractory period."""
    assert lif_curve(3.0, 10.0, 15.0, 400.0) is LIF_CURVE and tabulated_lif(3.0, 10.0, 15.0, 400.0) is lif_activation
    assert lif_curve(10.0, 10.0, 15.0, 200.0) is LIF_CURVE_10MV_200HZ
    x = np.linspace(-6.0, 6.0, 161)
    for noise_mV, max_rate_hz in ((3.0, 200.0), (10.0, 400.0), (2.0, 600.0)):
        other = lif_curve(noise_mV, 10.0, 15.0, max_rate_hz)
        assert (other.noise_mV, other.tau_m_ms, other.threshold_gap_mV) == (noise_mV, 10.0, 15.0)
        assert other.lambda_s == 1.0 / max_rate_hz
        assert np.sqrt(np.mean((other(x) - expit(x)) ** 2)) < 0.05
        assert other.refractory_ms < 0.97e3 / max_rate_hz
    quiet = lif_curve(3.0, 10.0, 15.0, 200.0)
    assert quiet.gain_mV != pytest.approx(LIF_CURVE.gain_mV, rel=0.05)  # a different neuron, a different fit
    with pytest.raises(ValueError, match="lif_max_rate_hz"):
        SpikingSpec(lif_max_rate_hz=1000.0)
    assert lif_curve(3.0, 10.0, 15.0, 200.0) is quiet
    assert tabulated_lif(3.0, 10.0, 15.0, 200.0) is tabulated_lif(3.0, 10.0, 15.0, 200.0)
    assert tabulated_lif(3.0, 10.0, 15.0, 200.0).curve is quiet


def test_a_circuit_trained_with_another_neuron_keeps_its_curve_into_the_twin(make_spec):
    """spiking.membrane_noise_mV and lif_max_rate_hz set a lif circuit's activation: a circuit trained with the
    default until 2026-12-06 (10 mV, 200 Hz) computes with that neuron's curve, its rate equivalent reproduces it, and
    the twin's calibration is that curve."""
    earlier = {"network.activation": "lif", "spiking.membrane_noise_mV": 10.0, "spiking.lif_max_rate_hz": 200.0}
    model, task = build_circuit(make_spec("head_direction", earlier))
    assert model.phi is tabulated_lif(10.0, 10.0, 15.0, 200.0) and model.phi.curve is LIF_CURVE_10MV_200HZ
    with torch.no_grad():
        model.bias.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    circuit = rate_circuit_from_model(model)
    assert circuit.lif_curve is model.phi
    s, rates, _ = rate_equivalent_run(model, task, circuit)
    np.testing.assert_allclose(s, rates, atol=2e-5)
    default = build_circuit(make_spec("head_direction", {"network.activation": "lif"}))[0]
    assert default.phi is lif_activation
    default.load_state_dict(model.state_dict())
    _, default_rates, _ = rate_equivalent_run(default, task, rate_circuit_from_model(default))
    assert np.abs(default_rates - rates).max() > 1e-3  # the neuron changes what the circuit computes
    cal = lif_curve_calibration((-3.0, 4.0), circuit.lif_curve)
    assert (cal.noise_mV, cal.gain_mV, cal.lambda_s) == (10.0, LIF_CURVE_10MV_200HZ.gain_mV, 1 / 200.0)
    x = np.linspace(-3, 4, 9)
    np.testing.assert_allclose(cal.siegert_rate_hz(x, 15.0, 10.0), cal.target_rate_hz(x), rtol=1e-12)


def test_lif_interneurons_linearise_around_the_curves_midpoint(make_spec):
    """Subtractive normalization on a lif circuit: the interneurons use phi(0) + phi'(0) y; the rate equivalent
    approaches the model as the current range Y shrinks (the curve is not odd about 0, so the error is ~Y^2 in
    absolute terms, ~Y relative)."""
    model, trajectories, _ = normalized_circuit(make_spec, overrides={"network.activation": "lif"})
    errors = {}
    for y_range in (1.0, 0.25, 0.05):
        circuit = rate_circuit_from_model(model, trajectories=trajectories, normalization_current=y_range)
        s = simulate_rate_circuit(circuit, trajectories.inputs, trajectories.initial_rates)
        errors[y_range] = np.abs(s[..., : circuit.n_model] - trajectories.rates).max()
    assert errors[0.25] < errors[1.0] / 3, errors
    assert errors[0.05] < errors[0.25] / 3, errors
    assert errors[1.0] > 1e-4, errors


def test_spike_command_on_a_lif_circuit_uses_its_curve(tmp_path, tiny_set_args):
    """A tiny trained lif circuit: the twin's lambda is the curve's (one search point). Without the time-step
    correction the neuron is the curve's own (no fit); with it (the default) drive and refractory period are refitted
    so that the neuron integrated at dt_ms follows the curve. Either way the f-I curve alone reproduces the rate
    circuit (fi_only_error_ratio 1), and the twin runs (numpy target)."""
    import xarray as xr
    from conftest import CIRCUITS_DIR

    from recircuit.cli import main

    run = tmp_path / "run"
    spec_file = str(CIRCUITS_DIR / "head_direction.yaml")
    train = tiny_set_args("head_direction", {"network.activation": "lif", "training.steps": 10})
    assert main(["train", spec_file, "--out", str(run), "--set", *train]) == 0
    settings = [
        "spiking.target=numpy",
        "spiking.copies=2",
        "spiking.dt_ms=0.5",
        "spiking.n_trials=2",
        "spiking.n_search_trials=1",
        "spiking.n_quiescent_trials=1",
        "spiking.quiescent_steps=20",
        "spiking.fi_check_s=0.2",
        "reactivation.burn_in_steps=5",
        "reactivation.kl_samples=100",
    ]
    continuous = run / "spiking_continuous.nc"
    assert main(["spike", str(run), "--out", str(continuous), "--set", *settings,
                 "spiking.time_step_correction=false"]) == 0  # fmt: skip
    assert main(["spike", str(run), "--set", *settings]) == 0
    for path in (continuous, run / "spiking.nc"):
        one = xr.open_dataset(path, engine="h5netcdf").load().isel(circuit=0, variant=0, seed=0)
        assert one["search_max_rate"].values.tolist() == [LIF_CURVE.max_rate_hz]
        assert float(one["fi_only_error_ratio"]) == pytest.approx(1.0, abs=0.02)
        assert np.isfinite(one["error_ratio"].values).all() and np.isfinite(float(one["kl_offline"]))
        if path == continuous:
            assert float(one["input_gain"]) == LIF_CURVE.gain_mV
            assert float(one["refractory_period"]) == LIF_CURVE.refractory_ms
            assert float(one["calibration_rms"]) < 1e-8
            np.testing.assert_allclose(one["fi_rate_predicted"].values, one["fi_rate_target"].values, rtol=1e-9)
        else:
            assert float(one["input_gain"]) != LIF_CURVE.gain_mV
            assert float(one["refractory_period"]) / 0.5 == pytest.approx(round(float(one["refractory_period"]) / 0.5))
            assert float(one["calibration_rms"]) < 0.015
            np.testing.assert_allclose(
                one["fi_rate_predicted"].values, one["fi_rate_target"].values, atol=0.03 * LIF_CURVE.max_rate_hz
            )


def test_curvature_of_a_lif_circuit_forward_and_reverse_agree():
    """The curvature analysis's Hessian-vector products run through the interpolant under torch.func in both modes
    and agree (the interpolant has a second derivative); the Hessian is symmetric."""
    from recircuit.analysis.curvature import exact_loss_operator
    from recircuit.spec import CircuitSpec

    spec = CircuitSpec.model_validate(
        {
            "task": {"kind": "path_integration", "sequence_steps": 6, "place_cells": {"n_cells": 5, "width_m": 0.5}},
            "network": {"n_exc": 6, "n_inh": 2, "activation": "lif", "tau_ms": 60.0, "noise": {"recurrent_sd": 0.05}},
            "training": {"device": "cpu"},
        }
    )
    model, task = build_circuit(spec)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.output_raw.mul_(20.0)
        model.bias.copy_(torch.randn(model.n_units, generator=g) - 0.5)
    trials, noise = task.sample(4, 6, g), model.draw_noise(4, 6, g)
    operators = {
        mode: exact_loss_operator(model, trials, noise, "cross_entropy", ("recurrent_raw",), mode)
        for mode in ("forward_over_reverse", "reverse_over_reverse")
    }
    u, v = (torch.randn(operators["forward_over_reverse"].size, generator=g, dtype=torch.float64) for _ in range(2))
    forward, reverse = (op.hvp(v) for op in operators.values())
    assert torch.linalg.vector_norm(forward - reverse) / torch.linalg.vector_norm(reverse) < 1e-8
    op = operators["reverse_over_reverse"]
    assert abs(float(u @ op.hvp(v)) - float(v @ op.hvp(u))) < 1e-8 * abs(float(u @ op.hvp(v)))

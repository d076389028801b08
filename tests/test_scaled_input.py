"""The scaled-input test: the true path of a slower agent, the signed error, the chunked run, the datasets, the
figure and the spec's checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recircuit.analysis.quiescence import quiesce
from recircuit.analysis.reactivation import compute_reactivation
from recircuit.analysis.reactivation_figures import scaled_input_figures
from recircuit.analysis.scaled_input import (
    error_bias,
    scaled_input_run,
    scaled_true_states,
    tail_mean,
)
from recircuit.circuit.io import build_circuit, save_model
from recircuit.circuit.network import Noise
from recircuit.learning.evaluate import evaluate
from recircuit.results import open_dataset
from recircuit.spec import SpecError
from recircuit.tasks import make_task
from recircuit.tasks.head_direction import wrap_angle

# the conftest's tiny circuits, quiesced briefly, with a short scaled-input test
SHORT = {
    "reactivation.duration_steps": 60,
    "reactivation.burn_in_steps": 10,
    "reactivation.n_trials": 16,
    "reactivation.kl_samples": 300,
    "reactivation.input_scale_steps": 45,
    "reactivation.input_scale_trials": 12,
}


def _movement(spec, batch: int = 6, steps: int = 40):
    task_model = make_task(spec.task)
    return task_model.move(task_model.draw(batch, steps, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize(
    "task_settings",
    [
        {"task.input_gain.epsilon": 0.4, "task.input_gain.segments": 3},
        {"task.drift_to_center": 0.05, "task.pause_fraction": 0.3, "task.pause_steps": 4},
    ],
)
def test_the_slower_agents_path_is_the_start_plus_a_fraction_of_the_integrated_self_motion(make_spec, task_settings):
    movement = _movement(make_spec("path_integration", task_settings))
    varied_gains = not torch.allclose(movement.gains, torch.ones_like(movement.gains))
    assert varied_gains == ("task.input_gain.epsilon" in task_settings)  # the gains are divided out, not ignored
    start = movement.initial_state[:, None]
    torch.testing.assert_close(scaled_true_states("path_integration", movement, 1.0), movement.states, atol=1e-5, rtol=0)
    torch.testing.assert_close(scaled_true_states("path_integration", movement, 0.0), start.expand_as(movement.states))
    torch.testing.assert_close(
        scaled_true_states("path_integration", movement, 0.25), start + 0.25 * (movement.states - start),
        atol=1e-5, rtol=0,
    )


def test_the_slower_agents_heading_is_wrapped(make_spec):
    movement = _movement(make_spec("head_direction", {"task.input_gain.epsilon": 0.4}))
    start = movement.initial_state[:, None]
    at_one = scaled_true_states("head_direction", movement, 1.0)
    assert wrap_angle(at_one - movement.states).abs().max() < 1e-4
    assert at_one.min() >= -math.pi and at_one.max() < math.pi
    torch.testing.assert_close(scaled_true_states("head_direction", movement, 0.0), start.expand_as(movement.states))
    half = scaled_true_states("head_direction", movement, 0.5)
    unwrapped = (movement.inputs / movement.gains[..., None]).cumsum(1)
    assert wrap_angle(half - start - 0.5 * unwrapped).abs().max() < 1e-4


def test_the_signed_error_is_outward_for_positions_and_counter_clockwise_for_headings():
    true = torch.tensor([[[0.3, 0.4], [-0.6, 0.0]]])  # radii 0.5 and 0.6 m
    outward = true / torch.linalg.vector_norm(true, dim=-1, keepdim=True)
    tangential = torch.stack([-outward[..., 1], outward[..., 0]], -1)
    torch.testing.assert_close(error_bias("path_integration", true + 0.02 * outward, true), torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(error_bias("path_integration", true - 0.05 * outward + 0.3 * tangential, true),
                               torch.tensor([[-5.0, -5.0]]))
    heading = torch.tensor([[[math.pi - 0.05], [0.2]]])
    decoded = wrap_angle(heading + torch.tensor([[[0.1], [-0.3]]]))  # the first crosses the wrap at pi
    torch.testing.assert_close(error_bias("head_direction", decoded, heading),
                               torch.tensor([[math.degrees(0.1), math.degrees(-0.3)]]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("task", ["path_integration", "head_direction"])
def test_the_chunked_run_equals_one_run_of_the_scaled_inputs(make_spec, task):
    """Without noise the test is deterministic: chunks of 7 steps give one uninterrupted run's errors, at every
    factor, against the slower agent's path."""
    spec = make_spec(task, {"network.noise.recurrent_sd": 0.0, "network.noise.input_sd": 0.0})
    model, _ = build_circuit(spec)
    model.eval()
    movement = _movement(spec, batch=5, steps=30)
    scales = [1.0, 0.3, 0.0]
    chunked = scaled_input_run(model, movement, scales, noise_seed=0, chunk_steps=7)
    whole = scaled_input_run(model, movement, scales, noise_seed=0, chunk_steps=1000)
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        for i, scale in enumerate(scales):
            outputs, _ = model(movement.inputs * scale, model.task.encode(movement.initial_state), Noise(None, None))
            decoded = model.task.decode(outputs)
            true = scaled_true_states(task, movement, scale)
            np.testing.assert_allclose(whole[0][i], model.task.error(decoded, true).mean(0).numpy(), rtol=1e-5,
                                       atol=1e-4)
    # with noise, one seed gives one set of draws for every factor: the same factor twice gives the same numbers
    noisy, _ = build_circuit(make_spec(task, {"network.noise.recurrent_sd": 0.2}))
    twice = scaled_input_run(noisy, movement, [0.5, 0.2, 0.5], noise_seed=4)
    np.testing.assert_array_equal(twice[0][0], twice[0][2])
    assert not np.array_equal(twice[0][0], twice[0][1])


def _run(spec, tmp: Path, name: str) -> Path:
    model, _ = build_circuit(spec)
    run = tmp / name / "seed0"
    save_model(run / "model.pt", model, circuit="path_integration", variant=name, seed=0)
    evaluate(run, device="cpu")
    return run


def test_quiescence_and_reactivation_files_carry_the_test_and_the_figure_draws_it(make_spec, tmp_path):
    noisy = _run(make_spec("path_integration", {**SHORT, "network.noise.recurrent_sd": 0.05}), tmp_path, "noisy")
    noise_free = _run(make_spec("path_integration", {**SHORT, "network.noise.recurrent_sd": 0.0}), tmp_path, "noise_free")
    quiesce(noisy, device="cpu", log=lambda _: None)
    quiesce(noise_free, device="cpu", overrides=["reactivation.input_scales=[]"], log=lambda _: None)
    q = open_dataset(noisy / "quiescence.nc")
    error = q["scaled_input_position_error"].squeeze(drop=True)
    assert error.dims == ("input_scale", "scaled_input_time") and error.attrs["units"] == "cm"
    assert q["input_scale"].values.tolist() == [1.0, 0.3, 0.1, 0.03, 0.0]
    assert q["scaled_input_time"].values[[0, -1]] == pytest.approx([0.02, 45 * 0.02])
    assert np.isfinite(error.values).all() and (error.values >= 0).all()
    assert q["scaled_input_position_bias"].attrs["units"] == "cm" and "scaled_input_heading_error" not in q
    assert "scaled_input_position_error" not in open_dataset(noise_free / "quiescence.nc")

    out = tmp_path / "reactivation.nc"
    compute_reactivation({"noisy": noisy, "noise_free": noise_free}, out)
    ds = open_dataset(out)
    stacked = ds["scaled_input_position_error"].squeeze(["circuit", "variant", "seed"], drop=True)
    assert stacked.dims == ("waking", "input_scale", "scaled_input_time")
    np.testing.assert_array_equal(stacked.sel(waking="noisy").values, error.values)
    assert np.isnan(stacked.sel(waking="noise_free").values).all()  # its file has no test
    assert np.isfinite(tail_mean(ds["scaled_input_position_bias"]).sel(waking="noisy").values).all()
    paths = scaled_input_figures(ds, tmp_path / "figures")
    assert [p.name for p in paths] == ["reactivation_path_integration_scaled_input.png",
                                       "reactivation_path_integration_scaled_input.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_tail_mean_reads_the_last_tenth():
    import xarray as xr

    values = xr.DataArray(np.arange(20.0), dims="scaled_input_time")
    assert float(tail_mean(values)) == pytest.approx(18.5)  # steps 18 and 19
    assert float(tail_mean(values[:3])) == pytest.approx(2.0)  # at least one step


@pytest.mark.parametrize(
    ("value", "message"),
    [([1.0, 0.5, 1.0], "reactivation.input_scales: .*repeats a factor"),
     ([1.0, -0.5], r"reactivation.input_scales.1: Input should be greater than or equal to 0"),
     ("fast", "reactivation.input_scales: Input should be a valid list")],
)
def test_bad_factors_are_refused_naming_the_field(make_spec, value, message):
    with pytest.raises(SpecError, match=message):
        make_spec("path_integration", {"reactivation.input_scales": value})


def test_a_summary_of_both_tasks_keeps_each_tasks_factors_units_and_trial_length(make_spec, tmp_path):
    """Path integration (cm, 45 steps, five factors) and head direction (deg, 30 steps, two factors) in one
    combined summary: the report and the figures read each circuit's own factors and last steps."""
    from recircuit.analysis.reactivation_report import report, scaled_input_rows
    from recircuit.results import combine

    summaries = []
    for task, extra in (("path_integration", {}),
                        ("head_direction", {"reactivation.input_scale_steps": 30, "reactivation.input_scales": [1, 0]})):
        run = tmp_path / task / "noisy" / "seed0"
        model, _ = build_circuit(make_spec(task, {**SHORT, "network.noise.recurrent_sd": 0.05, **extra}))
        save_model(run / "model.pt", model, circuit=task, variant="noisy", seed=0)
        evaluate(run, device="cpu")
        quiesce(run, device="cpu", log=lambda _: None)
        out = tmp_path / f"{task}.nc"
        compute_reactivation({"noisy": run}, out)
        summaries.append(open_dataset(out))
    both = combine(summaries)
    rows = {circuit: (units, values) for circuit, _, units, values in scaled_input_rows(both)}
    assert rows["path_integration"][0] == "cm" and rows["head_direction"][0] == "deg"
    assert [f for f, _, _ in rows["path_integration"][1]] == [1.0, 0.3, 0.1, 0.03, 0.0]
    assert [f for f, _, _ in rows["head_direction"][1]] == [1.0, 0.0]
    assert all(math.isfinite(e) and e >= 0 and math.isfinite(b) for _, (_, v) in rows.items() for _, e, b in v)
    # the head-direction tail is its own last 3 steps, not the NaN steps 31-45 that the other circuit adds
    own = tail_mean(summaries[1]["scaled_input_heading_error"]).sel(waking="noisy", input_scale=0.0)
    assert rows["head_direction"][1][1][1] == pytest.approx(float(own.squeeze()))
    text = report(both)
    assert "awake with the self-motion input scaled" in text and "head_direction noisy: x1 " in text
    names = sorted(p.name for p in scaled_input_figures(both, tmp_path / "figures") if p.suffix == ".png")
    assert names == ["reactivation_head_direction_scaled_input.png",
                     "reactivation_path_integration_scaled_input.png"]

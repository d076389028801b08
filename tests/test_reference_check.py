"""docs/checks/reference_model.py, the independent re-implementation of the reference's model behind a check in
docs/results.md: its generator integrates, its place code decodes, and it trains and analyses end to end."""

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest
import torch

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "checks" / "reference_model.py"


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("reference_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_trajectories_integrate_their_displacements_and_stay_near_the_arena(reference):
    displacement, start, position = reference.trajectories(np.random.default_rng(0), 64, 200)
    np.testing.assert_allclose(start[:, None] + np.cumsum(displacement, axis=1), position, atol=1e-12)
    assert np.abs(position).max() < reference.ARENA_M / 2 + 0.15
    biased = reference.trajectories(np.random.default_rng(0), 64, 200, drift_to_centre=0.05)[2]
    assert np.linalg.norm(biased[:, -50:], axis=-1).mean() < 0.8 * np.linalg.norm(position[:, -50:], axis=-1).mean()


def test_the_place_code_is_a_distribution_that_decodes_to_its_position(reference):
    rng = np.random.default_rng(1)
    centres = torch.tensor(rng.uniform(-1.1, 1.1, (512, 2)), dtype=torch.float32)
    positions = torch.tensor(rng.uniform(-0.9, 0.9, (100, 2)), dtype=torch.float32)
    code = reference.place_code(positions, centres)
    torch.testing.assert_close(code.sum(-1), torch.ones(100))
    assert (reference.decode(code, centres) - positions).norm(dim=-1).max() < 0.1


@pytest.mark.parametrize("noise, mean", [("uniform", 0.5), ("gaussian", 0.0)])
def test_the_noise_law_sets_the_mean_a_silent_network_accumulates(reference, noise, mean):
    network = reference.ReferenceRNN(n_units=64, n_cells=16, noise_sd=0.01, noise=noise)
    with torch.no_grad():
        for layer in (network.encoder, network.input, network.recurrent):
            layer.weight.zero_()  # nothing but the leak and the noise: h_t -> (0.01 mean / 0.2) with no input
        network.readout.weight.copy_(torch.eye(16, 64))
        outputs = network(torch.zeros(50, 200, 2), torch.zeros(50, 16), torch.Generator().manual_seed(0))
    # the stationary mean of h = 0.8 h + noise is 5 x the noise's mean: 0.025 for U[0,1), 0 for N(0, 1)
    assert outputs[:, 100:].mean().item() == pytest.approx(5 * 0.01 * mean, abs=2e-3)


@pytest.mark.slow
def test_it_trains_and_analyses_a_noisy_and_a_noise_free_network(reference, tmp_path, monkeypatch):
    tiny = ["--units", "128", "--steps", "2", "--batch", "4", "--sequence-steps", "5"]
    for name, sd in (("noisy", "0.01"), ("noise_free", "0")):
        train = ["x", "train", "--out", str(tmp_path / name), "--sd", sd, "--noise", "gaussian", *tiny]
        monkeypatch.setattr(sys, "argv", train)
        reference.main()
        assert (tmp_path / name / "model.pt").exists() and not (tmp_path / name / "model.pt.tmp").exists()
    out = tmp_path / "kl.json"
    models = [str(tmp_path / name / "model.pt") for name in ("noisy", "noise_free")]
    analyse = ["x", "analyse", *models, "--out", str(out), "--offline-steps", "120", "--trials", "40"]
    monkeypatch.setattr(sys, "argv", analyse)
    reference.main()
    result = json.loads(out.read_text())
    conditions = ["noisy", "noisy_same", "noisy_noise_off", "noise_free", "noise_free+offline_noise", "untrained"]
    for burn_in in (0, 100):
        for name in conditions:
            mean, sd = result[f"KL_burn{burn_in}[{name}||noisy]"]
            assert np.isfinite(mean) and 0 <= sd < 1
            assert 0 <= result[f"coverage_burn{burn_in}_{name}"] <= 1
    assert result["KL_uniform||noisy"] > 0
    assert result["noise"] == "gaussian"
    monkeypatch.setattr(sys, "argv", ["x", "analyse", str(tmp_path / "absent.pt"), models[1], "--out", str(out)])
    with pytest.raises(SystemExit, match="absent.pt not found"):
        reference.main()
    torch.save({"weights": 1}, tmp_path / "other.pt")
    monkeypatch.setattr(sys, "argv", ["x", "analyse", str(tmp_path / "other.pt"), models[1], "--out", str(out)])
    with pytest.raises(SystemExit, match="other.pt is not a model written by this script's train"):
        reference.main()

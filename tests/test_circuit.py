"""The E/I rate circuit: Dale's signs, balanced initialisation, the step formula, noise, gradients, save/load."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import assert_close

from recircuit.circuit import ACTIVATIONS, EICircuit, Noise, build_circuit, circuit_step, load_model, save_model
from recircuit.learning import task_loss


def tiny_circuit(make_spec, kind="path_integration", **overrides) -> tuple[EICircuit, object]:
    return build_circuit(make_spec(kind, overrides))


def trial_batch(task, batch=4, steps=6, seed=0):
    return task.sample(batch, steps, torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------- Dale's law
@pytest.mark.parametrize("kind", ["path_integration", "head_direction"])
def test_effective_weights_obey_dale_at_init(make_spec, kind):
    model, _ = tiny_circuit(make_spec, kind)
    n_exc = model.n_exc
    w = model.effective_weights()
    assert (w["recurrent"][:, :n_exc] >= 0).all()
    assert (w["recurrent"][:, n_exc:] <= 0).all()
    assert (w["recurrent"][:, :n_exc] > 0).any() and (w["recurrent"][:, n_exc:] < 0).any()
    assert (w["output"] >= 0).all()
    assert (w["output"][:, n_exc:] == 0).all()
    assert (w["output"][:, :n_exc] > 0).any()
    assert w["output"].shape == (model.output_raw.shape[0], model.n_units)


def test_dale_signs_survive_arbitrary_raw_parameters(make_spec):
    model, _ = tiny_circuit(make_spec)
    with torch.no_grad():
        for p in (model.recurrent_raw, model.output_raw):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    w = model.effective_weights()
    assert (w["recurrent"][:, : model.n_exc] >= 0).all() and (w["recurrent"][:, model.n_exc :] <= 0).all()
    assert (w["output"] >= 0).all()


def test_no_self_connections(make_spec):
    model, _ = tiny_circuit(make_spec)
    with torch.no_grad():
        model.recurrent_raw.fill_(1.0)
    assert (model.effective_weights()["recurrent"].diagonal() == 0).all()


def test_excitatory_input_weights_are_non_negative(make_spec):
    model, _ = tiny_circuit(make_spec, **{"network.input_weights": "excitatory"})
    with torch.no_grad():
        model.input_raw.copy_(-model.input_raw.abs())
    assert (model.effective_weights()["input"] >= 0).all()


@pytest.mark.parametrize("kind", ["path_integration", "head_direction"])
def test_balanced_init_has_zero_row_sums_and_the_spec_radius(make_spec, kind):
    model, _ = tiny_circuit(make_spec, kind, **{"network.spectral_radius": 1.3})
    recurrent = model.effective_weights()["recurrent"].double()
    row_scale = recurrent.abs().sum(1)
    assert (recurrent.sum(1).abs() <= 1e-5 * row_scale).all()
    radius = torch.linalg.eigvals(recurrent).abs().max().item()
    assert radius == pytest.approx(1.3, abs=1e-4)


def test_unconstrained_control_has_free_signs_and_reads_all_units(make_spec):
    model, _ = tiny_circuit(make_spec, **{"network.dale": False, "network.spectral_radius": 0.9})
    w = model.effective_weights()
    n_exc = model.n_exc
    assert model.n_readout == model.n_units
    assert (w["recurrent"][:, :n_exc] < 0).any() and (w["recurrent"][:, n_exc:] > 0).any()
    assert (w["output"] < 0).any() and (w["output"] > 0).any()
    assert (w["output"][:, n_exc:] != 0).all()
    assert torch.equal(w["recurrent"], model.recurrent_raw.detach() * model.recurrent_mask)
    radius = torch.linalg.eigvals(w["recurrent"].double()).abs().max().item()
    assert radius == pytest.approx(0.9, abs=1e-4)


def test_fan_in_input_init_is_pytorchs_default_and_starts_a_much_weaker_drive(make_spec):
    fan_in, task = tiny_circuit(make_spec, **{"network.input_init": "fan_in"})
    unit_drive, _ = tiny_circuit(make_spec)
    weights = fan_in.effective_weights()["input"]
    bound = 1 / math.sqrt(weights.shape[1])
    assert weights.abs().max() <= bound and weights.abs().max() > 0.8 * bound
    assert (weights < 0).any() and (weights > 0).any()
    inputs = trial_batch(task, batch=64, steps=20).inputs  # displacements, metres per step
    drive_sd = {name: (inputs @ model.effective_weights()["input"].T).std().item()
                for name, model in (("unit_drive", unit_drive), ("fan_in", fan_in))}
    assert 0.7 < drive_sd["unit_drive"] < 1.4
    assert 0.004 < drive_sd["fan_in"] < 0.02  # U(+-1/sqrt 2) weights on ~0.015 m steps: about 0.008


def test_without_learned_bias_the_bias_is_zero_and_not_a_parameter(make_spec):
    model, _ = tiny_circuit(make_spec, **{"network.learned_bias": False})
    assert "bias" not in dict(model.named_parameters())
    assert torch.equal(model.effective_weights()["bias"], torch.zeros(model.n_units))
    assert "bias" in dict(tiny_circuit(make_spec)[0].named_parameters())


# -------------------------------------------------------------------------------------------------- dynamics
@pytest.mark.parametrize("placement", ["state", "drive"])
def test_circuit_step_matches_the_written_formula(placement):
    g = torch.Generator().manual_seed(0)
    batch, units, alpha = 3, 5, 0.2
    rates = torch.rand(batch, units, generator=g, dtype=torch.float64)
    drive = torch.randn(batch, units, generator=g, dtype=torch.float64)
    weight = torch.randn(units, units, generator=g, dtype=torch.float64)  # post x pre
    noise = 0.1 * torch.randn(batch, units, generator=g, dtype=torch.float64)
    got = circuit_step(rates, drive, weight.T, alpha, torch.sigmoid, noise, noise_on_drive=placement == "drive")
    expected = torch.empty(batch, units, dtype=torch.float64)
    for b in range(batch):
        for i in range(units):
            current = sum(weight[i, j] * rates[b, j] for j in range(units)) + drive[b, i]
            if placement == "drive":
                current = current + noise[b, i]
            value = (1 - alpha) * rates[b, i] + alpha / (1 + math.exp(-current))
            expected[b, i] = value + (noise[b, i] if placement == "state" else 0.0)
    assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_circuit_step_without_noise_is_the_same_for_both_placements():
    g = torch.Generator().manual_seed(1)
    rates, drive = torch.rand(2, 4, generator=g), torch.randn(2, 4, generator=g)
    weight_t = torch.randn(4, 4, generator=g)
    state = circuit_step(rates, drive, weight_t, 0.5, torch.relu, None, noise_on_drive=False)
    on_drive = circuit_step(rates, drive, weight_t, 0.5, torch.relu, None, noise_on_drive=True)
    assert torch.equal(state, on_drive)


@pytest.mark.parametrize("placement", ["state", "drive"])
def test_forward_matches_a_hand_written_loop_over_effective_weights(make_spec, placement):
    model, task = tiny_circuit(make_spec, **{"network.noise.placement": placement, "network.noise.input_sd": 0.05})
    model = model.double()
    trials = trial_batch(task)
    inputs, code = trials.inputs.double(), trials.initial_code.double()
    noise = model.draw_noise(4, 6, torch.Generator().manual_seed(3))
    noise = Noise(noise.recurrent.double(), noise.input.double())
    with torch.no_grad():
        outputs, rates = model(inputs, code, noise)
    w = model.effective_weights()
    phi = ACTIVATIONS[model.spec.network.activation]
    alpha = model.spec.alpha
    h = phi(code / code.norm(dim=-1, keepdim=True) @ model.encoder.detach().T + model.encoder_bias.detach())
    for t in range(6):
        u = inputs[:, t] + noise.input[:, t]
        current = h @ w["recurrent"].T + u @ w["input"].T + w["bias"]
        if placement == "drive":
            h = (1 - alpha) * h + alpha * phi(current + noise.recurrent[t])
        else:
            h = (1 - alpha) * h + alpha * phi(current) + noise.recurrent[t]
        assert_close(rates[:, t], h, rtol=1e-10, atol=1e-12)
        assert_close(outputs[:, t], h @ w["output"].T + w["output_bias"], rtol=1e-10, atol=1e-12)


def test_zero_initial_state_option(make_spec):
    model, task = tiny_circuit(make_spec, **{"network.initial_state": "zeros"})
    assert not hasattr(model, "encoder")
    assert torch.equal(model.initial_rates(trial_batch(task).initial_code), torch.zeros(4, model.n_units))


# ------------------------------------------------------------------------------------------------------ noise
def test_noise_draws_are_zero_mean_with_sd_scaled_by_sqrt_dt_over_tau(make_spec):
    model, _ = tiny_circuit(make_spec, **{"network.noise.recurrent_sd": 0.1, "network.noise.input_sd": 0.02})
    noise = model.draw_noise(64, 50, torch.Generator().manual_seed(0))
    root = math.sqrt(model.spec.alpha)
    assert noise.recurrent.shape == (50, 64, model.n_units)
    assert noise.input.shape == (64, 50, 2)
    for draws, sd in ((noise.recurrent, 0.1 * root), (noise.input, 0.02 * root)):
        n = draws.numel()
        assert abs(draws.mean().item()) < 4 * sd / math.sqrt(n)
        assert draws.std().item() == pytest.approx(sd, rel=0.03)


def test_noise_scale_multiplies_the_recurrent_sd(make_spec):
    model, _ = tiny_circuit(make_spec, **{"network.noise.recurrent_sd": 0.1})
    base = model.draw_noise(32, 50, torch.Generator().manual_seed(0)).recurrent
    scaled = model.draw_noise(32, 50, torch.Generator().manual_seed(0), scale=math.sqrt(2)).recurrent
    assert_close(scaled, base * math.sqrt(2))


def test_zero_noise_draws_nothing_and_the_forward_pass_is_deterministic(make_spec):
    model, task = tiny_circuit(make_spec, **{"network.noise.recurrent_sd": 0.0, "network.noise.input_sd": 0.0})
    trials = trial_batch(task)
    first = model.draw_noise(4, 6, torch.Generator().manual_seed(1))
    second = model.draw_noise(4, 6, torch.Generator().manual_seed(2))
    assert first.recurrent is None and first.input is None
    with torch.no_grad():
        out_first, _ = model(trials.inputs, trials.initial_code, first)
        out_second, _ = model(trials.inputs, trials.initial_code, second)
    assert torch.equal(out_first, out_second)


def test_noisy_forward_differs_between_noise_seeds(make_spec):
    model, task = tiny_circuit(make_spec, **{"network.noise.recurrent_sd": 0.1})
    trials = trial_batch(task)
    with torch.no_grad():
        a, _ = model(trials.inputs, trials.initial_code, model.draw_noise(4, 6, torch.Generator().manual_seed(1)))
        b, _ = model(trials.inputs, trials.initial_code, model.draw_noise(4, 6, torch.Generator().manual_seed(2)))
    assert not torch.allclose(a, b)


# --------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("placement", ["state", "drive"])
def test_bptt_gradient_matches_finite_differences(make_spec, placement):
    model, task = tiny_circuit(make_spec, **{"network.noise.placement": placement, "network.noise.recurrent_sd": 0.1})
    model = model.double()
    trials = trial_batch(task, batch=3, steps=8)
    inputs, code, targets = trials.inputs.double(), trials.initial_code.double(), trials.targets.double()
    drawn = model.draw_noise(3, 8, torch.Generator().manual_seed(4))
    noise = Noise(drawn.recurrent.double(), None)

    def loss() -> torch.Tensor:
        return task_loss(model(inputs, code, noise)[0], targets, "cross_entropy")

    model.zero_grad()
    loss().backward()
    n_exc = model.n_exc
    entries = [(0, 1), (5, 2), (3, n_exc + 1), (n_exc + 2, 0), (n_exc + 1, n_exc + 3)]  # E and I columns, off-diagonal
    eps = 1e-6
    for i, j in entries:
        analytic = model.recurrent_raw.grad[i, j].item()
        with torch.no_grad():
            original = model.recurrent_raw[i, j].item()
            model.recurrent_raw[i, j] = original + eps
            plus = loss().item()
            model.recurrent_raw[i, j] = original - eps
            minus = loss().item()
            model.recurrent_raw[i, j] = original
        numeric = (plus - minus) / (2 * eps)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9), (i, j)
    assert any(abs(model.recurrent_raw.grad[i, j].item()) > 1e-6 for i, j in entries)


# ---------------------------------------------------------------------------------------------- save and load
def test_save_and_load_round_trip_gives_identical_outputs(make_spec, tmp_path):
    model, task = tiny_circuit(make_spec, "head_direction")
    with torch.no_grad():  # move away from the initialisation, so a loader that ignores the weights would fail
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    save_model(tmp_path / "run" / "model.pt", model, circuit="hd", variant="noisy", seed=0)
    loaded = load_model(tmp_path / "run")
    assert not loaded.training
    assert loaded.meta["circuit"] == "hd" and loaded.meta["variant"] == "noisy"
    assert loaded.spec == model.spec
    assert loaded.task.kind == "head_direction"
    trials = trial_batch(task)
    noise = model.draw_noise(4, 6, torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected, _ = model(trials.inputs, trials.initial_code, noise)
        got, _ = loaded(trials.inputs, trials.initial_code, noise)
    assert torch.equal(got, expected)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["model.pt"]


def test_load_model_on_a_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "never_trained"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_model(missing)


def test_load_model_rejects_another_schema_version(make_spec, tmp_path):
    model, _ = tiny_circuit(make_spec)
    save_model(tmp_path / "model.pt", model, circuit="x", variant="v", seed=0)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["schema_version"] = 99
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="schema_version 99"):
        load_model(tmp_path)

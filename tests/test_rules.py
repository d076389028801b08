"""Credit-assignment rules: exact identities on float64 toy circuits (research/curvature_rules.md section 5)."""

from __future__ import annotations

import pytest
import torch

from recircuit.circuit.io import build_circuit
from recircuit.circuit.network import Noise
from recircuit.learning.rules import RULES, Rule, eprop_reference_gradients, make_rule, rflo_feedback
from recircuit.learning.train import select_trials, task_loss, train, training_set
from recircuit.spec import CircuitSpec

PARAMS = ("recurrent_raw", "input_raw", "bias", "output_raw", "output_bias", "encoder", "encoder_bias")


def toy_spec(
    tau_ms: float = 80.0,
    dale: bool = True,
    placement: str = "state",
    activation: str = "tanh",
    initial_state: str = "learned_encoder",
    loss: str = "mse",
    **training,
) -> CircuitSpec:
    """8 units (6 E + 2 I), 5 place cells, dt 20 ms: alpha = 20 / tau_ms."""
    return CircuitSpec.model_validate(
        {
            "task": {"kind": "path_integration", "sequence_steps": 7, "place_cells": {"n_cells": 5, "width_m": 0.5}},
            "network": {
                "n_exc": 6,
                "n_inh": 2,
                "dale": dale,
                "activation": activation,
                "tau_ms": tau_ms,
                "spectral_radius": 0.9,
                "initial_state": initial_state,
                "noise": {"recurrent_sd": 0.05, "placement": placement},
            },
            "training": {"loss": loss, "device": "cpu", **training},
        }
    )


def toy(spec: CircuitSpec, batch: int = 3, seed: int = 0, dtype=torch.float64):
    """(model, trials, noise) in ``dtype`` with random (nonzero) biases so every path is exercised."""
    model, task = build_circuit(spec)
    model = model.to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.bias.copy_(0.3 * torch.randn(model.n_units, generator=g, dtype=dtype))
        model.output_raw.mul_(20.0)
    trials = task.sample(batch, spec.task.sequence_steps, g)
    trials = select_trials(trials, torch.arange(batch))
    trials = type(trials)(**{k: getattr(trials, k).to(dtype) for k in trials.__dataclass_fields__})
    noise = Noise(torch.randn(spec.task.sequence_steps, batch, model.n_units, generator=g, dtype=dtype) * 0.05, None)
    return model, trials, noise


def rule_grads(model, trials, noise, rule, loss_kind="mse"):
    model.zero_grad(set_to_none=True)
    outputs, _ = model(trials.inputs, trials.initial_code, noise, rule=rule)
    task_loss(outputs, trials.targets, loss_kind).backward()
    return {
        n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in model.named_parameters()
    }


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / max(b.norm(), 1e-300))


@pytest.mark.parametrize("dale", [True, False])
def test_bptt_gradient_matches_central_finite_differences(dale):
    spec = toy_spec(dale=dale)
    model, trials, noise = toy(spec)
    grads = rule_grads(model, trials, noise, None)
    g = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())
    direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}

    def loss_at(eps: float) -> float:
        with torch.no_grad():
            for n, p in params.items():
                p.add_(eps * direction[n])
            out, _ = model(trials.inputs, trials.initial_code, noise)
            value = task_loss(out, trials.targets, "mse").item()
            for n, p in params.items():
                p.sub_(eps * direction[n])
        return value

    h = 1e-6
    numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
    analytic = sum(float((grads[n] * direction[n]).sum()) for n in params)
    assert abs(numeric - analytic) / abs(analytic) < 1e-6
    # and per parameter tensor (a wrong gradient in one tensor cannot hide behind the others)
    for name in PARAMS:
        only = {n: (direction[n] if n == name else torch.zeros_like(direction[n])) for n in params}
        saved, direction = direction, only
        numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
        direction = saved
        analytic = float((grads[name] * only[name]).sum())
        assert abs(numeric - analytic) <= 1e-6 * abs(analytic) + 1e-10, name


@pytest.mark.parametrize(("dale", "placement", "activation"), [(True, "state", "tanh"), (False, "drive", "sigmoid")])
def test_eprop_by_detach_equals_explicit_eligibility_traces(dale, placement, activation):
    spec = toy_spec(dale=dale, placement=placement, activation=activation)
    model, trials, noise = toy(spec)
    grads = rule_grads(model, trials, noise, Rule("eprop"))
    outputs, _ = model(trials.inputs, trials.initial_code, noise)
    outputs = outputs.detach().requires_grad_(True)
    output_grad = torch.autograd.grad(task_loss(outputs, trials.targets, "mse"), outputs)[0]
    reference = eprop_reference_gradients(
        model, trials.inputs, model.initial_rates(trials.initial_code).detach(), noise, output_grad
    )
    for name, value in reference.items():
        assert rel(grads[name], value) < 1e-10, name
    exact = rule_grads(model, trials, noise, None)
    assert rel(grads["output_raw"], exact["output_raw"]) < 1e-12  # the readout learns by its exact delta rule
    assert rel(grads["recurrent_raw"], exact["recurrent_raw"]) > 1e-3  # and e-prop is not BPTT


def test_eprop_gives_no_learning_signal_to_inhibitory_units_but_rflo_does():
    spec = toy_spec()
    model, trials, noise = toy(spec)
    n_exc = model.n_exc
    eprop = rule_grads(model, trials, noise, Rule("eprop"))
    for name in ("recurrent_raw", "input_raw", "bias"):
        assert torch.all(eprop[name][n_exc:] == 0), name
        assert eprop[name][:n_exc].abs().sum() > 0, name
    assert eprop["recurrent_raw"][:n_exc, n_exc:].abs().sum() > 0  # I -> E weights learn through E traces
    rflo = rule_grads(model, trials, noise, Rule("rflo", feedback=rflo_feedback(model.n_units, 5, 0, torch.float64)))
    assert rflo["recurrent_raw"][n_exc:].abs().sum() > 0


def test_rflo_equals_eprop_with_feedback_b_and_symmetric_eprop_when_b_is_readout_transpose():
    spec = toy_spec(activation="sigmoid")
    model, trials, noise = toy(spec)
    feedback = rflo_feedback(model.n_units, 5, seed=3, dtype=torch.float64)
    grads = rule_grads(model, trials, noise, Rule("rflo", feedback=feedback))
    outputs, _ = model(trials.inputs, trials.initial_code, noise)
    outputs = outputs.detach().requires_grad_(True)
    output_grad = torch.autograd.grad(task_loss(outputs, trials.targets, "mse"), outputs)[0]
    reference = eprop_reference_gradients(
        model, trials.inputs, model.initial_rates(trials.initial_code).detach(), noise, output_grad, feedback
    )
    for name, value in reference.items():
        assert rel(grads[name], value) < 1e-10, name
    readout_t = model.effective_weights()["output"].T.to(torch.float64)  # (units, outputs), zero rows for I
    with_readout = rule_grads(model, trials, noise, Rule("rflo", feedback=readout_t))
    eprop = rule_grads(model, trials, noise, Rule("eprop"))
    for name in PARAMS:
        assert rel(with_readout[name], eprop[name]) < 1e-12, name
    assert rel(grads["recurrent_raw"], eprop["recurrent_raw"]) > 1e-2  # a random B is a different rule


def test_eprop_equals_tbptt_window_1_without_leak_and_differs_with_leak():
    model, trials, noise = toy(toy_spec(tau_ms=20.0))  # alpha = 1: no leak path
    assert model.alpha == 1.0
    eprop = rule_grads(model, trials, noise, Rule("eprop"))
    tbptt = rule_grads(model, trials, noise, Rule("tbptt", window_steps=1))
    # encoder excepted: tbptt never cuts before step 0, so h0's parameters get the W h0 credit that e-prop drops
    for name in ("recurrent_raw", "input_raw", "bias", "output_raw", "output_bias"):
        assert rel(eprop[name], tbptt[name]) < 1e-12, name
    model, trials, noise = toy(toy_spec(tau_ms=80.0))  # alpha = 0.25
    eprop = rule_grads(model, trials, noise, Rule("eprop"))
    tbptt = rule_grads(model, trials, noise, Rule("tbptt", window_steps=1))
    assert rel(eprop["recurrent_raw"], tbptt["recurrent_raw"]) > 0.05


def test_tbptt_with_window_at_least_the_sequence_is_bptt():
    model, trials, noise = toy(toy_spec())
    exact = rule_grads(model, trials, noise, None)
    long_window = rule_grads(model, trials, noise, Rule("tbptt", window_steps=7))
    short_window = rule_grads(model, trials, noise, Rule("tbptt", window_steps=3))
    for name in PARAMS:
        assert torch.equal(long_window[name], exact[name]), name
    assert rel(short_window["recurrent_raw"], exact["recurrent_raw"]) > 1e-4


@pytest.mark.parametrize("placement", ["state", "drive"])
def test_forward_pass_is_bit_identical_across_rules(placement):
    spec = toy_spec(placement=placement, activation="sigmoid", rule="rflo")
    model, trials, noise = toy(spec, dtype=torch.float32)
    reference_out, reference_rates = model(trials.inputs, trials.initial_code, noise)
    rules = [Rule("bptt"), Rule("tbptt", window_steps=2), Rule("eprop"), make_rule(spec, model.n_units, 5)]
    assert sorted(r.name for r in rules) == sorted(RULES)
    for rule in rules:
        out, rates = model(trials.inputs, trials.initial_code, noise, rule=rule)
        assert torch.equal(out, reference_out), rule.name
        assert torch.equal(rates, reference_rates), rule.name


def test_rule_validation_and_deterministic_feedback():
    with pytest.raises(ValueError, match="unknown"):
        Rule("mdgl")
    with pytest.raises(ValueError, match="window"):
        Rule("tbptt")
    with pytest.raises(ValueError, match="feedback"):
        Rule("rflo")
    assert torch.equal(rflo_feedback(8, 5, 1), rflo_feedback(8, 5, 1))
    assert not torch.equal(rflo_feedback(8, 5, 1), rflo_feedback(8, 5, 2))


def test_training_set_is_fixed_per_seed():
    spec = toy_spec(n_train_trajectories=16)
    a, b = training_set(spec), training_set(spec)
    assert a.inputs.shape == (16, 7, 2)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    other = training_set(spec.model_copy(update={"training": spec.training.model_copy(update={"seed": 1})}))
    assert not torch.equal(a.inputs, other.inputs)
    with pytest.raises(ValueError, match="n_train_trajectories"):
        training_set(toy_spec())


@pytest.mark.parametrize("rule", ["eprop", "rflo", "tbptt"])
def test_training_routes_the_rule(tmp_path, rule):
    """A few real optimizer steps: under eprop the I units' incoming weights never move (no learning signal)."""
    spec = toy_spec(rule=rule, steps=3, batch_size=4, n_train_trajectories=6, tbptt_window_steps=2, log_every_steps=3)
    model0, _ = build_circuit(spec)
    before = {n: p.detach().clone() for n, p in model0.named_parameters()}
    seen = {}
    train(
        spec, tmp_path, circuit="toy", log=lambda _: None,
        on_step=lambda step, m: seen.update({step: m.recurrent_raw.detach().clone()}),
    )
    after = seen[3]
    n_exc = model0.n_exc
    moved_inh_rows = not torch.equal(after[n_exc:], before["recurrent_raw"][n_exc:])
    assert not torch.equal(after[:n_exc], before["recurrent_raw"][:n_exc])
    assert moved_inh_rows == (rule != "eprop")
    assert (tmp_path / "model.pt").is_file()

"""Ensemble training: K circuits trained as one batched network equal the same circuits trained alone.

Checked to float32 tolerance, not bit for bit: the ensemble runs batched matmuls (baddbmm over members) where
training alone runs single ones. On this CPU they round identically and the weights come out bit-identical, but no
BLAS promises that, so a rounding difference amplified by a few Adam steps (~1e-6) is allowed.
"""

from __future__ import annotations

import pytest
import torch

from recircuit.circuit.io import load_model
from recircuit.learning.ensemble import _stack, check_compatible, train_ensemble
from recircuit.learning.train import train
from recircuit.spec import load_spec

BASE = [
    "network.n_exc=24", "network.n_inh=8", "task.place_cells.n_cells=64", "task.sequence_steps=10",
    "training.batch_size=8", "training.steps=6", "training.log_every_steps=3", "training.device=cpu",
]


def quiet(message):
    pass


@pytest.mark.parametrize(
    "members",
    [
        [["training.seed=0"], ["training.seed=1", "network.noise.recurrent_sd=0"], ["training.seed=2"]],
        [["training.seed=0", "task.drift_to_center=0.05"], ["training.seed=1"]],  # different tasks per member
        # with the sigmoid, as workflows/config/normalization.yaml runs it (the interneurons' tolerance below was
        # calibrated on it)
        [["training.seed=3", "network.normalization.kind=divisive", "network.normalization.errors=full",
          "network.activation=sigmoid"],
         ["training.seed=4", "network.normalization.kind=divisive", "network.normalization.errors=full",
          "task.input_gain.epsilon=0.5", "network.activation=sigmoid"]],
        # finite training sets: each member samples its own set (batch 8 of 12: without replacement; of 5: with)
        [["training.seed=5", "training.n_train_trajectories=12"],
         ["training.seed=6", "training.n_train_trajectories=12", "network.noise.recurrent_sd=0"]],
        [["training.seed=7", "training.n_train_trajectories=5", "network.activation=relu"],
         ["training.seed=8", "training.n_train_trajectories=5", "network.activation=relu"]],
        [["training.seed=9", "network.noise.placement=drive", "network.noise.input_sd=0.05",
          "network.initial_state=zeros"], ["training.seed=10", "network.noise.placement=drive",
                                           "network.initial_state=zeros"]],
        # the reference's initialisation: no learned bias (a buffer, shared by the members) and PyTorch's input init
        [["training.seed=13", "network.learned_bias=false", "network.input_init=fan_in"],
         ["training.seed=14", "network.learned_bias=false", "network.input_init=fan_in",
          "network.noise.recurrent_sd=0"]],
        # the reference code's uniform noise (recurrent and input), members differing in its width
        [["training.seed=11", "network.noise.distribution=reference_uniform", "network.noise.input_sd=0.02"],
         ["training.seed=12", "network.noise.distribution=reference_uniform", "network.noise.recurrent_sd=0.03"]],
    ],
)
def test_each_member_equals_training_it_alone(tmp_path, members):
    specs = [load_spec("circuits/path_integration.yaml", BASE + extra) for extra in members]
    out = [tmp_path / f"member{k}" for k in range(len(specs))]
    train_ensemble(specs, out, circuit="pi", variants=[f"v{k}" for k in range(len(specs))], log=quiet)
    for k, spec in enumerate(specs):
        train(spec, tmp_path / f"alone{k}", circuit="pi", variant=f"v{k}", log=quiet)
        together, alone = load_model(out[k]), load_model(tmp_path / f"alone{k}")
        lr = spec.training.learning_rate
        for (name, a), b in zip(together.named_parameters(), alone.parameters()):
            if name.startswith("normalization."):
                # The normalizing interneurons learn only from the tiny homeostatic loss: Adam divides each entry's
                # gradient by its own RMS, so a rounding-level difference (batched over members vs alone) in a
                # near-zero entry can become a step of up to the learning rate, either way: a few entries may differ
                # by up to 2 lr (0.28 lr seen on an AVX-512 CPU); a wrong gradient would move them all.
                difference = (a - b).abs()
                assert difference.max() <= 2 * lr, f"{name}: {difference.max():.3g} > 2 lr"
                assert difference.mean() <= 0.05 * lr, f"{name}: mean {difference.mean():.3g} > 0.05 lr"
            else:
                # those interneuron differences feed back into the circuit's own weights: 10x looser there, still
                # 0.2% of what 6 Adam steps can move a weight
                atol = 0.01 * lr if spec.network.normalization.kind != "none" else 1e-6
                torch.testing.assert_close(a, b, rtol=1e-5, atol=atol, msg=name)
        assert (together.effective_weights()["recurrent"][:, 24:] <= 0).all()


def test_members_that_differ_in_architecture_are_refused():
    a = load_spec("circuits/path_integration.yaml", BASE)
    b = load_spec("circuits/path_integration.yaml", BASE + ["network.spectral_radius=1.2", "training.learning_rate=0.01"])
    with pytest.raises(ValueError, match="network.spectral_radius, training.learning_rate"):
        check_compatible([a, b])


def test_stack_of_adjacent_slices_is_a_view_and_equals_torch_stack():
    joined = torch.randn(12, 5, 3)
    parts = [joined[4 * k : 4 * (k + 1)] for k in range(3)]
    stacked = _stack(parts)
    assert torch.equal(stacked, torch.stack(parts)) and stacked.data_ptr() == joined.data_ptr()
    for others in (parts[::-1], [torch.randn(4, 5, 3) for _ in range(3)], [joined[:4], joined[8:], joined[4:8]]):
        assert torch.equal(_stack(others), torch.stack(others))

"""The parallel noise of circuit.noise (reproducible, thread-count independent, standard normal or uniform) and the
circuit's two noise distributions (gaussian, reference_uniform)."""

import pytest
import torch
from scipy import stats

from recircuit.circuit.noise import NOISE_PARTS, standard_normal, standard_uniform


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_same_numbers_on_one_thread_and_on_several(threads):
    threads(1)
    one = standard_normal((50, 16, 32), torch.Generator().manual_seed(3), "cpu")
    threads(2)
    two = standard_normal((50, 16, 32), torch.Generator().manual_seed(3), "cpu")
    assert torch.equal(one, two)


def test_the_caller_generator_alone_decides_the_numbers():
    g = torch.Generator().manual_seed(5)
    first, second = standard_normal((20, 8), g, "cpu"), standard_normal((20, 8), g, "cpu")
    assert not torch.equal(first, second)  # the caller's generator advanced
    assert torch.equal(first, standard_normal((20, 8), torch.Generator().manual_seed(5), "cpu"))


def test_parts_are_distinct_streams_and_the_whole_is_standard_normal():
    draws = standard_normal((NOISE_PARTS * 100, 250), torch.Generator().manual_seed(0), "cpu")
    parts = draws.chunk(NOISE_PARTS)
    assert not any(torch.equal(parts[0], part) for part in parts[1:])
    flat = draws.flatten().double().numpy()
    assert abs(flat.mean()) < 5 / 200_000**0.5 and abs(flat.std() - 1) < 0.01
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    # consecutive parts are uncorrelated (each from its own seeded generator)
    first, second = parts[0].flatten().double(), parts[1].flatten().double()
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1]) < 5 / first.numel() ** 0.5


def test_fewer_rows_than_parts():
    draws = standard_normal((3, 4), torch.Generator().manual_seed(1), "cpu")
    assert draws.shape == (3, 4) and torch.isfinite(draws).all() and draws.std() > 0


def test_uniform_draws_are_standard_uniform_and_thread_count_independent(threads):
    threads(1)
    one = standard_uniform((NOISE_PARTS * 50, 200), torch.Generator().manual_seed(4), "cpu")
    threads(2)
    assert torch.equal(one, standard_uniform((NOISE_PARTS * 50, 200), torch.Generator().manual_seed(4), "cpu"))
    flat = one.flatten().double().numpy()
    assert flat.min() >= 0 and flat.max() < 1
    assert stats.kstest(flat, "uniform").pvalue > 1e-3


# ------------------------------------------------------------------------------ the circuit's noise distributions
def _circuit(make_spec, overrides):
    from recircuit.circuit import build_circuit

    return build_circuit(make_spec("head_direction", overrides))[0]


def test_gaussian_noise_is_zero_mean_with_brownian_per_step_sd(make_spec):
    model = _circuit(make_spec, {"network.noise.recurrent_sd": 0.1, "network.noise.input_sd": 0.2})
    noise = model.draw_noise(64, 200, torch.Generator().manual_seed(0))
    root = model.alpha**0.5
    assert abs(noise.recurrent.mean().item()) < 1e-3
    assert noise.recurrent.std().item() == pytest.approx(0.1 * root, rel=0.01)
    assert noise.input.std().item() == pytest.approx(0.2 * root, rel=0.02)


def test_reference_uniform_noise_is_sd_times_u01_per_step_whatever_dt_over_tau(make_spec):
    """Krishna et al.'s models/rnn.py: sigma * torch.rand_like, so mean sigma/2 and SD sigma/sqrt(12) per step."""
    for tau_ms in (40.0, 200.0):
        overrides = {
            "network.noise.distribution": "reference_uniform",
            "network.noise.recurrent_sd": 0.1,
            "network.noise.input_sd": 0.3,
            "network.tau_ms": tau_ms,
        }
        model = _circuit(make_spec, overrides)
        noise = model.draw_noise(64, 200, torch.Generator().manual_seed(0))
        rec = noise.recurrent
        assert rec.min().item() >= 0 and rec.max().item() < 0.1
        assert rec.mean().item() == pytest.approx(0.05, rel=0.01)
        assert rec.std().item() == pytest.approx(0.1 / 12**0.5, rel=0.01)
        assert 0 <= noise.input.min().item() and noise.input.max().item() < 0.3
        assert model.noise_step_scale(0.2) == 0.2
        # scaled offline noise scales the uniform's width
        assert model.draw_noise(8, 50, torch.Generator().manual_seed(1), scale=2.0).recurrent.max().item() > 0.1


def test_noise_distribution_is_validated(make_spec):
    from recircuit.spec import SpecError

    with pytest.raises(SpecError, match="network.noise.distribution"):
        make_spec("head_direction", {"network.noise.distribution": "uniform"})

"""The parallel Gaussian noise of circuit.noise: reproducible, thread-count independent, standard normal."""

import pytest
import torch
from scipy import stats

from recircuit.circuit.noise import NOISE_PARTS, standard_normal


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

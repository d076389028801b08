"""Trajectory generators and cell codes: integration identities, motion statistics, codes and decoders."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import assert_close

from recircuit.spec import HeadDirectionTask, PathIntegrationTask
from recircuit.learning.train import chunk_stop, task_loss
from recircuit.tasks import HeadDirection, PathIntegration, TrialBatch, TrialChunk, make_task
from recircuit.tasks.head_direction import wrap_angle

TURN_SD_PER_STEP = 11.52 * 0.02  # rad, Krishna et al. / Sorscher et al.


def path_task(**fields) -> PathIntegration:
    fields.setdefault("place_cells", {"n_cells": 64})
    return PathIntegration(PathIntegrationTask(**fields))


def hd_task(**fields) -> HeadDirection:
    fields.setdefault("hd_cells", {"n_cells": 64})
    return HeadDirection(HeadDirectionTask(**fields))


def sample(task, batch: int, steps: int, seed: int = 0) -> TrialBatch:
    return task.sample(batch, steps, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def long_walks() -> tuple[PathIntegration, TrialBatch]:
    """40,000 agent steps of the default (unbiased) motion model, shared by the statistics tests."""
    task = path_task()
    return task, sample(task, 400, 100, seed=1)


def previous_positions(batch: TrialBatch) -> torch.Tensor:
    """Position before each step, (B, T, 2)."""
    return torch.cat([batch.initial_state[:, None], batch.states[:, :-1]], dim=1)


def far_from_walls(positions: torch.Tensor, half: float, border: float) -> torch.Tensor:
    """Steps that start farther than the border region from every wall (the wall rule cannot act there)."""
    return (half - positions.abs()).amin(-1) > border


# --------------------------------------------------------------------------------------------- path integration
@pytest.mark.parametrize("drift", [0.0, 0.05])
def test_path_inputs_integrate_exactly_to_positions(drift):
    task = path_task(drift_to_center=drift)
    batch = sample(task, 64, 100)
    integrated = batch.initial_state[:, None] + torch.cumsum(batch.inputs, dim=1)
    assert (integrated - batch.states).abs().max().item() < 1e-5


def test_path_batch_shapes_and_initial_code():
    task = path_task()
    batch = sample(task, 5, 7)
    assert batch.inputs.shape == (5, 7, 2)
    assert batch.targets.shape == (5, 7, 64)
    assert batch.states.shape == (5, 7, 2)
    assert batch.initial_state.shape == (5, 2)
    assert batch.gains.shape == (5, 7)
    assert_close(batch.initial_code, task.encode(batch.initial_state))
    assert_close(batch.targets, task.encode(batch.states))


def test_speed_away_from_walls_matches_rayleigh_mean(long_walks):
    task, batch = long_walks
    s = task.spec
    lengths = torch.linalg.vector_norm(batch.inputs, dim=-1)
    free = far_from_walls(previous_positions(batch), s.arena_m / 2, s.border_region_m)
    expected = s.speed_scale_m_per_s * math.sqrt(math.pi / 2) * s.dt_s
    assert free.float().mean() > 0.8
    assert lengths[free].mean().item() == pytest.approx(expected, rel=0.05)


def test_mean_speed_matches_rayleigh_mean_corrected_for_wall_slowing(long_walks):
    task, batch = long_walks
    s = task.spec
    half = s.arena_m / 2
    before = previous_positions(batch)
    heading = torch.atan2(batch.inputs[..., 1], batch.inputs[..., 0])
    # The wall rule slows a step to 1/4 when it starts within the border region and heads towards the nearest wall.
    distances = torch.cat([half - before, half + before], dim=-1)
    nearest, wall = distances.min(-1)
    angle_to_wall = wrap_angle(heading - wall.float() * (math.pi / 2))
    slowed = (nearest < s.border_region_m) & (angle_to_wall.abs() < math.pi / 2)
    slowed_fraction = slowed.float().mean().item()
    assert 0 < slowed_fraction < 0.1
    mean_step = s.speed_scale_m_per_s * math.sqrt(math.pi / 2) * s.dt_s
    expected = mean_step * (1 - 0.75 * slowed_fraction)
    lengths = torch.linalg.vector_norm(batch.inputs, dim=-1)
    assert lengths.mean().item() == pytest.approx(expected, rel=0.05)


def test_turn_sd_per_step_away_from_walls(long_walks):
    task, batch = long_walks
    s = task.spec
    heading = torch.atan2(batch.inputs[..., 1], batch.inputs[..., 0])
    turns = wrap_angle(heading[:, 1:] - heading[:, :-1])
    # The turn between step t and t+1 is decided from the position before step t.
    free = far_from_walls(previous_positions(batch)[:, :-1], s.arena_m / 2, s.border_region_m)
    free_turns = turns[free]
    assert free_turns.std().item() == pytest.approx(TURN_SD_PER_STEP, rel=0.05)
    assert abs(free_turns.mean().item()) < 0.01


def test_positions_stay_in_the_box(long_walks):
    task, batch = long_walks
    half = task.spec.arena_m / 2
    inside = (batch.states.abs() <= half).all(-1)
    assert inside.float().mean().item() >= 0.99
    assert (batch.initial_state.abs() <= half).all()
    assert batch.states.abs().max().item() < half + 0.15


def test_drift_to_center_reduces_mean_distance_to_centre():
    unbiased = sample(path_task(drift_to_center=0.0), 128, 100, seed=2)
    biased = sample(path_task(drift_to_center=0.05), 128, 100, seed=2)
    late = slice(50, None)
    distance_unbiased = torch.linalg.vector_norm(unbiased.states[:, late], dim=-1).mean()
    distance_biased = torch.linalg.vector_norm(biased.states[:, late], dim=-1).mean()
    assert distance_biased < 0.7 * distance_unbiased


def test_pauses_have_the_asked_fraction_and_mean_length():
    from recircuit.tasks.base import pauses

    still = pauses(torch.rand(4000, 500, generator=torch.Generator().manual_seed(0)), 0.25, 25.0)
    assert still.float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert still[:, 0].float().mean().item() == pytest.approx(0.25, abs=0.03)  # started in the stationary state
    n_started = (still[:, 1:] & ~still[:, :-1]).sum().item()
    assert still[:, 1:].sum().item() / n_started == pytest.approx(25.0, rel=0.1)  # steps per pause


def test_a_pausing_agent_stands_still_and_trials_without_pauses_keep_their_draws():
    walks = sample(path_task(pause_fraction=0.25, pause_steps=10), 400, 100, seed=3)
    still = (walks.inputs == 0).all(-1)
    assert still.float().mean().item() == pytest.approx(0.25, abs=0.02)
    integrated = walks.initial_state[:, None] + torch.cumsum(walks.inputs, dim=1)
    assert (integrated - walks.states).abs().max().item() < 1e-5  # the input still integrates to the position
    plain, default = sample(path_task(pause_fraction=0.0), 8, 20, seed=4), sample(path_task(), 8, 20, seed=4)
    assert torch.equal(plain.inputs, default.inputs)
    assert (sample(path_task(pause_fraction=0.25), 8, 20, seed=4).initial_state == plain.initial_state).all()
    with pytest.raises(ValueError, match="pause_fraction"):
        PathIntegrationTask(pause_fraction=0.9, pause_steps=2)


def test_a_pausing_head_stands_still_and_the_input_still_integrates_to_the_heading():
    for turn_bias in ("none", "counter_clockwise"):
        turns = sample(hd_task(pause_fraction=0.3, pause_steps=10, turn_bias=turn_bias), 400, 100, seed=3)
        still = turns.inputs[..., 0] == 0
        assert still.float().mean().item() == pytest.approx(0.3, abs=0.02)
        integrated = turns.initial_state[:, None] + torch.cumsum(turns.inputs, dim=1)
        assert wrap_angle(integrated - turns.states).abs().max().item() < 1e-4
    plain, default = sample(hd_task(pause_fraction=0.0), 8, 20, seed=4), sample(hd_task(), 8, 20, seed=4)
    assert torch.equal(plain.inputs, default.inputs)
    paused = sample(hd_task(pause_fraction=0.3), 8, 20, seed=4)
    moving = paused.inputs != 0
    assert torch.equal(paused.inputs[moving], plain.inputs[moving])  # the pauses only stop turns already drawn
    with pytest.raises(ValueError, match="pause_fraction"):
        HeadDirectionTask(pause_fraction=0.9, pause_steps=2)


def sorscher_walk(position, heading, lengths, turns, half, border, drift=0.0):
    """Sorscher et al.'s wall-avoiding walk written plainly (nearest of the four walls by argmin), float64."""
    wall_heading = torch.arange(4, dtype=torch.float64) * (math.pi / 2)  # +x, +y, -x, -y
    positions = []
    for length, turn in zip(lengths.unbind(1), turns.unbind(1)):
        nearest, wall = torch.cat([half - position, half + position], dim=1).min(dim=1)
        angle = torch.remainder(heading - wall_heading[wall] + math.pi, 2 * math.pi) - math.pi
        near = (nearest < border) & (angle.abs() < math.pi / 2)
        turn = turn + torch.where(near, torch.sign(angle) * (math.pi / 2 - angle.abs()), 0.0)
        length = torch.where(near, 0.25 * length, length)
        position = position + length[:, None] * torch.stack([heading.cos(), heading.sin()], 1) - drift * position
        heading = heading + turn
        positions.append(position)
    return torch.stack(positions, 1)


@pytest.mark.parametrize("drift", [0.0, 0.05])
def test_path_walk_equals_the_plain_four_wall_formulation(drift):
    task = path_task(drift_to_center=drift)
    draws = task.draw(512, 200, torch.Generator().manual_seed(3))
    draws = {k: v.double() for k, v in draws.items()}
    _, positions = task.integrate(draws)
    half, border = task.spec.arena_m / 2, task.spec.border_region_m
    expected = sorscher_walk(draws["position"], draws["heading"], draws["step_length"], draws["turn"], half, border, drift)
    assert torch.allclose(positions, expected, rtol=0, atol=1e-9)


def test_place_cell_code_is_a_distribution():
    task = path_task()
    code = sample(task, 16, 10).targets
    assert (code >= 0).all()
    assert_close(code.sum(-1), torch.ones(16, 10))


def test_place_cell_code_gain_scales_the_code_and_changes_neither_decoding_nor_cross_entropy():
    plain, scaled = path_task(), path_task(place_cells={"n_cells": 64, "code_gain": 100.0})
    positions = (torch.rand(50, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1) * 1.1
    code, scaled_code = plain.encode(positions), scaled.encode(positions)
    assert_close(scaled_code, 100.0 * code)
    into = torch.empty_like(scaled_code)
    assert torch.equal(scaled.encode(positions, out=into), scaled_code)
    assert torch.equal(scaled.decode(scaled_code), plain.decode(code))
    outputs = torch.randn(50, 64, generator=torch.Generator().manual_seed(3))
    assert_close(task_loss(outputs, scaled_code, "cross_entropy"), task_loss(outputs, code, "cross_entropy"))
    assert not torch.allclose(task_loss(outputs, scaled_code, "mse"), task_loss(outputs, code, "mse"))


def test_place_cell_code_peaks_at_the_nearest_centre():
    task = path_task()
    positions = task.centres[:10].clone()
    assert torch.equal(task.encode(positions).argmax(-1), torch.arange(10))


def test_place_cell_decode_recovers_position_within_a_few_cm():
    task = path_task(place_cells={"n_cells": 512})
    half = task.spec.arena_m / 2
    positions = (torch.rand(2000, 2, generator=torch.Generator().manual_seed(5)) * 2 - 1) * half
    error = task.error(task.decode(task.encode(positions)), positions)
    assert error.shape == (2000,)
    assert error.mean().item() < 5.0
    assert torch.quantile(error, 0.95).item() < 10.0


def test_place_cell_layout_is_fixed_by_layout_seed():
    same = path_task(place_cells={"n_cells": 64, "layout_seed": 0})
    again = path_task(place_cells={"n_cells": 64, "layout_seed": 0})
    other = path_task(place_cells={"n_cells": 64, "layout_seed": 1})
    assert torch.equal(same.centres, again.centres)
    assert not torch.equal(same.centres, other.centres)
    assert (same.centres.abs() <= same.spec.arena_m / 2).all()


def test_position_error_is_euclidean_in_cm():
    task = path_task()
    decoded = torch.tensor([[0.0, 0.0], [0.3, 0.4]])
    true = torch.tensor([[0.03, 0.04], [0.0, 0.0]])
    assert_close(task.error(decoded, true), torch.tensor([5.0, 50.0]))


# --------------------------------------------------------------------------------------------- head direction
def test_heading_inputs_integrate_exactly_to_heading():
    task = hd_task()
    batch = sample(task, 64, 100)
    integrated = wrap_angle(batch.initial_state[:, None] + torch.cumsum(batch.inputs, dim=1))
    assert wrap_angle(integrated - batch.states).abs().max().item() < 1e-5
    assert (batch.states >= -math.pi).all() and (batch.states < math.pi).all()


def test_iid_turn_sd_per_step():
    batch = sample(hd_task(), 400, 100)
    assert batch.inputs.std().item() == pytest.approx(TURN_SD_PER_STEP, rel=0.05)
    assert abs(batch.inputs.mean().item()) < 0.01


def test_counter_clockwise_bias_gives_non_negative_turns():
    unbiased = sample(hd_task(), 64, 50, seed=3)
    biased = sample(hd_task(turn_bias="counter_clockwise"), 64, 50, seed=3)
    assert (biased.inputs >= 0).all()
    assert (unbiased.inputs < 0).any()
    assert_close(biased.inputs, unbiased.inputs.abs())


def test_ar1_turns_have_the_stationary_sd_and_momentum():
    momentum, step_sd = 0.8, 0.03
    task = hd_task(turn_model="ar1", ar1_momentum=momentum, ar1_step_sd_rad=step_sd)
    turns = sample(task, 512, 100).inputs[..., 0]
    stationary_sd = step_sd / math.sqrt(1 - momentum**2)
    assert task.input_scale == pytest.approx(stationary_sd)
    assert turns[:, 0].std().item() == pytest.approx(stationary_sd, rel=0.1)  # starts stationary
    assert turns.std().item() == pytest.approx(stationary_sd, rel=0.05)
    lag1 = torch.corrcoef(torch.stack([turns[:, :-1].flatten(), turns[:, 1:].flatten()]))[0, 1]
    assert lag1.item() == pytest.approx(momentum, abs=0.03)


def test_hd_code_peak_is_one_at_the_preferred_heading():
    task = hd_task()
    code = task.encode(task.preferred[:, None])
    assert_close(code.diagonal(), torch.ones(task.n_cells))
    random_headings = sample(task, 8, 20).states
    assert task.encode(random_headings).max().item() <= 1.0


def test_hd_preferred_headings_are_evenly_spaced_without_duplicates():
    task = hd_task()
    gaps = wrap_angle(task.preferred.roll(-1) - task.preferred)
    assert_close(gaps, torch.full_like(gaps, 2 * math.pi / task.n_cells))


def test_hd_decode_recovers_heading_within_a_degree():
    task = hd_task(hd_cells={"n_cells": 512})
    headings = (torch.rand(2000, 1, generator=torch.Generator().manual_seed(6)) * 2 - 1) * math.pi
    error = task.error(task.decode(task.encode(headings)), headings)
    assert error.shape == (2000,)
    assert error.max().item() < 1.0


def test_heading_error_wraps_around_the_circle():
    task = hd_task()
    decoded = torch.tensor([[math.pi - 0.01], [0.0]])
    true = torch.tensor([[-math.pi + 0.01], [math.pi / 2]])
    assert_close(task.error(decoded, true), torch.tensor([math.degrees(0.02), 90.0]), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------- shared rules
@pytest.mark.parametrize("kind", ["path_integration", "head_direction"])
def test_input_gain_is_within_bounds_and_constant_within_segments(kind):
    epsilon, segments, steps = 0.3, 4, 20
    gain = {"epsilon": epsilon, "segments": segments}
    task = path_task(input_gain=gain) if kind == "path_integration" else hd_task(input_gain=gain)
    batch = sample(task, 64, steps)
    gains = batch.gains
    assert gains.min() >= 1 - epsilon and gains.max() <= 1 + epsilon
    per_segment = gains.view(64, segments, steps // segments)
    assert torch.equal(per_segment, per_segment[..., :1].expand_as(per_segment))
    assert (per_segment[:, 1:, 0] != per_segment[:, :-1, 0]).all()  # independent draws per segment
    assert gains.std() > 0.1  # spread ~ eps/sqrt(3)
    # The gain multiplies the self-motion; the true states follow the unscaled motion.
    raw = batch.inputs / gains[..., None]
    if kind == "path_integration":
        integrated = batch.initial_state[:, None] + torch.cumsum(raw, dim=1)
        assert (integrated - batch.states).abs().max().item() < 1e-5
    else:
        integrated = batch.initial_state[:, None] + torch.cumsum(raw, dim=1)
        assert wrap_angle(integrated - batch.states).abs().max().item() < 1e-5


@pytest.mark.parametrize("kind", ["path_integration", "head_direction"])
def test_zero_epsilon_means_unit_gain(kind):
    task = path_task() if kind == "path_integration" else hd_task()
    assert torch.equal(sample(task, 4, 10).gains, torch.ones(4, 10))


@pytest.mark.parametrize("kind", ["path_integration", "head_direction"])
def test_sampling_is_reproducible_under_a_seed(kind):
    task = path_task() if kind == "path_integration" else hd_task()
    first, again, other = sample(task, 8, 15, seed=11), sample(task, 8, 15, seed=11), sample(task, 8, 15, seed=12)
    for field in ("inputs", "states", "initial_state", "targets"):
        assert torch.equal(getattr(first, field), getattr(again, field)), field
        assert not torch.equal(getattr(first, field), getattr(other, field)), field


@pytest.mark.parametrize(
    "task",
    [path_task(drift_to_center=0.05), path_task(pause_fraction=0.25), hd_task(turn_model="ar1"),
     hd_task(input_gain={"epsilon": 0.5})],
    ids=["path", "path_pauses", "heading_ar1", "heading_gain"],
)
def test_a_chunk_of_batches_equals_one_sample_call_per_batch_per_generator(task):
    seeds, n_batches = (3, 4), 5
    chunk = TrialChunk(task, 6, 12, [torch.Generator().manual_seed(s) for s in seeds], n_batches)
    for m, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(seed)
        for j in range(n_batches):
            expected, got = task.sample(6, 12, generator), chunk.batches(j)[m]
            for field in ("inputs", "targets", "states", "initial_state", "initial_code", "gains"):
                assert_close(getattr(got, field), getattr(expected, field), atol=1e-6, rtol=1e-6)
    with pytest.raises(IndexError):
        chunk.batches(n_batches)


def test_trajectory_chunks_stop_at_every_checkpoint_and_at_the_end():
    stops, step = [], 0
    while step < 100:
        step = chunk_stop(step, 100, checkpoint_every=30, batch=200)
        stops.append(step)
    assert stops == [6, 12, 18, 24, 30, 36, 42, 48, 54, 60, 66, 72, 78, 84, 90, 96, 100]
    assert chunk_stop(25, 1000, checkpoint_every=30, batch=64) == 30
    assert chunk_stop(0, 1000, checkpoint_every=500, batch=2048) == 1


def test_make_task_picks_the_task_of_the_spec():
    assert isinstance(make_task(PathIntegrationTask(place_cells={"n_cells": 8})), PathIntegration)
    assert isinstance(make_task(HeadDirectionTask(hd_cells={"n_cells": 8})), HeadDirection)


@pytest.mark.parametrize("task", [path_task(), hd_task()], ids=["path", "heading"])
def test_encode_into_a_given_buffer_equals_encode(task):
    states = sample(task, 5, 7).states
    buffer = torch.full((5, 7, task.n_cells), float("nan"))
    written = task.encode(states, out=buffer)
    assert written.data_ptr() == buffer.data_ptr()
    assert torch.equal(buffer, task.encode(states))

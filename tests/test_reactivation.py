"""Offline reactivation: KL estimator, metrics on hand-made data, quiescence, the reactivation table, CLI, figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.special import i0, i1

from recircuit.analysis import reactivation as R
from recircuit.analysis.quiescence import (
    CONDITIONS,
    QuiescenceDiverged,
    condition_noise_sd,
    quiesce,
    quiescent_run,
    with_reactivation_overrides,
)
from recircuit.circuit.io import build_circuit, save_model
from recircuit.circuit.network import Noise
from recircuit.cli import main
from recircuit.learning.evaluate import evaluate
from recircuit.results import combine, open_dataset
from recircuit.spec import SpecError, load_spec, spec_from_json

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "network.n_exc=26",
    "network.n_inh=6",
    "training.batch_size=16",
    "task.sequence_steps=30",
    "training.device=cpu",
    "evaluation.n_trials=16",
    "evaluation.n_trials_with_rates=4",
    "reactivation.duration_steps=150",
    "reactivation.burn_in_steps=100",
    "reactivation.n_trials=16",
    "reactivation.n_trials_with_rates=4",
    "reactivation.kl_samples=500",
    "reactivation.time_course_window_steps=50",
]


def tiny_spec(task: str = "path_integration", extra: list[str] = ()):
    cells = "task.place_cells.n_cells=64" if task == "path_integration" else "task.hd_cells.n_cells=64"
    return load_spec(ROOT / "circuits" / f"{task}.yaml", [*TINY, cells, *extra])


class Gaussian:
    """Exact 2-D Gaussian density (test helper)."""

    def __init__(self, mean, cov):
        self.mean, self.cov = np.asarray(mean, float), np.asarray(cov, float)

    def sample(self, n, rng):
        return rng.multivariate_normal(self.mean, self.cov, size=n)

    def pdf(self, x):
        d = x - self.mean
        inv = np.linalg.inv(self.cov)
        return np.exp(-0.5 * np.einsum("ni,ij,nj->n", d, inv, d)) / (2 * np.pi * np.sqrt(np.linalg.det(self.cov)))


def gaussian_kl(m0, s0, m1, s1) -> float:
    inv = np.linalg.inv(s1)
    d = np.asarray(m1) - np.asarray(m0)
    return 0.5 * (np.trace(inv @ s0) + d @ inv @ d - len(d) + np.log(np.linalg.det(s1) / np.linalg.det(s0)))


# ------------------------------------------------------------------------------------------------------ estimator
def test_kde_kl_recovers_gaussian_kl_within_10_percent():
    rng = np.random.default_rng(1)
    # P (waking) broader than Q, as for reactivation; a Q reaching far into P's sparse KDE tails biases KL upwards
    m0, s0, m1, s1 = [0.0, 0.0], np.eye(2), [1.5, 0.0], np.array([[2.0, 0.3], [0.3, 1.5]])
    q = R.PlanarKde(rng.multivariate_normal(m0, s0, 10_000), rng)
    p = R.PlanarKde(rng.multivariate_normal(m1, s1, 10_000), rng)
    exact = gaussian_kl(m0, s0, m1, s1)
    estimate = R.kl_divergence(q, p, 2500, np.random.default_rng(2))
    assert exact == pytest.approx(0.7153, abs=1e-3)
    assert estimate == pytest.approx(exact, rel=0.10)
    assert R.kl_divergence(q, R.PlanarKde(rng.multivariate_normal(m0, s0, 10_000), rng), 2500, rng) < 0.05


def test_kl_with_exact_uniform_density():
    rng = np.random.default_rng(3)
    arena = R.UniformSquare(2.2)
    assert R.kl_divergence(arena, R.UniformSquare(2.2), 1000, rng) == 0.0
    # a Gaussian well inside the box against the joint uniform density 1/L^2: -H(N) + log L^2
    s = 0.2
    exact = -(1 + math.log(2 * math.pi * s**2)) + 2 * math.log(2.2)
    gauss = Gaussian([0.1, -0.2], s**2 * np.eye(2))
    assert R.kl_divergence(gauss, arena, 20_000, rng) == pytest.approx(exact, rel=0.02)
    kde = R.PlanarKde(gauss.sample(5000, rng), rng)
    assert R.kl_divergence(kde, arena, 2000, rng) == pytest.approx(exact, rel=0.05)
    # the uniform baseline against a KDE of uniform points: ~0 (only the KDE's smoothing at the walls)
    uniform_kde = R.PlanarKde(arena.sample(5000, rng), rng)
    assert 0 <= R.kl_divergence(arena, uniform_kde, 2000, rng) < 0.15


def test_circular_kde_wraps_and_matches_von_mises_kl():
    rng = np.random.default_rng(4)
    ring = R.UniformCircle()
    uniform_kde = R.CircularKde(ring.sample(5000, rng), rng)
    assert abs(R.kl_divergence(ring, uniform_kde, 2000, rng)) < 0.02  # no edge on the ring
    grid = np.linspace(-np.pi, np.pi, 1001)[:-1]
    assert uniform_kde.pdf(grid).mean() * 2 * np.pi == pytest.approx(1.0, rel=1e-3)  # integrates to 1
    kappa = 2.0
    angles = R.wrap(rng.vonmises(np.pi, kappa, 5000))  # centred on the +-pi seam
    kde = R.CircularKde(angles, rng)
    assert kde.pdf(grid).mean() * 2 * np.pi == pytest.approx(1.0, rel=1e-3)
    exact = kappa * i1(kappa) / i0(kappa) - math.log(i0(kappa))
    assert R.kl_divergence(kde, ring, 2000, rng) == pytest.approx(exact, rel=0.10)
    peak = np.exp(kappa) / (2 * np.pi * i0(kappa))
    assert kde.pdf(np.array([np.pi - 0.01, -np.pi + 0.01])) == pytest.approx(np.full(2, peak), rel=0.15)


def test_kl_clips_ratio_and_degenerate_sample_is_jittered():
    rng = np.random.default_rng(5)
    point_mass = R.PlanarKde(np.zeros((500, 2)), rng, floor_sd=0.01)  # singular covariance: jittered
    far = Gaussian([5.0, 5.0], 0.01 * np.eye(2))
    assert R.kl_divergence(point_mass, far, 200, rng) == pytest.approx(math.log(1e7))


# -------------------------------------------------------------------------------------------------------- metrics
def test_coverage_and_bins():
    edges = R.spatial_edges(2.2, 0.1, 0.1)
    assert len(edges) == 25 and edges[0] == pytest.approx(-1.2) and edges[-1] == pytest.approx(1.2)
    awake = np.array([[0.05, 0.05], [0.15, 0.05], [0.05, 0.15], [0.95, 0.95], [1.25, 1.25]])  # last: clipped in
    offline = np.array([[0.06, 0.04], [0.16, 0.06], [-0.5, -0.5], [-0.51, -0.52]])
    assert R.coverage(R.spatial_counts(offline, edges), R.spatial_counts(awake, edges)) == pytest.approx(2 / 5)
    assert math.isnan(R.coverage(np.ones(3), np.zeros(3)))
    h_edges = R.heading_edges(10.0)
    assert len(h_edges) == 37
    assert R.heading_counts(np.array([np.pi, -np.pi, 0.01]), h_edges).sum() == 3


def test_variances_steps_and_angular_metrics():
    n = 11
    line = np.stack([np.arange(n, dtype=float), np.zeros(n)], -1)
    trajectories = np.stack([line, 2 * line])  # var of 0..10 is 11, of 0..20 step 2 is 44
    assert R.output_variance(trajectories) == pytest.approx((11 + 44) / 2)
    v, dt = 0.5, 0.02
    straight = (v * dt * np.arange(50))[:, None] * np.array([[0.6, 0.8]])
    assert R.mean_step_size(straight[None]) == pytest.approx(v * dt)
    assert R.mean_radius(np.array([[3.0, 4.0], [0.0, 1.0]])) == pytest.approx(3.0)

    even = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    assert R.mean_resultant_length(even) < 1e-12
    assert R.mean_resultant_length(np.full(100, 2.0)) == pytest.approx(1.0)
    assert R.circular_output_variance(np.full((3, 20), 1.0)) == pytest.approx(0.0, abs=1e-12)
    narrow = R.wrap(np.pi + 0.1 * np.random.default_rng(0).standard_normal((4, 5000)))  # straddles the seam
    assert R.circular_output_variance(narrow) == pytest.approx(0.01, rel=0.1)

    omega = 1.5  # rad/s, counter-clockwise, wrapping around the ring many times
    spin = R.wrap(omega * dt * np.arange(2000))[None].repeat(3, 0)
    assert R.mean_angular_velocity(spin, dt) == pytest.approx(omega)
    assert R.mean_angular_velocity(-spin, dt) == pytest.approx(-omega)
    assert R.mean_step_size(spin[..., None], circular=True) == pytest.approx(omega * dt)
    assert R.angular_velocity_sign_p(spin.repeat(10, 0)) < 0.001


def test_distance_from_the_start_and_between_independent_samples():
    t = np.arange(6, dtype=float)
    along_x = np.stack([np.stack([t, 0 * t], -1), np.stack([2 * t, 0 * t], -1)])  # speeds 1 and 2 per step
    np.testing.assert_allclose(R.displacement_from_start(along_x), t * np.sqrt((1 + 4) / 2))
    turning = R.wrap(0.5 * np.arange(9))[None, :, None]  # counter-clockwise at 0.5 rad per step, across the seam
    expected = np.abs(R.wrap(0.5 * np.arange(9)))  # the wrapped distance turns back after half a turn
    np.testing.assert_allclose(R.displacement_from_start(turning, circular=True), expected, atol=1e-12)
    assert expected[-1] == pytest.approx(2 * np.pi - 4.0)
    rng = np.random.default_rng(3)
    # two points 2 m apart: independent draws coincide half the time, so the mean squared distance is 2 m^2
    assert R.pair_distance(np.array([[0.0, 0.0], [2.0, 0.0]]), rng) == pytest.approx(np.sqrt(2.0))
    square = rng.uniform(-1.1, 1.1, (50_000, 2))  # uniform on the 2.2 m arena: E|a - b|^2 = 4 * 2.2^2 / 12
    assert R.pair_distance(square, rng) == pytest.approx(np.sqrt(4 * 2.2**2 / 12), rel=0.01)
    ring = rng.uniform(-np.pi, np.pi, 50_000)
    assert R.pair_distance(ring, rng, circular=True) == pytest.approx(np.pi / np.sqrt(3), rel=0.01)
    assert R.pair_distance(np.full(100, 1.0), rng, circular=True) == 0.0


def test_rayleigh_test_is_calibrated_on_uniform_headings_and_rejects_a_concentrated_ring():
    rng = np.random.default_rng(1)
    p_uniform = np.array([R.rayleigh_p(rng.uniform(-np.pi, np.pi, 50)) for _ in range(4000)])
    assert ((p_uniform >= 0) & (p_uniform <= 1)).all()
    for alpha in (0.05, 0.2, 0.5):  # under uniformity P(p < alpha) = alpha; 4000 draws: standard error <= 0.008
        assert np.mean(p_uniform < alpha) == pytest.approx(alpha, abs=0.015)
    assert R.rayleigh_p(np.random.default_rng(2).vonmises(1.0, 2.0, 100)) < 1e-6  # mean resultant length ~0.7
    # each trial's circular mean, also for a trial straddling the seam at +-pi
    headings = R.wrap(np.array([[np.pi - 0.1, -np.pi + 0.1, np.pi], [0.2, 0.4, 0.3]]))
    assert np.abs(R.wrap(R.trial_mean_headings(headings) - np.array([np.pi, 0.3]))).max() < 1e-12


def test_heading_drift_recovers_the_flow_of_a_ring_with_one_attractor():
    dt, omega, attractor = 0.02, 2.0, 1.0  # d theta / dt = -omega sin(theta - attractor), rad/s
    steps = 400
    headings = np.empty((72, steps))
    headings[:, 0] = np.linspace(-np.pi, np.pi, 72, endpoint=False) + 0.01
    for t in range(1, steps):  # small Euler steps: the step from theta is -omega sin(theta - attractor) dt
        headings[:, t] = R.wrap(headings[:, t - 1] - omega * np.sin(headings[:, t - 1] - attractor) * dt)
    edges = R.heading_edges(10.0)
    centres = 0.5 * (edges[1:] + edges[:-1])
    drift = R.heading_drift(headings, edges, dt, min_steps=5)
    sampled = np.isfinite(drift)
    assert sampled.sum() >= 30  # the flow passes through most of the ring
    expected = -omega * np.sin(centres - attractor)
    assert np.abs(drift[sampled] - expected[sampled]).max() < omega * np.radians(10.0)  # within one bin's change
    constant = R.wrap(0.5 * dt * np.arange(3000))[None]  # a steady counter-clockwise turn at 0.5 rad/s
    assert np.allclose(R.heading_drift(constant, edges, dt), 0.5)
    with_gap = constant.copy()
    with_gap[0, 10:] = np.nan
    assert np.isnan(R.heading_drift(with_gap, edges, dt)).all()  # 9 steps: under min_steps in every bin


def test_radial_displacement_says_outward_stayed_or_forgot_the_start():
    edges = R.radius_edges(2.2, 0.1, 0.1)
    assert edges[0] == 0 and edges[-1] >= np.sqrt(2) * 1.2 > edges[-2]  # up to the corner of arena plus margin
    centres = 0.5 * (edges[1:] + edges[:-1])
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    start_radius = np.repeat(np.arange(0.05, 1.0, 0.1), 40)  # 40 trials at each bin centre up to 0.95 m
    direction = np.stack([np.cos(angles), np.sin(angles)], -1)[np.arange(len(start_radius)) % 40]
    growth = np.exp(0.5 * 0.02 * np.arange(101))  # dr/dt = 0.5 r for 2 s: an unstable integrator
    expanding = start_radius[:, None, None] * growth[None, :, None] * direction[:, None, :]
    moved = R.radial_displacement(expanding, edges, end_step=100)
    assert np.isfinite(moved[:10]).all() and np.isnan(moved[10:]).all()
    np.testing.assert_allclose(moved[:10], centres[:10] * (np.e - 1), rtol=1e-9)  # outward, in proportion
    still = np.repeat(expanding[:, :1], 101, axis=1)
    np.testing.assert_allclose(R.radial_displacement(still, edges, 100)[:10], 0.0, atol=1e-15)
    # ends drawn independently of the starts from a distribution centred on the arena: minus the start's distance
    ends = np.random.default_rng(0).uniform(-1.1, 1.1, (len(start_radius), 2))
    forgot = np.concatenate([expanding[:, :1], np.repeat(ends[:, None], 100, axis=1)], axis=1)
    moved = R.radial_displacement(forgot, edges, 100)
    assert np.abs(moved[:10] + centres[:10]).max() < 4 * 0.64 / np.sqrt(40)  # the ends' SD per axis is 0.64 m
    assert np.isnan(R.radial_displacement(expanding[:4], edges, 100)).all()  # under 5 trials in every bin
    with_nan = expanding.copy()
    with_nan[:, 100] = np.nan
    assert np.isnan(R.radial_displacement(with_nan, edges, 100)).all()


def test_windowed_measure_per_window_with_nan_where_data_is_missing():
    x = np.arange(2 * 10 * 1, dtype=float).reshape(2, 10, 1)  # trial 0: 0..9, trial 1: 10..19
    x[0, 7] = np.nan
    means = R.windowed(x, 3, 4, lambda pts: float(pts.mean()))
    # windows [0,3) [3,6) [6,9) [9,12): the third holds the NaN, the fourth runs past the end
    np.testing.assert_allclose(means[:2], [(0 + 1 + 2 + 10 + 11 + 12) / 6, (3 + 4 + 5 + 13 + 14 + 15) / 6])
    assert np.isnan(means[2]) and np.isnan(means[3])


def test_pca_fraction():
    rng = np.random.default_rng(6)
    basis = np.linalg.qr(rng.standard_normal((20, 20)))[0]
    waking = rng.standard_normal((500, 2)) @ basis[:, :2].T + 3.0
    offline_in = rng.standard_normal((300, 2)) @ basis[:, :2].T - 1.0
    offline_out = rng.standard_normal((300, 3)) @ basis[:, 5:8].T
    assert R.pca_fraction(waking, offline_in, 2) == pytest.approx(1.0)
    assert R.pca_fraction(waking, offline_out, 2) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(R.pca_fraction(waking, np.ones((10, 20)), 2))


# ---------------------------------------------------------------------------------------------------- quiescence
def test_noise_sd_per_condition_and_overrides():
    spec = tiny_spec()
    rs = spec.reactivation
    assert condition_noise_sd(rs, 0.01) == pytest.approx(
        {"trained": 0.01 * 2**0.5, "offline_noise": None, "noise_off": 0.0, "untrained": 0.01 * 2**0.5}
    )
    free = condition_noise_sd(rs, 0.0)
    assert free["trained"] == 0 and free["offline_noise"] == pytest.approx(0.01 * 2**0.5)
    assert free["noise_off"] is None  # a noise-free circuit's trained condition is already its run without noise
    same = with_reactivation_overrides(spec, ["reactivation.noise_mode=same"]).reactivation
    assert condition_noise_sd(same, 0.1)["trained"] == pytest.approx(0.1)
    absolute = with_reactivation_overrides(spec, ["reactivation.noise_mode=absolute", "reactivation.noise_sd=0.3"])
    assert condition_noise_sd(absolute.reactivation, 0.1)["trained"] == pytest.approx(0.3)
    for bad in (["reactivation.nope=1"], ["network.n_exc=3"], ["reactivation.burn_in_steps=150"], ["junk"]):
        with pytest.raises(SpecError):
            with_reactivation_overrides(spec, bad)


def test_zero_noise_quiescence_is_deterministic_and_noise_is_seeded():
    model, task = build_circuit(tiny_spec(extra=["network.noise.recurrent_sd=0"]))
    code = task.encode(torch.rand(8, 2) - 0.5)
    h0 = model.initial_rates(code)

    def run(sd, seed):
        return quiescent_run(
            model, task.decode, h0, steps=120, burn_in=20, noise_sd=sd,
            generator=torch.Generator().manual_seed(seed), rate_trials=2, rates_every=10,
        )

    a, rates_a = run(0.0, 1)
    b, rates_b = run(0.0, 2)
    assert a.shape == (8, 100, 2) and rates_a.shape == (2, 10, model.n_units)
    assert torch.equal(a, b) and torch.equal(rates_a, rates_b)
    noisy_1, noisy_rates_1 = run(0.5, 1)
    noisy_2, noisy_rates_2 = run(0.5, 1)
    assert torch.equal(noisy_rates_1, noisy_rates_2)
    assert not torch.equal(noisy_rates_1, run(0.5, 2)[1])


def test_quiescence_draws_the_spec_noise_distribution():
    """Gaussian quiescence keeps its serial stream (earlier files reproduce); reference_uniform draws sd * U[0,1)."""
    for distribution, draw, step_scale in (("gaussian", torch.randn, None), ("reference_uniform", torch.rand, 1.0)):
        spec = tiny_spec(extra=[f"network.noise.distribution={distribution}"])
        model, task = build_circuit(spec)
        h0 = model.initial_rates(task.encode(torch.rand(4, 2) - 0.5))
        decoded, _ = quiescent_run(
            model, task.decode, h0, steps=30, burn_in=0, noise_sd=0.3, generator=torch.Generator().manual_seed(7)
        )
        per_step = 0.3 * (model.alpha**0.5 if step_scale is None else step_scale)
        noise = draw(30, 4, model.n_units, generator=torch.Generator().manual_seed(7)).mul_(per_step)
        expected = task.decode(model.readout(model.run(torch.zeros(4, 30, 2), h0, Noise(noise, None))))
        assert torch.equal(decoded, expected), distribution


def test_quiescence_says_that_scaled_reference_noise_changes_its_mean(tmp_path):
    """reference_uniform noise has a mean (width / 2 per step): scaled offline, its log line gives the offline mean
    beside the one the circuit was trained with."""
    spec = tiny_spec(extra=["network.noise.distribution=reference_uniform", "network.noise.recurrent_sd=0.02"])
    run = tmp_path / "uniform" / "seed0"
    save_model(run / "model.pt", build_circuit(spec)[0], circuit="path_integration", variant="uniform", seed=0)
    evaluate(run, device="cpu")
    lines: list[str] = []
    quiesce(run, device="cpu", overrides=["reactivation.noise_scale=2", "reactivation.input_scales=[]"],
            log=lines.append)
    trained = next(line for line in lines if line.startswith("quiescence trained:"))
    assert "0.04 x U[0,1) per step (reference_uniform: mean 0.02 per step on every unit, 0.01 in training)" in trained


def _saved_run(tmp: Path, name: str, extra: list[str], task: str = "path_integration", seed: int = 0) -> Path:
    """An untrained tiny circuit saved as a run folder (model.pt), evaluated and quiesced."""
    spec = tiny_spec(task, [*extra, f"training.seed={seed}"])
    model, _ = build_circuit(spec)
    run = tmp / name / f"seed{seed}"
    save_model(run / "model.pt", model, circuit=task, variant=name, seed=seed)
    evaluate(run, device="cpu")
    quiesce(run, device="cpu", log=lambda _: None)
    return run


def test_a_diverging_quiescence_names_its_condition_and_writes_nothing(tmp_path):
    """An untrained relu circuit with a large spectral radius explodes offline: the error names the condition."""
    spec = tiny_spec("head_direction", ["network.activation=relu", "network.spectral_radius=20", "network.dale=false"])
    run = tmp_path / "relu" / "seed0"
    save_model(run / "model.pt", build_circuit(spec)[0], circuit="hd", variant="relu", seed=0)
    evaluate(run, device="cpu")
    with pytest.raises(QuiescenceDiverged, match=r"condition 'trained': quiescent rates became non-finite by step"):
        quiesce(run, device="cpu", log=lambda _: None)
    assert not (run / "quiescence.nc").exists()
    # with the input scaled (awake, training noise) it explodes too: the scaled-input test says so
    steady = ["reactivation.noise_mode=absolute", "reactivation.noise_sd=0.0001"]
    awake_diverged = r"scaled-input test's rates became non-finite by step \d+ at input factor 1;"
    with pytest.raises(QuiescenceDiverged, match=awake_diverged):
        quiesce(run, device="cpu", overrides=["reactivation.duration_steps=2", "reactivation.burn_in_steps=1",
                                              "reactivation.input_scale_steps=400", *steady], log=lambda _: None)
    assert not (run / "quiescence.nc").exists()


@pytest.fixture(scope="module")
def pi_runs(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny path-integration circuits (noisy, noise-free), each evaluated and quiesced."""
    tmp = tmp_path_factory.mktemp("pi_runs")
    return {
        "noisy": _saved_run(tmp, "noisy", ["network.noise.recurrent_sd=0.2"]),
        "noise_free": _saved_run(tmp, "noise_free", ["network.noise.recurrent_sd=0"]),
    }


def test_quiescence_file_layout_and_waking_start(pi_runs, tmp_path):
    run = pi_runs["noise_free"]
    q, w = open_dataset(run / "quiescence.nc"), open_dataset(run / "waking.nc")
    assert list(q["condition"].values) == list(CONDITIONS)
    assert q["decoded_position"].dims == ("circuit", "variant", "seed", "condition", "trial", "time", "space")
    assert q.sizes["time"] == 50 and q.sizes["trial"] == 16
    assert q["time"].values[0] == pytest.approx(101 * 0.02)
    assert q["rates"].sizes["rate_time"] == 5 and q["rates"].sizes["rate_trial"] == 4
    simulated = dict(zip(CONDITIONS, q["simulated"].values.ravel().tolist()))
    assert simulated == {"trained": 1, "offline_noise": 1, "noise_off": 0, "untrained": 1, "uniform": 1}
    noise = dict(zip(CONDITIONS, q["noise_sd"].values.ravel()))
    assert noise["trained"] == 0 and noise["offline_noise"] == pytest.approx(0.01 * 2**0.5)
    assert math.isnan(noise["uniform"]) and math.isnan(noise["noise_off"])
    assert np.isnan(q["decoded_position"].sel(condition="noise_off").values).all()
    # the start of quiescent trial i is the start of held-out waking trial i: x_1 - dx_1 = x_0
    start = w["true_position"].isel(time=0) - w["displacement"].isel(time=0)
    np.testing.assert_allclose(
        q["start_position"].values.ravel(), start.transpose(..., "space").values.ravel(), atol=1e-5
    )
    uniform = q["decoded_position"].sel(condition="uniform").values
    assert np.abs(uniform).max() <= 1.1 and uniform.std() == pytest.approx(2.2 / math.sqrt(12), rel=0.05)
    # the noise-free (untrained, contracting) circuit settles: no offline variance after the burn-in
    assert q["position_variance"].sel(condition="trained").item() < 1e-8
    # the burn-in is kept: with no burn-in the same run gives the burn-in and the kept steps one after another
    burn = q["burn_in_decoded_position"]
    assert burn.sizes["burn_in_time"] == 100 and q["burn_in_time"].values[-1] == pytest.approx(100 * 0.02)
    assert np.isnan(burn.sel(condition="uniform").values).all()
    noisy, whole = pi_runs["noisy"], tmp_path / "whole.nc"
    quiesce(noisy, whole, overrides=["reactivation.burn_in_steps=0"], device="cpu", log=lambda _: None)
    qn, qw = open_dataset(noisy / "quiescence.nc"), open_dataset(whole)
    assert "burn_in_decoded_position" not in qw
    for condition in ("trained", "untrained"):
        joined = np.concatenate(
            [qn["burn_in_decoded_position"].sel(condition=condition).values,
             qn["decoded_position"].sel(condition=condition).values], axis=-2
        )
        np.testing.assert_array_equal(joined, qw["decoded_position"].sel(condition=condition).values)
    again = tmp_path / "again.nc"
    quiesce(run, again, overrides=["reactivation.seed=5"], device="cpu", log=lambda _: None)
    np.testing.assert_array_equal(
        open_dataset(again)["decoded_position"].sel(condition="trained").values,
        q["decoded_position"].sel(condition="trained").values,
    )


def test_reactivation_table_and_cli(pi_runs, tmp_path):
    runs = pi_runs
    out = tmp_path / "reactivation" / "seed0" / "reactivation.nc"
    code = main(["reactivation", *(f"--run={k}={v}" for k, v in runs.items()), "--out", str(out)])
    assert code == 0
    ds = open_dataset(out)
    assert list(ds["quiescent"].values) == [
        "noisy", "noisy+noise_off", "noise_free", "noise_free+offline_noise", "untrained", "uniform"
    ]
    assert list(ds["waking"].values) == ["noisy", "noise_free"]
    assert ds["kl"].dims == ("circuit", "variant", "seed", "quiescent", "waking")
    assert ds["variant"].values.tolist() == ["all"]
    names = ("kl", "coverage", "position_variance", "position_step", "waking_position_step", "occupancy", "mean_radius")
    for name in names:
        assert np.isfinite(ds[name].values).all(), name
    assert np.isnan(ds["pca_fraction"].sel(quiescent=["untrained", "uniform"]).values).all()
    assert ((ds["coverage"] >= 0) & (ds["coverage"] <= 1)).all()
    assert ds["position_variance"].sel(quiescent="noise_free").item() < 1e-8
    assert ds["position_variance"].sel(quiescent="uniform").item() == pytest.approx(2 * 2.2**2 / 12, rel=0.1)
    assert ds["occupancy"].sum(["x_bin", "y_bin"]).values == pytest.approx(1.0)
    assert ds.attrs["distribution_window_steps"] == ds.attrs["variance_window_steps"] == "101-150"
    # time course over the whole quiescence (150 steps, windows of 50: burn-in included), uniform after burn-in only
    course = ds["coverage_time_course"].squeeze()
    assert course.sizes["offline_window"] == 3 and ds["offline_window"].values.tolist() == pytest.approx([0, 1, 2])
    assert np.isfinite(course.sel(quiescent="noisy").values).all()
    assert np.isnan(course.sel(quiescent="uniform").values[:2]).all() and course.sel(quiescent="uniform")[2] > 0.5
    # the last window is the kept part, so its coverage is the table's
    assert course.sel(quiescent="noisy")[2].item() == pytest.approx(ds["coverage"].sel(quiescent="noisy",
                                                                                       waking="noisy").item())
    # distance from the first offline step: none for the uniform baseline; at the KL window's last step (150) the
    # time course's last value; the distance between independent waking positions is within the arena's diagonal
    displacement = ds["position_displacement"].squeeze()
    assert np.isnan(displacement.sel(quiescent="uniform").item())
    assert np.isfinite(displacement.drop_sel(quiescent="uniform").values).all()
    assert displacement.sel(quiescent="noisy").item() > 0
    distance_course = ds["position_displacement_time_course"].squeeze()
    np.testing.assert_allclose(distance_course.isel(offline_window=-1).values, displacement.values)
    radial = ds["radial_displacement"].squeeze()
    assert radial.dims == ("quiescent", "radius_bin") and ds["radius_bin"].attrs["units"] == "m"
    assert np.isnan(radial.sel(quiescent="uniform").values).all()  # no network, no flow
    assert np.isfinite(radial.drop_sel(quiescent="uniform").values).any(axis=1).all()
    pairs = ds["waking_position_pair_distance"].squeeze()
    assert ((pairs > 0.1) & (pairs < 2.2 * np.sqrt(2))).all()
    # seeds combine along the length-1 sweep dims
    other = ds.assign_coords(seed=[1])
    other.attrs["seed"] = 1
    both = combine([ds, other])
    assert both.sizes["seed"] == 2 and both["kl"].shape[-2:] == (6, 2)

    assert main(["reactivation", "--run", "noisy", "--out", str(out)]) == 2
    assert main(["reactivation", "--run", f"a={tmp_path / 'missing'}", "--out", str(out)]) == 2
    assert main(["quiesce", str(tmp_path / "missing")]) == 2
    assert main(["quiesce", str(runs["noisy"]), "--set", "reactivation.bogus=1"]) == 2


def test_a_noisy_circuit_is_also_run_offline_without_noise(pi_runs, tmp_path):
    """The noise_off condition: the noisy circuit offline with no noise at all, the same whatever the noise seed,
    compared with its own waking run as the noisy row is; a quiescence.nc written before it existed still reads."""
    run, reseeded = pi_runs["noisy"], tmp_path / "reseeded.nc"
    q = open_dataset(run / "quiescence.nc")
    assert q["noise_sd"].sel(condition="noise_off").item() == 0 and q["simulated"].sel(condition="noise_off") == 1
    quiesce(run, reseeded, overrides=["reactivation.seed=5"], device="cpu", log=lambda _: None)
    again = open_dataset(reseeded)
    off, noisy = (q["decoded_position"].sel(condition=c).values for c in ("noise_off", "trained"))
    np.testing.assert_array_equal(again["decoded_position"].sel(condition="noise_off").values, off)
    assert not np.array_equal(again["decoded_position"].sel(condition="trained").values, noisy)
    assert np.abs(off - noisy).max() > 1e-3  # the noise moves the trained condition away from the noise-free flow
    waking = open_dataset(run / "waking.nc")
    table = R.reactivation_dataset({"noisy": (waking, q)})
    assert str(table["quiescent_condition"].sel(quiescent="noisy+noise_off").item()) == "noise_off"
    assert R.row_own_waking(table, "noisy+noise_off") == "noisy"
    assert np.isfinite(table["kl"].sel(quiescent="noisy+noise_off").values).all()
    assert np.isfinite(table["pca_fraction"].sel(quiescent="noisy+noise_off").values).all()  # its own network
    older = R.reactivation_dataset({"noisy": (waking, q.drop_sel(condition="noise_off"))})
    assert list(older["quiescent"].values) == ["noisy", "untrained", "uniform"]
    np.testing.assert_array_equal(older["kl"].sel(quiescent="noisy").values, table["kl"].sel(quiescent="noisy").values)


def test_distribution_and_variance_windows_are_the_reference_protocol(pi_runs, tmp_path):
    """KL, coverage and the other distribution metrics read only reactivation.distribution_steps after the burn-in;
    the output variance only the steps after variance_burn_in_steps (the reference: KL on 1000 steps, variance after
    1000 of 2000): the windowed table equals one computed on a quiescence cut to the window by hand."""
    run, quiet = pi_runs["noisy"], tmp_path / "quiescence.nc"
    windows = ["reactivation.burn_in_steps=10", "reactivation.distribution_steps=40",
               "reactivation.variance_burn_in_steps=100"]  # fmt: skip
    quiesce(run, quiet, overrides=windows, device="cpu", log=lambda _: None)
    waking, q = open_dataset(run / "waking.nc"), open_dataset(quiet)
    rs = spec_from_json(q.attrs["spec_json"]).reactivation
    assert (rs.burn_in_steps, rs.distribution_steps, rs.variance_burn_in_steps) == (10, 40, 100)
    windowed = R.reactivation_dataset({"noisy": (waking, q)}, rs)
    unwindowed = rs.model_copy(update={"distribution_steps": None, "variance_burn_in_steps": None})
    cut = R.reactivation_dataset({"noisy": (waking, q.isel(time=slice(0, 40)))}, unwindowed)
    for name in ("kl", "coverage", "position_step", "mean_radius", "occupancy"):
        np.testing.assert_array_equal(windowed[name].values, cut[name].values, err_msg=name)
    whole = R.reactivation_dataset({"noisy": (waking, q)}, unwindowed)
    assert not np.array_equal(windowed["coverage"].values, whole["coverage"].values)
    decoded = q["decoded_position"].sel(condition="trained").squeeze().values  # steps 11-150
    variance = R.output_variance(decoded[:, 90:])
    assert windowed["position_variance"].sel(quiescent="noisy").item() == pytest.approx(variance, rel=1e-6)
    assert q["position_variance"].sel(condition="trained").item() == pytest.approx(variance, rel=1e-6)
    assert variance != pytest.approx(R.output_variance(decoded), rel=1e-3)
    assert windowed.attrs["distribution_window_steps"] == "11-50"
    assert windowed.attrs["variance_window_steps"] == "101-150"
    # a stored quiescence is re-windowed at the reactivation step: the fixture's (burn-in 100) with these windows
    # gives the same rows as the quiescence run with them (the uniform draws alone depend on the burn-in)
    rewindowed = R.reactivation_dataset({"noisy": (waking, open_dataset(run / "quiescence.nc"))}, rs)
    rows = ["noisy", "untrained"]
    for name in ("kl", "coverage", "position_variance", "position_step", "mean_radius"):
        np.testing.assert_array_equal(
            rewindowed[name].sel(quiescent=rows).values, windowed[name].sel(quiescent=rows).values, err_msg=name
        )
    # windows that do not fit are refused, naming the fields
    for bad, field in (("reactivation.distribution_steps=141", "distribution_steps"),
                       ("reactivation.variance_burn_in_steps=5", "variance_burn_in_steps"),
                       ("reactivation.variance_burn_in_steps=150", "variance_burn_in_steps")):  # fmt: skip
        with pytest.raises(SpecError, match=field):
            tiny_spec("path_integration", ["reactivation.burn_in_steps=10", bad])
    with pytest.raises(ValueError, match=r"steps 11-50 \(reactivation.burn_in_steps, reactivation.distribution_"):
        R.reactivation_dataset({"noisy": (waking, q.isel(time=slice(0, 30)))}, rs)
    old_file = q.drop_vars("burn_in_decoded_position")  # written before the burn-in was kept
    with pytest.raises(ValueError, match="not all in quiescence.nc, which holds 150 steps, 10 of them burn-in"):
        R.reactivation_dataset({"noisy": (waking, old_file)}, rs.model_copy(update={"burn_in_steps": 5}))


def test_reactivation_head_direction(tmp_path):
    runs = {
        "noisy": _saved_run(tmp_path, "noisy", ["network.noise.recurrent_sd=0.3"], task="head_direction"),
        "biased": _saved_run(tmp_path, "biased", ["task.turn_bias=counter_clockwise"], task="head_direction"),
    }
    loaded = {k: (open_dataset(v / "waking.nc"), open_dataset(v / "quiescence.nc")) for k, v in runs.items()}
    ds = R.reactivation_dataset(loaded)
    assert list(ds["quiescent"].values) == ["noisy", "noisy+noise_off", "biased", "biased+noise_off", "untrained",
                                            "uniform"]
    names = ("kl", "mean_resultant_length", "angular_velocity", "heading_variance", "heading_step", "heading_occupancy")
    for name in names:
        assert np.isfinite(ds[name].values).all(), name
    course = ds["mean_resultant_length_time_course"].squeeze()
    assert np.isfinite(course.sel(quiescent=["noisy", "biased", "untrained"]).values).all()
    assert course.sel(quiescent="noisy")[-1].item() == pytest.approx(
        ds["mean_resultant_length"].sel(quiescent="noisy").item()
    )
    sign_p = ds["angular_velocity_sign_p"].squeeze()
    assert ((sign_p >= 0) & (sign_p <= 1)).sel(quiescent=["noisy", "biased", "untrained"]).all()
    # without noise an untrained ring stands still: no trial turns either way, so the sign test is undefined
    assert ds["angular_velocity"].sel(quiescent="noisy+noise_off").item() == 0 and np.isnan(sign_p.sel(
        quiescent="noisy+noise_off").item())
    assert ((ds["heading_uniformity_p"] >= 0) & (ds["heading_uniformity_p"] <= 1)).all()
    assert np.isfinite(ds["heading_drift"].sel(quiescent="noisy").values).any()
    assert np.isnan(ds["heading_drift"].sel(quiescent="uniform").values).all()  # no network, no flow
    # wrapped distances from the start: at most pi; independent waking headings of an unbiased ring ~ pi / sqrt(3)
    displacement = ds["heading_displacement"].squeeze()
    networks = displacement.drop_sel(quiescent="uniform")
    assert ((networks > 0) & (networks <= np.pi)).all()
    assert np.isnan(displacement.sel(quiescent="uniform").item())
    assert ds["waking_heading_pair_distance"].sel(waking="noisy").item() == pytest.approx(np.pi / np.sqrt(3), rel=0.15)
    assert ds["heading_uniformity_p"].sel(quiescent="uniform").item() > 1e-3  # 16 independent uniform trials
    n_samples = 16 * 50  # R of n uniform headings is ~ sqrt(pi / 4n)
    assert ds["mean_resultant_length"].sel(quiescent="uniform").item() < 4 / math.sqrt(n_samples)
    with pytest.raises(ValueError, match="different runs"):
        R.reactivation_dataset({"noisy": (loaded["noisy"][0], loaded["biased"][1])})


@pytest.mark.slow
def test_reactivation_figures(pi_runs, tmp_path):
    """Every figure from combined summaries (two seeds); polar panels make this take several seconds."""
    from recircuit.analysis.reactivation_figures import make_reactivation_figures

    runs = {"noisy": _saved_run(tmp_path, "noisy", ["network.noise.recurrent_sd=0.3"], task="head_direction")}
    loaded = {k: (open_dataset(v / "waking.nc"), open_dataset(v / "quiescence.nc")) for k, v in runs.items()}
    ds = R.reactivation_dataset(loaded)
    summary = tmp_path / "summary"
    summary.mkdir()
    other = ds.assign_coords(seed=[1])
    other.attrs["seed"] = 1
    combine([ds, other]).to_netcdf(summary / "reactivation.nc", engine="h5netcdf")
    loaded["noisy"][1].to_netcdf(summary / "quiescence.nc", engine="h5netcdf")
    pi = R.reactivation_dataset({k: (open_dataset(v / "waking.nc"), open_dataset(v / "quiescence.nc"))
                                 for k, v in pi_runs.items()})
    pi.to_netcdf(summary / "pi_reactivation.nc", engine="h5netcdf")
    paths = make_reactivation_figures(summary, tmp_path / "figures")
    names = {p.name for p in paths}
    assert {"reactivation_head_direction_kl.png", "reactivation_head_direction_headings.pdf",
            "reactivation_head_direction_drift.png", "reactivation_path_integration_radial_displacement.png",
            "reactivation_path_integration_occupancy.png"} <= names
    assert "reactivation_path_integration_drift.png" not in names  # the ring's drift field is for headings only
    assert "reactivation_head_direction_trajectories.png" in names
    assert "reactivation_head_direction_time_course.png" in names
    assert all(p.stat().st_size > 1000 for p in paths)
    with pytest.raises(FileNotFoundError):
        make_reactivation_figures(tmp_path / "nothing", tmp_path / "figures")


@pytest.mark.slow
def test_trained_noisy_and_noise_free_end_to_end(tmp_path):
    from recircuit.learning.train import train

    runs = {}
    for name, sd in (("noisy", 0.05), ("noise_free", 0.0)):
        spec = tiny_spec(extra=[f"network.noise.recurrent_sd={sd}", "training.steps=30", "training.log_every_steps=10"])
        run = tmp_path / name
        train(spec, run, circuit="pi", variant=name, log=lambda _: None)
        evaluate(run, device="cpu")
        quiesce(run, device="cpu", log=lambda _: None)
        runs[name] = run
    out = R.compute_reactivation(runs, tmp_path / "reactivation.nc")
    ds = open_dataset(out)
    assert ds.sizes["quiescent"] == 6 and ds.sizes["waking"] == 2
    for name in ("kl", "coverage", "position_variance", "position_step", "mean_radius"):
        assert np.isfinite(ds[name].values).all(), name
    assert np.isfinite(ds["pca_fraction"].sel(quiescent=["noisy", "noise_free+offline_noise"]).values).all()
    assert ds["position_variance"].sel(quiescent="noise_free").item() < 1e-6
    assert ds["position_step"].sel(quiescent="noise_free").item() < 1e-4
    assert isinstance(ds["kl"], xr.DataArray)


def test_reactivation_report_counts_the_seeds_where_each_claim_holds():
    import xarray as xr

    from recircuit.analysis.reactivation_report import report, report_rows

    quiescent = ["noisy", "noise_free", "biased", "untrained", "uniform"]
    waking = ["noisy", "noise_free", "biased"]
    kl = np.ones((2, 1, 3, len(quiescent), len(waking)))
    q, w = quiescent.index, waking.index
    kl[:, 0, :, q("noisy"), w("noisy")] = 0.5
    kl[:, 0, :, q("noise_free"), w("noisy")] = [2.0, 2.0, 0.1]  # noisy below noise-free in seeds 0 and 1 only
    kl[:, 0, :, q("untrained"), w("noisy")] = 3.0
    kl[:, 0, :, q("biased"), w("biased")] = 0.2
    kl[:, 0, :, q("biased"), w("noisy")] = 0.4
    dims = ("circuit", "variant", "seed", "quiescent")
    heading_variance = np.full((2, 1, 3, len(quiescent)), np.nan)
    heading_variance[1] = 1e-4
    resultant = np.full((2, 1, 3, len(quiescent)), np.nan)
    resultant[1, 0, :, q("noisy")] = [0.05, 0.2, 0.05]
    velocity = np.full((2, 1, 3, len(quiescent)), np.nan)
    velocity[1, 0, :, q("biased")] = [1.0, -1.0, 2.0]
    sign_p = np.full((2, 1, 3, len(quiescent)), np.nan)
    sign_p[1, 0, :, q("biased")] = [0.3, 1e-9, 1e-6]  # seed 0 drifts counter-clockwise by chance, seed 1 clockwise
    uniformity_p = np.full((2, 1, 3, len(quiescent)), np.nan)
    uniformity_p[1, 0, :, q("noisy")] = [0.6, 1e-5, 0.01]
    ds = xr.Dataset(
        {
            "kl": (dims + ("waking",), kl),
            "coverage": (dims + ("waking",), np.full(kl.shape, 0.7)),
            "position_variance": (dims, np.where(np.isnan(heading_variance), 0.01, np.nan)),
            "heading_variance": (dims, heading_variance),
            "mean_resultant_length": (dims, resultant),
            "angular_velocity": (dims, velocity),
            "angular_velocity_sign_p": (dims, sign_p),
            "heading_uniformity_p": (dims, uniformity_p),
        },
        coords={"circuit": ["pi", "hd"], "variant": ["all"], "seed": [0, 1, 2], "quiescent": quiescent,
                "waking": waking},
    )
    rows = {(r["circuit"], r["claim"]): (r["holds"], r["seeds"], r["value"]) for r in report_rows(ds)}
    assert rows[("pi", "KL(noisy || noisy awake) < KL(noise_free || noisy awake)")][:2] == (2, 3)
    assert rows[("pi", "KL(noisy || noisy awake) < KL(untrained || noisy awake)")][:2] == (3, 3)
    assert rows[("pi", "KL(biased || biased awake) < KL(biased || noisy awake)")][:2] == (3, 3)
    assert rows[("pi", "coverage of noisy awake bins by noisy offline >= 0.5")][:2] == (3, 3)
    assert rows[("pi", "noise-free offline output variance < 0.001")][:2] == (0, 3)  # 0.01 m^2: not near zero
    assert rows[("hd", "noise-free offline output variance < 0.001")][:2] == (3, 3)
    assert rows[("hd", "noisy offline mean resultant length < 0.1")] == (2, 3, 0.05)
    assert rows[("hd", "noisy offline headings uniform over trials (Rayleigh test p > 0.05)")] == (1, 3, 0.01)
    assert rows[("hd", "biased (counter-clockwise) offline angular velocity > 0 rad/s")][:2] == (2, 3)
    # seed 1 counts as p = 1 (clockwise), so the median p is seed 0's
    assert rows[("hd", "biased drift counter-clockwise and significant (sign test p < 0.05)")] == (1, 3, 0.3)
    assert not any(c == "pi" and "resultant" in claim for c, claim in rows)  # heading claims only for heading
    assert not any("unconstrained" in claim for _, claim in rows)  # no such variant in this sweep
    assert "2/3 seeds" in report(ds) and "quiescent steps" not in report(ds)
    ds.attrs.update(distribution_window_steps="101-1000", variance_window_steps="1001-2000")
    assert report(ds).endswith("distribution metrics 101-1000, output variance 1001-2000")


def test_reactivation_report_gives_how_far_offline_trajectories_get_from_their_starts():
    import xarray as xr

    from recircuit.analysis.reactivation_report import mixing_rows, report

    quiescent = ["noisy", "noise_free", "noise_free+offline_noise", "untrained", "uniform"]
    waking = ["noisy", "noise_free"]
    dims = ("circuit", "variant", "seed", "quiescent")
    displacement = np.array([[0.2, 0.4, 0.6], [0.01, 0.01, 0.02], [0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [np.nan] * 3]).T
    ds = xr.Dataset(
        {
            "kl": (dims + ("waking",), np.ones((1, 1, 3, 5, 2))),
            "position_variance": (dims, np.full((1, 1, 3, 5), 0.01)),
            "position_displacement": (dims, displacement[None, None]),
            "waking_position_pair_distance": (("circuit", "variant", "seed", "waking"), np.full((1, 1, 3, 2), 0.8)),
        },
        coords={
            "circuit": ["pi"], "variant": ["all"], "seed": [0, 1, 2], "quiescent": quiescent, "waking": waking,
            "quiescent_run": ("quiescent", ["noisy", "noise_free", "noise_free", "noisy", "noisy"]),
            "quiescent_condition": ("quiescent", ["trained", "trained", "offline_noise", "untrained", "uniform"]),
        },
    )
    ds["waking_position_pair_distance"].loc[{"waking": "noise_free"}] = 0.1  # each row against its own run's waking
    rows = {q: ratio for _, q, ratio in mixing_rows(ds)}
    assert rows == pytest.approx({"noisy": 0.5, "noise_free": 0.1, "noise_free+offline_noise": 1.0, "untrained": 1.25})
    assert "pi: noisy 0.50, noise_free 0.10, noise_free+offline_noise 1.00, untrained 1.25" in report(ds)


def test_reactivation_report_checks_the_unconstrained_pair_like_the_dale_pair():
    import xarray as xr

    from recircuit.analysis.reactivation_report import report_rows

    quiescent = ["unconstrained", "unconstrained_noise_free", "untrained", "uniform"]
    waking = ["unconstrained", "unconstrained_noise_free"]
    kl = np.ones((1, 1, 2, len(quiescent), len(waking)))
    kl[0, 0, :, 0, 0] = 0.5
    kl[0, 0, :, 1, 0] = [0.8, 0.3]  # the unconstrained noisy circuit is closer in seed 0 only
    variance = np.full((1, 1, 2, len(quiescent)), 0.01)
    variance[0, 0, :, 1] = [1e-5, 2e-3]
    dims = ("circuit", "variant", "seed", "quiescent")
    ds = xr.Dataset(
        {"kl": (dims + ("waking",), kl), "coverage": (dims + ("waking",), np.full(kl.shape, 0.4)),
         "position_variance": (dims, variance)},
        coords={"circuit": ["pi"], "variant": ["all"], "seed": [0, 1], "quiescent": quiescent, "waking": waking},
    )
    rows = {r["claim"]: (r["holds"], r["seeds"]) for r in report_rows(ds)}
    pair = "KL(unconstrained || unconstrained awake) < KL(unconstrained_noise_free || unconstrained awake)"
    assert rows[pair] == (1, 2)
    assert rows["unconstrained noise-free offline output variance < 0.001"] == (1, 2)
    assert rows["coverage of unconstrained awake bins by unconstrained offline >= 0.5"] == (0, 2)
    assert not any(claim.startswith("KL(noisy") for claim in rows)  # no Dale variants in this sweep


def test_reactivation_report_checks_the_biased_circuit_against_its_noise_free_twin():
    import xarray as xr

    from recircuit.analysis.reactivation_report import report_rows

    quiescent = ["noisy", "biased", "biased_noise_free", "biased_noise_free+offline_noise", "untrained", "uniform"]
    waking = ["noisy", "biased", "biased_noise_free"]
    kl = np.ones((1, 1, 3, len(quiescent), len(waking)))
    q, w = quiescent.index, waking.index
    kl[0, 0, :, q("biased"), w("biased")] = 1.2
    kl[0, 0, :, q("biased"), w("noisy")] = 2.2
    kl[0, 0, :, q("biased_noise_free"), w("biased")] = [1.3, 1.1, 1.25]  # noise helps in seeds 0 and 2 only
    dims = ("circuit", "variant", "seed", "quiescent")
    ds = xr.Dataset(
        {"kl": (dims + ("waking",), kl), "position_variance": (dims, np.full((1, 1, 3, len(quiescent)), 0.01))},
        coords={"circuit": ["pi"], "variant": ["all"], "seed": [0, 1, 2], "quiescent": quiescent, "waking": waking},
    )
    rows = {r["claim"]: (r["holds"], r["seeds"], r["value"], r["reference"]) for r in report_rows(ds)}
    assert rows["KL(biased || biased awake) < KL(biased || noisy awake)"][:2] == (3, 3)
    assert rows["KL(biased || biased awake) < KL(biased_noise_free || biased awake)"] == (2, 3, 1.2, 1.25)
    assert rows["biased noise-free offline output variance < 0.001"][:2] == (0, 3)  # 0.01 m^2 is not still


def test_reactivation_report_refuses_what_is_not_a_reactivation_summary(tmp_path, capsys):
    import xarray as xr

    from recircuit.cli import main

    assert main(["reactivation-report", str(tmp_path / "missing.nc")]) == 2
    assert "no reactivation summary" in capsys.readouterr().err
    (tmp_path / "text.nc").write_text("not netcdf")
    assert main(["reactivation-report", str(tmp_path / "text.nc")]) == 2
    assert "not a netCDF dataset" in capsys.readouterr().err
    xr.Dataset({"loss": ("step", np.zeros(3))}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    assert main(["reactivation-report", str(tmp_path / "other.nc")]) == 2
    assert "not a reactivation summary (lacks circuit, kl, quiescent, waking)" in capsys.readouterr().err

"""Offline-reactivation metrics: quiescent decoded outputs against waking ones (Krishna et al. ICLR 2024).

Main metric: KL(Q_quiescent || P_waking) between densities of decoded positions (2-D) or headings (ring),
estimated by Monte Carlo as in the reference: n points drawn from Q, ``mean log(q(x)/p(x))`` with the ratio
clipped to [1e-7, 1e7]. Densities are Gaussian KDEs (scipy.stats.gaussian_kde, Scott bandwidth), except the
uniform baseline, whose exact density is used: 1/L^2 on the L x L arena (the joint density; the reference code
uses 1/L per axis, which overstates that KL by log L), 1/(2 pi) on the ring.

Headings use a wrapped-Gaussian KDE: the sample is rotated so its circular mean sits at 0, a 1-D gaussian_kde
is fitted there (so Scott's bandwidth sees the spread about the mean, not an artificial split at +-pi), and the
density at theta sums the kernel images at d, d - 2 pi and d + 2 pi (d = theta - mean wrapped to [-pi, pi); the
images are evaluated only within 10 bandwidths of the seam, where they can matter).
This is a KDE with a wrapped-normal kernel, which integrates to 1 on the circle; further images add less than
exp(-(2 pi)^2 / (2 h^2)) for bandwidths h < 1 rad. A von Mises kernel would do as well; the wrapped Gaussian keeps
scipy's bandwidth rule and sampler.

Every KDE is fitted on at most ``reactivation.kde_max_points`` points (default 20 000, the size of the waking
sample), so the quiescent and the waking KDEs get the same Scott factor: equal smoothing on both sides of the
ratio removes the positive bias a sharper Q would add (the reference fits Q on all 200 x 1000 points).

Windows, as in the reference, which measures KL on 1000 quiescent steps and the output variance after 1000 of 2000:
the distribution metrics (KL, coverage, occupancy, step size, radius, heading uniformity, angular velocity) use the
``reactivation.distribution_steps`` steps after ``burn_in_steps``; the output variance uses the steps after
``variance_burn_in_steps``; the time courses and the heading drift field cover every step from input removal.

Mixing: the quiescence starts from the waking trials' start states, so a circuit that does not move offline has the
distribution of its starts, which for uniform starts is close to the waking occupancy. The RMS distance from the first
offline step (``*_displacement``), against the RMS distance between two independent waking samples
(``waking_*_pair_distance``), says whether the offline trajectories have had time to forget their starts; until they
have, the KL ordering compares starts more than circuits.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import xarray as xr
from scipy.stats import binomtest, gaussian_kde

from recircuit.analysis.scaled_input import variable_names as scaled_input_names
from recircuit.learning.evaluate import WAKING_FILE
from recircuit.results import SWEEP_DIMS, label, open_dataset, provenance, save_dataset, with_sweep_dims
from recircuit.spec import spec_from_json, with_section_overrides
from recircuit.spec_sections.reactivation import ReactivationSpec


QUIESCENCE_FILE = "quiescence.nc"  # written by recircuit.analysis.quiescence, read here
# its conditions, in file order: the run's own circuit (trained; the controls with noise only offline, or with none
# offline), an untrained circuit, the analytic baseline
SAME_NETWORK_CONDITIONS: tuple[str, ...] = ("trained", "offline_noise", "noise_off")
NETWORK_CONDITIONS: tuple[str, ...] = (*SAME_NETWORK_CONDITIONS, "untrained")
CONDITIONS: tuple[str, ...] = (*NETWORK_CONDITIONS, "uniform")

REACTIVATION_FILE = "reactivation.nc"
RATIO_CLIP = (1e-7, 1e7)
TWO_PI = 2 * math.pi
DRIFT_MIN_STEPS = 20  # steps a heading bin needs for its drift estimate
RADIAL_MIN_TRIALS = 5  # trials a distance-from-centre bin needs for its mean displacement


def wrap(theta: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi), rad."""
    return np.remainder(np.asarray(theta) + math.pi, TWO_PI) - math.pi


def _rng(seed: int, *key: str) -> np.random.Generator:
    """A numpy generator that depends only on the seed and the key (adding a run never changes another row)."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in key)])


# ------------------------------------------------------------------------------------------------------ densities
class Density(Protocol):
    """A density on R^d (or the ring) that can be sampled: points are (n, d) arrays."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray: ...
    def pdf(self, points: np.ndarray) -> np.ndarray: ...


def _prepare(points: np.ndarray, rng: np.random.Generator, max_points: int | None, floor_sd: float) -> np.ndarray:
    """Finite rows, subsampled to max_points; jittered (SD floor_sd) if the sample covariance is degenerate."""
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        raise ValueError("cannot fit a density to an empty (or all-NaN) sample")
    if max_points is not None and len(points) > max_points:
        points = points[rng.choice(len(points), max_points, replace=False)]
    d = points.shape[1]
    degenerate = len(points) <= d or np.linalg.eigvalsh(np.atleast_2d(np.cov(points.T))).min() < floor_sd**2
    if degenerate:
        points = points + rng.normal(0.0, floor_sd, points.shape)
    return points


class PlanarKde:
    """Gaussian KDE (Scott bandwidth) of points (n, d) in the plane, m."""

    def __init__(self, points: np.ndarray, rng: np.random.Generator, max_points: int | None = None, floor_sd=0.005):
        self.kde = gaussian_kde(_prepare(np.asarray(points, dtype=np.float64), rng, max_points, floor_sd).T)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.kde.resample(n, seed=rng).T

    def pdf(self, points: np.ndarray) -> np.ndarray:
        return self.kde.pdf(np.asarray(points).T)


class CircularKde:
    """Wrapped-Gaussian KDE of angles (n, 1) on the ring, rad (see the module docstring)."""

    def __init__(self, angles: np.ndarray, rng: np.random.Generator, max_points: int | None = None, floor_sd=0.005):
        angles = np.asarray(angles, dtype=np.float64).reshape(-1)
        angles = angles[np.isfinite(angles)]
        if len(angles) == 0:
            raise ValueError("cannot fit a density to an empty (or all-NaN) sample")
        self.mean = float(circular_mean(angles))
        centred = wrap(angles - self.mean)[:, None]
        self.kde = gaussian_kde(_prepare(centred, rng, max_points, floor_sd).T)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return wrap(self.kde.resample(n, seed=rng)[0] + self.mean)[:, None]

    def pdf(self, angles: np.ndarray) -> np.ndarray:
        d = wrap(np.asarray(angles).reshape(-1) - self.mean)
        density = self.kde.pdf(d[None, :])
        reach = 10.0 * math.sqrt(float(self.kde.covariance[0, 0]))  # kernel terms beyond 10 SD are < 1e-21
        for shift, near in ((TWO_PI, d < -math.pi + reach), (-TWO_PI, d > math.pi - reach)):
            if near.any():  # the image at d + shift can only reach data in [-pi, pi) from near the seam
                density[near] += self.kde.pdf((d[near] + shift)[None, :])
        return density


class UniformSquare:
    """Uniform density 1/L^2 on the square [-L/2, L/2]^2 (the joint density), points (n, 2) in m."""

    def __init__(self, side_m: float):
        self.side = float(side_m)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-self.side / 2, self.side / 2, size=(n, 2))

    def pdf(self, points: np.ndarray) -> np.ndarray:
        inside = (np.abs(np.asarray(points)) <= self.side / 2).all(axis=1)
        return np.where(inside, 1.0 / self.side**2, 0.0)


class UniformCircle:
    """Uniform density 1/(2 pi) on the ring, angles (n, 1) in rad."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-math.pi, math.pi, size=(n, 1))

    def pdf(self, angles: np.ndarray) -> np.ndarray:
        return np.full(np.asarray(angles).reshape(-1).shape, 1.0 / TWO_PI)


def kl_divergences(
    q: Density, ps: Sequence[Density], n: int, rng: np.random.Generator, clip: tuple[float, float] = RATIO_CLIP
) -> np.ndarray:
    """Monte-Carlo KL(Q || P) in nats for each P, from the same n samples of Q; q/p clipped to ``clip``."""
    x = q.sample(n, rng)
    qx = q.pdf(x)
    out = np.empty(len(ps))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for j, p in enumerate(ps):
            ratio = qx / p.pdf(x)  # p = 0 gives inf, clipped to the upper bound as in the reference
            out[j] = np.log(np.clip(np.nan_to_num(ratio, nan=clip[1], posinf=clip[1]), *clip)).mean()
    return out


def kl_divergence(q: Density, p: Density, n: int, rng: np.random.Generator) -> float:
    """Monte-Carlo KL(Q || P) in nats (see kl_divergences)."""
    return float(kl_divergences(q, [p], n, rng)[0])


# -------------------------------------------------------------------------------------------------------- metrics
def spatial_edges(arena_m: float, margin_m: float, bin_m: float) -> np.ndarray:
    """Edges (m) of square bins of side bin_m covering the arena plus margin, centred on 0."""
    n_bins = math.ceil((arena_m + 2 * margin_m) / bin_m - 1e-9)
    return (np.arange(n_bins + 1) - n_bins / 2) * bin_m


def heading_edges(bin_deg: float) -> np.ndarray:
    """Edges (rad) of equal heading bins on [-pi, pi] (bin width as close to bin_deg as divides 360)."""
    return np.linspace(-math.pi, math.pi, max(1, round(360.0 / bin_deg)) + 1)


def spatial_counts(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Visit counts (x_bin, y_bin) of points (..., 2); points beyond the edges count in the edge bins."""
    flat = np.asarray(points).reshape(-1, 2)
    flat = np.clip(flat[np.isfinite(flat).all(1)], edges[0], edges[-1])
    counts, _, _ = np.histogram2d(flat[:, 0], flat[:, 1], bins=[edges, edges])
    return counts


def heading_counts(angles: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Visit counts per heading bin of angles (any shape), rad."""
    flat = np.asarray(angles).reshape(-1)
    counts, _ = np.histogram(wrap(flat[np.isfinite(flat)]), bins=edges)
    return counts


def coverage(offline_counts: np.ndarray, awake_counts: np.ndarray) -> float:
    """Fraction of the bins visited awake that are also visited offline (NaN if none visited awake)."""
    awake = awake_counts > 0
    if not awake.any():
        return float("nan")
    return float((awake & (offline_counts > 0)).sum() / awake.sum())


def output_variance(trajectories: np.ndarray) -> float:
    """Trace of the covariance over time (ddof 1) of each trajectory (trials, time, d), mean over trials (units^2)."""
    x = np.asarray(trajectories, dtype=np.float64)
    return float(x.var(axis=1, ddof=1).sum(axis=-1).mean())


def resultant_length(angles: np.ndarray, axis=None) -> np.ndarray:
    """|mean of exp(i theta)| along ``axis`` (1 = all equal, 0 = balanced)."""
    a = np.asarray(angles, dtype=np.float64)
    return np.hypot(np.cos(a).mean(axis=axis), np.sin(a).mean(axis=axis))


def circular_mean(angles: np.ndarray, axis=None) -> np.ndarray:
    """Circular mean direction along ``axis``, rad: the angle of the mean of exp(i theta)."""
    a = np.asarray(angles, dtype=np.float64)
    return np.arctan2(np.sin(a).mean(axis=axis), np.cos(a).mean(axis=axis))


def mean_resultant_length(angles: np.ndarray) -> float:
    """Mean resultant length of all angles pooled (near 0 for headings uniform on the ring)."""
    return float(resultant_length(np.asarray(angles).reshape(-1)))


def circular_output_variance(headings: np.ndarray, min_length: float = 1e-12) -> float:
    """Wrapped-normal variance -2 ln R of each trajectory (trials, time), mean over trials, rad^2.

    Equals the linear variance for concentrated headings; R is clipped at ``min_length`` (at most 55 rad^2).
    """
    r = resultant_length(headings, axis=1)
    return float((-2.0 * np.log(np.clip(r, min_length, 1.0))).mean())


def rayleigh_p(angles: np.ndarray) -> float:
    """p-value of the Rayleigh test of uniformity on the circle for independent angles (rad).

    Zar (2010, eq. 27.4): p = exp(sqrt(1 + 4n + 4(n^2 - R_n^2)) - (1 + 2n)), R_n = n * mean resultant length.
    """
    a = np.asarray(angles, dtype=np.float64).reshape(-1)
    n = a.size
    if n == 0:
        return float("nan")
    r_n = n * float(resultant_length(a))
    return float(min(1.0, np.exp(np.sqrt(1.0 + 4.0 * n + 4.0 * (n * n - r_n * r_n)) - (1.0 + 2.0 * n))))


def trial_mean_headings(headings: np.ndarray) -> np.ndarray:
    """Circular mean of each trial's headings (trials, time), rad: one independent angle per trial."""
    return circular_mean(headings, axis=1)


def mean_step_size(trajectories: np.ndarray, circular: bool = False) -> float:
    """Mean distance between consecutive decoded outputs (trials, time, d): m, or |wrapped step| in rad."""
    steps = np.diff(np.asarray(trajectories, dtype=np.float64), axis=1)
    if circular:
        return float(np.abs(wrap(steps)).sum(-1).mean())
    return float(np.linalg.norm(steps, axis=-1).mean())


def displacement_from_start(trajectories: np.ndarray, circular: bool = False) -> np.ndarray:
    """RMS over trials of each decoded output's distance from the trial's first one, per step (time,): m for
    positions (trials, time, 2); rad for headings (trials, time, 1), the wrapped difference (at most pi)."""
    x = np.asarray(trajectories, dtype=np.float64)
    if circular:
        distance = np.abs(wrap(x[..., 0] - x[:, :1, 0]))
    else:
        distance = np.linalg.norm(x - x[:, :1], axis=-1)
    return np.sqrt(np.mean(distance**2, axis=0))


def pair_distance(
    points: np.ndarray, rng: np.random.Generator, circular: bool = False, n_pairs: int = 100_000
) -> float:
    """RMS distance between two independent draws from points (..., d): how far from its start a trajectory gets
    once it has forgotten the start, if it samples their distribution. Positions: sqrt(2 trace cov), exact, m;
    headings: the wrapped difference over ``n_pairs`` random pairs, rad (pi / sqrt 3 for a uniform ring)."""
    if circular:
        angles = np.asarray(points, dtype=np.float64).reshape(-1)
        angles = angles[np.isfinite(angles)]
        first, second = rng.choice(angles, n_pairs), rng.choice(angles, n_pairs)
        return float(np.sqrt(np.mean(wrap(first - second) ** 2)))
    flat = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    flat = flat[np.isfinite(flat).all(axis=1)]
    return float(np.sqrt(2 * flat.var(axis=0).sum()))


def mean_angular_velocity(headings: np.ndarray, dt_s: float) -> float:
    """Mean wrapped heading change per second of headings (trials, time), rad/s (> 0: counter-clockwise)."""
    return float(wrap(np.diff(np.asarray(headings, dtype=np.float64), axis=1)).mean() / dt_s)


def heading_drift(
    headings: np.ndarray, edges: np.ndarray, dt_s: float, min_steps: int = DRIFT_MIN_STEPS
) -> np.ndarray:
    """The ring's drift field: mean wrapped heading change per second of headings (trials, time), rad/s, binned by
    the heading each step starts from (``edges``, rad). Attracting headings are where it crosses zero downwards.
    NaN in bins with fewer than ``min_steps`` steps; steps with a NaN end are left out."""
    h = np.asarray(headings, dtype=np.float64)
    start, step = h[:, :-1].reshape(-1), wrap(np.diff(h, axis=1)).reshape(-1)
    keep = np.isfinite(start) & np.isfinite(step)
    start, step = wrap(start[keep]), step[keep]
    counts, _ = np.histogram(start, bins=edges)
    sums, _ = np.histogram(start, bins=edges, weights=step)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts >= min_steps, sums / counts / dt_s, np.nan)


def radius_edges(arena_m: float, margin_m: float, bin_m: float) -> np.ndarray:
    """Edges (m) of distance-from-centre bins of width bin_m, from 0 to the corner of the arena plus margin."""
    corner = math.sqrt(2) * (arena_m / 2 + margin_m)
    return np.arange(math.ceil(corner / bin_m - 1e-9) + 1) * bin_m


def radial_displacement(
    positions: np.ndarray, edges: np.ndarray, end_step: int, min_trials: int = RADIAL_MIN_TRIALS
) -> np.ndarray:
    """Where the offline flow goes, by where it starts: the mean outward component of each trial's displacement from
    its first position (positions (trials, time, 2)) to its position at ``end_step``, projected on the direction
    from the arena centre to the start, m, binned by the start's distance from the centre (``edges``, m).
    0: the trials stayed where they started; > 0: outward; -(distance of the start): the end has forgotten the start
    (a sampler of a distribution centred on the arena). Over a whole trial, unlike per step, the top-k decoder's
    flicker between neighbouring cells adds at most a cell spacing. NaN in bins with fewer than ``min_trials``
    trials, or where the start or the end is NaN or the start is at the centre."""
    x = np.asarray(positions, dtype=np.float64)
    start, end = x[:, 0], x[:, end_step]
    radius = np.linalg.norm(start, axis=1)
    keep = np.isfinite(end).all(axis=1) & np.isfinite(radius) & (radius > 0)
    start, end, radius = start[keep], end[keep], radius[keep]
    outward = np.einsum("nd,nd->n", end - start, start) / radius
    counts, _ = np.histogram(radius, bins=edges)
    sums, _ = np.histogram(radius, bins=edges, weights=outward)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts >= min_trials, sums / counts, np.nan)


def angular_velocity_sign_p(headings: np.ndarray) -> float:
    """Two-sided sign test (binomial) of the per-trial mean heading change of headings (trials, time)."""
    per_trial = wrap(np.diff(np.asarray(headings, dtype=np.float64), axis=1)).mean(axis=1)
    per_trial = per_trial[per_trial != 0]
    if len(per_trial) == 0:
        return float("nan")
    return float(binomtest(int((per_trial > 0).sum()), len(per_trial)).pvalue)


def mean_radius(points: np.ndarray) -> float:
    """Mean distance from the arena centre of points (..., 2), m."""
    return float(np.linalg.norm(np.asarray(points, dtype=np.float64).reshape(-1, 2), axis=1).mean())


def pca_fraction(waking_states: np.ndarray, offline_states: np.ndarray, k: int) -> float:
    """Fraction of the offline variance (about its own mean) in the top-k principal components of waking states.

    waking_states (n, units) define the PCs (centred on the waking mean); offline_states (m, units). 1 when the
    offline states move only within the waking top-k subspace; NaN when the offline states do not vary.
    """
    w = np.asarray(waking_states, dtype=np.float64)
    o = np.asarray(offline_states, dtype=np.float64)
    _, _, vt = np.linalg.svd(w - w.mean(0), full_matrices=False)
    o = o - o.mean(0)
    total = float((o**2).sum())
    if total <= 0:
        return float("nan")
    return float(((o @ vt[:k].T) ** 2).sum() / total)


# ----------------------------------------------------------------------------------------- the reactivation table
@dataclass(frozen=True)
class _Row:
    label: str
    run: str
    variant: str
    condition: str
    decoded: np.ndarray  # (trials, time, d): the distribution metrics' window after the burn-in
    variance_decoded: np.ndarray  # (trials, time, d): the output variance's window
    whole: np.ndarray  # (trials, time, d): every step from input removal (NaN where not stored)
    rates: np.ndarray | None  # (samples, units) offline hidden states, or None
    waking_rates: np.ndarray | None  # (samples, units) waking hidden states of the same circuit, or None
    noise_sd: float


def _states(rates: xr.DataArray) -> np.ndarray:
    """Hidden rates (..., unit) as samples (n, units)."""
    return rates.values.reshape(-1, rates.shape[-1])


def _self_pca_fraction(states: np.ndarray, k: int) -> float:
    return pca_fraction(states, states, k) if states.size else float("nan")


def _fit_density(decoded: np.ndarray, circular: bool, rs: ReactivationSpec, *key: str) -> Density:
    """KDE of decoded outputs (..., d): wrapped on the ring for headings, planar for positions."""
    kde = CircularKde if circular else PlanarKde
    points = decoded.reshape(-1, 1 if circular else 2)
    return kde(points, _rng(rs.analysis_seed, "kde", *key), rs.kde_max_points, rs.kde_floor_sd)


def _counts(decoded: np.ndarray, circular: bool, edges: np.ndarray) -> np.ndarray:
    return heading_counts(decoded[..., 0], edges) if circular else spatial_counts(decoded, edges)


def _squeeze_sweep(ds: xr.Dataset) -> xr.Dataset:
    return ds.isel({d: 0 for d in SWEEP_DIMS if d in ds.dims})


def _decoded(ds: xr.Dataset, kind: str, prefix: str = "") -> np.ndarray:
    """Decoded outputs as (…, time, d): positions (m) or headings (rad, d = 1); ``prefix`` "burn_in_" reads those
    of a quiescence's burn-in."""
    if kind == "path_integration":
        return ds[f"{prefix}decoded_position"].values
    return ds[f"{prefix}decoded_heading"].values[..., None]


def _burn_in_decoded(qc: xr.Dataset, kind: str, decoded: np.ndarray) -> np.ndarray:
    """Decoded outputs of the burn-in steps of one condition, (trials, burn-in, d); all-NaN when the file has none
    (files written before they were kept)."""
    if any(name.startswith("burn_in_decoded_") for name in qc.data_vars):
        return _decoded(qc, kind, "burn_in_")
    burn_in = int(qc.attrs.get("burn_in_steps", 0))
    return np.full((decoded.shape[0], burn_in, decoded.shape[-1]), np.nan, dtype=decoded.dtype)


def _in_window(
    whole: np.ndarray, kept: np.ndarray, window: slice, condition: str, row_label: str, field: str
) -> np.ndarray:
    """The steps of ``window`` (counted from input removal) of one quiescent row (trials, time, d). ``whole`` holds
    every step (NaN where quiescence.nc kept none); the uniform baseline, whose draws are independent in time and
    exist after the quiescence's burn-in only, gives as many steps from ``kept`` as it has, up to the window's."""
    n_steps = whole.shape[1]
    expected = len(range(n_steps)[window])
    if condition == "uniform":
        return kept[:, : max(expected, 1)]
    part = whole[:, window]
    complete = (window.stop is None or window.stop <= n_steps) and expected > 0
    if not complete or np.isnan(part).any():
        stop = n_steps if window.stop is None else window.stop
        raise ValueError(
            f"quiescent row {row_label}: steps {window.start + 1}-{stop} (reactivation.burn_in_steps, "
            f"reactivation.{field}) are not all in quiescence.nc, which holds {whole.shape[1]} steps, "
            f"{whole.shape[1] - kept.shape[1]} of them burn-in (kept only by newer files); run `recircuit quiesce` "
            "again or choose a window inside"
        )
    return part


def own_waking(run: str, condition: str, wakings: Sequence[str]) -> str:
    """The waking column a quiescent row is compared with on its own: its run's for the conditions of its own
    circuit (trained, offline noise, noise off), else the first column (the untrained and uniform rows come from the
    first run)."""
    return run if condition in SAME_NETWORK_CONDITIONS and run in wakings else wakings[0]


def row_own_waking(ds: xr.Dataset, quiescent: str) -> str:
    """`own_waking` of one quiescent row of a reactivation dataset or summary, read from its ``quiescent_run`` and
    ``quiescent_condition`` coordinates (the first value where a summary stacks them over circuits or seeds)."""
    run = str(ds["quiescent_run"].sel(quiescent=quiescent).values.reshape(-1)[0])
    condition = str(ds["quiescent_condition"].sel(quiescent=quiescent).values.reshape(-1)[0])
    return own_waking(run, condition, [str(w) for w in ds["waking"].values])


def scaled_input_by_run(
    quiet: Mapping[str, xr.Dataset], labels: Sequence[str], dim: str, kind: str
) -> dict[str, xr.DataArray]:
    """Each run's scaled-input test (from its quiescence.nc) stacked along ``dim`` in the order of ``labels``; NaN
    for factors or steps a run lacks, or a run whose file predates the test; empty when no run has it."""
    names = scaled_input_names(kind)
    with_test = [lbl for lbl in labels if names[0] in quiet[lbl]]
    if not with_test:
        return {}
    stacked = {}
    for name in names:
        template = quiet[with_test[0]][name]
        arrays = [(quiet[lbl][name] if lbl in with_test else xr.full_like(template, np.nan)).reset_coords(drop=True)
                  for lbl in labels]
        stacked[name] = xr.concat(arrays, dim=dim, join="outer").assign_coords({dim: list(labels)})
    return stacked


def windowed(trajectories: np.ndarray, window: int, n_windows: int, measure) -> np.ndarray:
    """``measure`` of decoded outputs (trials, time, d) in each of ``n_windows`` consecutive windows of ``window``
    steps, (n_windows,); NaN for windows past the end or holding any NaN."""
    out = np.full(n_windows, np.nan)
    for w in range(min(n_windows, trajectories.shape[1] // window)):
        points = trajectories[:, w * window : (w + 1) * window]
        if np.isfinite(points).all():
            out[w] = measure(points)
    return out


def _kind(waking: xr.Dataset, where: str) -> str:
    if "decoded_position" in waking:
        return "path_integration"
    if "decoded_heading" in waking:
        return "head_direction"
    raise ValueError(f"{where}: neither decoded_position nor decoded_heading found (not a waking.nc?)")


def reactivation_dataset(
    runs: Mapping[str, tuple[xr.Dataset, xr.Dataset]],
    reactivation: ReactivationSpec | None = None,
    *,
    circuit: str | None = None,
    seed: int | None = None,
    variant: str = "all",
) -> xr.Dataset:
    """The reactivation table of several runs of one circuit and seed: label -> (waking.nc, quiescence.nc).

    Quiescent rows: each run's trained condition (``label``), its offline-noise control (``label+offline_noise``)
    or its run without noise (``label+noise_off``) where they apply, and the ``untrained`` and ``uniform`` conditions
    of the first run. Waking columns: the runs.
    ``reactivation`` defaults to the spec stored in the first run's quiescence.nc.
    """
    if not runs:
        raise ValueError("no runs given")
    labels = list(runs)
    if len(set(labels)) != len(labels) or any(not lbl or "+" in lbl for lbl in labels):
        raise ValueError(f"run labels must be distinct, non-empty and without '+': {labels}")
    waking = {lbl: _squeeze_sweep(w) for lbl, (w, _) in runs.items()}
    quiet = {lbl: _squeeze_sweep(q) for lbl, (_, q) in runs.items()}
    first = labels[0]
    kind = _kind(waking[first], first)
    for lbl in labels:
        if _kind(waking[lbl], lbl) != kind or quiet[lbl].attrs.get("task_kind") != kind:
            raise ValueError(f"run {lbl}: not a {kind} run (all runs must share one task)")
        for key in ("variant", "seed", "circuit"):
            if waking[lbl].attrs.get(key) != quiet[lbl].attrs.get(key):
                raise ValueError(
                    f"run {lbl}: waking.nc and quiescence.nc come from different runs ({key} "
                    f"{waking[lbl].attrs.get(key)!r} vs {quiet[lbl].attrs.get(key)!r})"
                )
    rs = reactivation or spec_from_json(quiet[first].attrs["spec_json"]).reactivation
    circuit = circuit or _same_attr(waking, "circuit", "--circuit")
    seed = int(seed if seed is not None else _same_attr(waking, "seed", "--seed"))
    dt = float(quiet[first].attrs["dt_s"])
    arena = float(quiet[first].attrs.get("arena_m", float("nan")))
    circular = kind == "head_direction"

    # rows: every run's trained condition and its controls, then the first run's baselines
    own_rows = [(lbl, condition, lbl if condition == "trained" else f"{lbl}+{condition}")
                for lbl in labels for condition in SAME_NETWORK_CONDITIONS]
    plan = own_rows + [(first, "untrained", "untrained"), (first, "uniform", "uniform")]
    rows: list[_Row] = []
    for lbl, condition, row_label in plan:
        if condition not in quiet[lbl]["condition"].values:  # a quiescence.nc written before the condition existed
            continue
        qc = quiet[lbl].sel(condition=condition)
        if not int(qc["simulated"]):
            continue
        rates, waking_rates = _states(qc["rates"]), _states(waking[lbl]["rates"])
        decoded = _decoded(qc, kind)
        whole = np.concatenate([_burn_in_decoded(qc, kind, decoded), decoded], axis=1)
        same_network = condition in SAME_NETWORK_CONDITIONS and rates.size > 0 and waking_rates.size > 0
        rows.append(
            _Row(
                row_label,
                lbl,
                str(quiet[lbl].attrs["variant"]),
                condition,
                _in_window(whole, decoded, rs.distribution_window(), condition, row_label, "distribution_steps"),
                _in_window(whole, decoded, rs.variance_window(), condition, row_label, "variance_burn_in_steps"),
                whole,
                rates if same_network else None,
                waking_rates if same_network else None,
                float(qc["noise_sd"]),
            )
        )

    waking_decoded = {lbl: _decoded(waking[lbl], kind) for lbl in labels}
    ps = [_fit_density(waking_decoded[lbl], circular, rs, "waking", lbl) for lbl in labels]
    kl = np.full((len(rows), len(labels)), np.nan)
    for i, row in enumerate(rows):
        if row.condition == "uniform":
            q_density: Density = UniformCircle() if circular else UniformSquare(arena)
        else:
            q_density = _fit_density(row.decoded, circular, rs, "quiescent", row.label)
        kl[i] = kl_divergences(q_density, ps, rs.kl_samples, _rng(rs.analysis_seed, "kl", row.label))

    if circular:
        edges = heading_edges(rs.coverage_bin_deg)
    else:
        edges = spatial_edges(arena, rs.arena_margin_m, rs.coverage_bin_m)
    q_counts = [_counts(row.decoded, circular, edges) for row in rows]
    w_counts = [_counts(waking_decoded[lbl], circular, edges) for lbl in labels]
    cover = np.array([[coverage(qc, wc) for wc in w_counts] for qc in q_counts])
    # time course from input removal, burn-in included, against the waking counts of the row's own run
    own = [labels.index(own_waking(r.run, r.condition, labels)) for r in rows]
    whole = [r.whole for r in rows]
    longest = max(x.shape[1] for x in whole)
    window = min(rs.time_course_window_steps, longest)
    n_windows = longest // window
    cover_course = np.array(
        [
            windowed(x, window, n_windows, lambda pts, wc=w_counts[j]: coverage(_counts(pts, circular, edges), wc))
            for x, j in zip(whole, own)
        ]
    )

    # distance from the first offline step (the uniform baseline has no trajectory): has the start been forgotten?
    distribution_ends = [range(x.shape[1])[rs.distribution_window()][-1] for x in whole]  # step index, per row
    window_ends = np.arange(1, n_windows + 1) * window - 1
    displacement_course = np.full((len(rows), n_windows), np.nan)
    displacement_at_kl_end = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r.condition == "uniform":
            continue
        d = displacement_from_start(r.whole, circular)
        inside = window_ends < len(d)
        displacement_course[i, inside] = d[window_ends[inside]]
        displacement_at_kl_end[i] = d[distribution_ends[i]]
    waking_pairs = [
        pair_distance(waking_decoded[lbl], _rng(rs.analysis_seed, "pairs", lbl), circular) for lbl in labels
    ]

    def variance(x: np.ndarray) -> float:
        return circular_output_variance(x[..., 0]) if circular else output_variance(x)

    k = rs.pca_components
    q_dim, w_dim = "quiescent", "waking"
    what = "heading" if circular else "position"  # task-specific names: PI and HD summaries combine without clashes
    v_units = "rad2" if circular else "m2"
    s_units = "rad" if circular else "m"
    data: dict[str, xr.DataArray] = {
        "kl": label(
            xr.DataArray(kl, dims=(q_dim, w_dim)),
            "KL(quiescent || waking) of decoded outputs, Monte-Carlo over KDEs",
            "nat",
        ),
        "coverage": label(
            xr.DataArray(cover, dims=(q_dim, w_dim)),
            "fraction of waking-visited bins visited during quiescence",
            "1",
        ),
        f"{what}_variance": label(
            xr.DataArray([variance(r.variance_decoded) for r in rows], dims=q_dim),
            f"per-trajectory variance of the decoded {what} after the variance burn-in, mean over trials"
            + (" (wrapped-normal -2 ln R)" if circular else " (trace of covariance)"),
            v_units,
        ),
        f"waking_{what}_variance": label(
            xr.DataArray([variance(waking_decoded[lbl]) for lbl in labels], dims=w_dim),
            f"per-trajectory variance of the decoded {what} of waking trials, mean over trials",
            v_units,
        ),
        f"{what}_step": label(
            xr.DataArray([mean_step_size(r.decoded, circular) for r in rows], dims=q_dim),
            f"mean step between consecutive decoded {what}s during quiescence",
            s_units,
        ),
        f"waking_{what}_step": label(
            xr.DataArray([mean_step_size(waking_decoded[lbl], circular) for lbl in labels], dims=w_dim),
            f"mean step between consecutive decoded {what}s while awake",
            s_units,
        ),
        f"{what}_displacement": label(
            xr.DataArray(displacement_at_kl_end, dims=q_dim),
            f"RMS over trials of the decoded {what}'s distance from its first offline step, at the last step of the "
            "distribution window" + (" (wrapped)" if circular else "") + " (NaN: no trajectory or steps not stored)",
            s_units,
        ),
        f"{what}_displacement_time_course": label(
            xr.DataArray(displacement_course, dims=(q_dim, "offline_window")),
            f"RMS over trials of the decoded {what}'s distance from its first offline step, at the last step of each "
            f"{window}-step window from input removal (NaN: no trajectory or steps not stored)",
            s_units,
        ),
        f"waking_{what}_pair_distance": label(
            xr.DataArray(waking_pairs, dims=w_dim),
            f"RMS distance between two independent waking decoded {what}s: the displacement offline of a trajectory "
            "that has forgotten its start and samples the waking distribution"
            + (" (wrapped; pi/sqrt(3) when uniform)" if circular else " (sqrt(2 trace cov))"),
            s_units,
        ),
        "pca_fraction": label(
            xr.DataArray(
                [
                    pca_fraction(r.waking_rates, r.rates, k) if r.rates is not None else np.nan
                    for r in rows
                ],
                dims=q_dim,
            ),
            f"fraction of quiescent hidden-state variance in the top {k} waking PCs of the same circuit "
            "(NaN: another network or none)",
            "1",
        ),
        "waking_pca_fraction": label(
            xr.DataArray(
                [_self_pca_fraction(_states(waking[lbl]["rates"]), k) for lbl in labels],
                dims=w_dim,
            ),
            f"fraction of waking hidden-state variance in its top {k} PCs",
            "1",
        ),
        "coverage_time_course": label(
            xr.DataArray(cover_course, dims=(q_dim, "offline_window")),
            f"coverage of the own run's waking-visited bins in windows of {window} steps from input removal (burn-in "
            "included; untrained and uniform rows: the first run's; NaN: not simulated in that window)",
            "1",
        ),
        "noise_sd": label(
            xr.DataArray([r.noise_sd for r in rows], dims=q_dim),
            "offline recurrent noise SD per sqrt(tau) (NaN: no network)",
            "1",
        ),
    }
    data.update(scaled_input_by_run(quiet, labels, w_dim, kind))
    if circular:
        centres = 0.5 * (edges[1:] + edges[:-1])
        no_flow = np.full_like(centres, np.nan)  # the uniform baseline is no network
        drift = [
            no_flow if r.condition == "uniform" else heading_drift(x[..., 0], edges, dt) for r, x in zip(rows, whole)
        ]
        data.update(
            mean_resultant_length=label(
                xr.DataArray([mean_resultant_length(r.decoded) for r in rows], dims=q_dim),
                "mean resultant length of quiescent headings (0: uniform on the ring)",
                "1",
            ),
            mean_resultant_length_time_course=label(
                xr.DataArray(
                    np.array([windowed(x, window, n_windows, mean_resultant_length) for x in whole]),
                    dims=(q_dim, "offline_window"),
                ),
                f"mean resultant length of quiescent headings in windows of {window} steps from input removal "
                "(burn-in included)",
                "1",
            ),
            heading_uniformity_p=label(
                xr.DataArray([rayleigh_p(trial_mean_headings(r.decoded[..., 0])) for r in rows], dims=q_dim),
                "Rayleigh test p-value of uniformity over trials (each trial's circular-mean quiescent heading; the "
                "trials are independent, the time samples within one are not)",
                "1",
            ),
            waking_mean_resultant_length=label(
                xr.DataArray([mean_resultant_length(waking_decoded[lbl]) for lbl in labels], dims=w_dim),
                "mean resultant length of waking headings",
                "1",
            ),
            angular_velocity=label(
                xr.DataArray([mean_angular_velocity(r.decoded[..., 0], dt) for r in rows], dims=q_dim),
                "mean angular velocity of decoded quiescent headings (> 0: counter-clockwise)",
                "rad/s",
            ),
            angular_velocity_sign_p=label(
                xr.DataArray([angular_velocity_sign_p(r.decoded[..., 0]) for r in rows], dims=q_dim),
                "two-sided sign-test p-value of the per-trial mean angular velocity",
                "1",
            ),
            waking_angular_velocity=label(
                xr.DataArray([mean_angular_velocity(waking_decoded[lbl][..., 0], dt) for lbl in labels], dims=w_dim),
                "mean angular velocity of decoded waking headings",
                "rad/s",
            ),
            heading_drift=label(
                xr.DataArray(np.array(drift), dims=(q_dim, "heading_bin")),
                "drift field of the ring offline: mean decoded angular velocity by the heading each step starts from, "
                f"burn-in included (attracting headings: downward zero crossings; NaN: under {DRIFT_MIN_STEPS} steps "
                "in the bin, or no network)",
                "rad/s",
            ),
            heading_occupancy=label(
                xr.DataArray(np.array([c / max(c.sum(), 1) for c in q_counts]), dims=(q_dim, "heading_bin")),
                "fraction of quiescent samples per heading bin",
                "1",
            ),
            waking_heading_occupancy=label(
                xr.DataArray(np.array([c / max(c.sum(), 1) for c in w_counts]), dims=(w_dim, "heading_bin")),
                "fraction of waking samples per heading bin",
                "1",
            ),
        )
        bin_coords = {
            "heading_bin": label(xr.DataArray(centres, dims="heading_bin"), "heading bin centre", "rad"),
        }
    else:
        centres = 0.5 * (edges[1:] + edges[:-1])
        r_edges = radius_edges(arena, rs.arena_margin_m, rs.coverage_bin_m)
        no_flow = np.full(len(r_edges) - 1, np.nan)  # the uniform baseline is no network
        radial = [
            no_flow if r.condition == "uniform" else radial_displacement(x, r_edges, end)
            for r, x, end in zip(rows, whole, distribution_ends)
        ]
        data.update(
            radial_displacement=label(
                xr.DataArray(np.array(radial), dims=(q_dim, "radius_bin")),
                "mean outward component (away from the arena centre) of the decoded position's displacement from its "
                "first offline step to the last step of the distribution window, by the start's distance from the "
                "centre (0: stayed; -distance: forgot the start; NaN: under "
                f"{RADIAL_MIN_TRIALS} trials in the bin, or no network)",
                "m",
            ),
            mean_radius=label(
                xr.DataArray([mean_radius(r.decoded) for r in rows], dims=q_dim),
                "mean distance of quiescent decoded positions from the arena centre",
                "m",
            ),
            waking_mean_radius=label(
                xr.DataArray([mean_radius(waking_decoded[lbl]) for lbl in labels], dims=w_dim),
                "mean distance of waking decoded positions from the arena centre",
                "m",
            ),
            occupancy=label(
                xr.DataArray(np.array([c / max(c.sum(), 1) for c in q_counts]), dims=(q_dim, "x_bin", "y_bin")),
                "fraction of quiescent samples per spatial bin",
                "1",
            ),
            waking_occupancy=label(
                xr.DataArray(np.array([c / max(c.sum(), 1) for c in w_counts]), dims=(w_dim, "x_bin", "y_bin")),
                "fraction of waking samples per spatial bin",
                "1",
            ),
        )
        bin_coords = {
            "x_bin": label(xr.DataArray(centres, dims="x_bin"), "spatial bin centre, x", "m"),
            "y_bin": label(xr.DataArray(centres, dims="y_bin"), "spatial bin centre, y", "m"),
            "radius_bin": label(
                xr.DataArray(0.5 * (r_edges[1:] + r_edges[:-1]), dims="radius_bin"),
                "distance-from-centre bin centre",
                "m",
            ),
        }
    coords = {
        q_dim: label(xr.DataArray([r.label for r in rows], dims=q_dim), "quiescent condition", "1"),
        "quiescent_run": label(xr.DataArray([r.run for r in rows], dims=q_dim), "run the condition comes from", "1"),
        "quiescent_variant": label(
            xr.DataArray([r.variant for r in rows], dims=q_dim), "variant of the circuit the condition comes from", "1"
        ),
        "quiescent_condition": label(
            xr.DataArray([r.condition for r in rows], dims=q_dim), "condition in quiescence.nc", "1"
        ),
        w_dim: label(xr.DataArray(labels, dims=w_dim), "waking distribution (run)", "1"),
        "waking_variant": label(
            xr.DataArray([str(waking[lbl].attrs["variant"]) for lbl in labels], dims=w_dim), "variant of the run", "1"
        ),
        **bin_coords,
        "offline_window": label(
            xr.DataArray(np.arange(n_windows) * window * dt, dims="offline_window"),
            f"start of the {window}-step window, time since input removal",
            "s",
        ),
    }
    attrs = {
        **provenance(None, circuit=circuit, variant=variant, seed=seed, device="cpu"),
        "task_kind": kind,
        "dt_s": dt,
        "reactivation_json": rs.model_dump_json(),
        "run_specs_json": json.dumps({lbl: json.loads(quiet[lbl].attrs["spec_json"]) for lbl in labels}),
        "kl_estimator": (
            f"Monte Carlo, {rs.kl_samples} samples from Q, ratio q/p clipped to {list(RATIO_CLIP)}; "
            f"Gaussian KDEs (Scott) on <= {rs.kde_max_points} decoded points; exact uniform density "
            + ("1/(2 pi)" if circular else "1/L^2 (joint)")
            + ("; wrapped-Gaussian kernel on the ring" if circular else "")
        ),
        "bins": (
            f"{len(edges) - 1} heading bins of {360 / (len(edges) - 1):.4g} deg"
            if circular
            else f"{len(edges) - 1} x {len(edges) - 1} bins of {rs.coverage_bin_m} m over the arena "
            f"+ {rs.arena_margin_m} m margin"
        ),
        "rows_untrained_uniform_from": first,
    }
    if rows:
        distribution, variance_steps = rs.distribution_window(), rs.variance_window()
        attrs["distribution_window_steps"] = f"{distribution.start + 1}-{distribution.start + rows[0].decoded.shape[1]}"
        attrs["variance_window_steps"] = f"{variance_steps.start + 1}-{rows[0].whole.shape[1]}"
    if not circular:
        attrs["arena_m"] = arena
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    return with_sweep_dims(ds, circuit=circuit, variant=variant, seed=seed)


def _same_attr(datasets: Mapping[str, xr.Dataset], key: str, option: str):
    values = {lbl: ds.attrs.get(key) for lbl, ds in datasets.items()}
    if len(set(map(str, values.values()))) != 1:
        raise ValueError(f"runs differ in {key} ({values}); pass {option} to label the result")
    return next(iter(values.values()))


def compute_reactivation(
    runs: Mapping[str, str | Path],
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    circuit: str | None = None,
    seed: int | None = None,
    variant: str = "all",
) -> Path:
    """Read each run folder's waking.nc and quiescence.nc, build the reactivation table, write ``out``."""
    loaded: dict[str, tuple[xr.Dataset, xr.Dataset]] = {}
    for lbl, run_dir in runs.items():
        run_dir = Path(run_dir)
        for name, command in ((WAKING_FILE, "evaluate"), (QUIESCENCE_FILE, "quiesce")):
            if not (run_dir / name).is_file():
                raise FileNotFoundError(f"run {lbl}: {run_dir / name} not found (run `recircuit {command} {run_dir}`)")
        loaded[lbl] = (open_dataset(run_dir / WAKING_FILE), open_dataset(run_dir / QUIESCENCE_FILE))
    first_quiet = loaded[next(iter(loaded))][1] if loaded else None
    if first_quiet is None:
        raise ValueError("no runs given (use --run LABEL=RUN_DIR)")
    spec = spec_from_json(first_quiet.attrs["spec_json"])
    rs = with_section_overrides(spec, overrides, ("reactivation",)).reactivation
    ds = reactivation_dataset(loaded, rs, circuit=circuit, seed=seed, variant=variant)
    ds.attrs["runs_json"] = json.dumps({lbl: str(path) for lbl, path in runs.items()})
    return save_dataset(ds, out)

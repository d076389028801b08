"""The firing rate of the twin's LIF neuron as Brian2 integrates it, and the calibration that corrects for it.

The Siegert rate (`recircuit.circuit.lif_curve.siegert_rate_hz`) is the rate of the continuous-time neuron. The twin
integrates it with Euler-Maruyama steps of ``spiking.dt_ms`` and checks the threshold once per step, which changes the
rate by a few percent of the maximum at dt = 0.1 ms: the neuron misses threshold crossings between steps (lower rates
where it is noise-driven), and after a spike it integrates again from the step at which ``t - lastspike`` reaches the
refractory period rounded down to whole steps (`recircuit.spiking.network.REFRACTORY`; higher rates where it is
driven hard). A path integrator integrates such a bias.

`discrete_rate_hz` is the exact rate of the discretized neuron at a constant drive: after a spike the membrane is held
at reset for ``R - 1`` steps (R = the refractory period in whole steps), then each step maps v to
``(1 - a) v + a mu + sigma sqrt(a) z`` (a = dt / tau_m, z ~ N(0, 1)) until v exceeds the threshold. The mean number
of integration steps to threshold, E[k], solves ``m(v) = 1 + int_{v' < gap} P(v -> v') m(v') dv'`` on a grid of v
(Nystroem, the Gaussian transition integrated over each grid cell), so the rate 1 / (dt (R - 1 + E[k])) is free of
sampling noise. `fit_drive` fits the drive (gain, offset) and refractory period (whole steps) so that this rate, not
the Siegert rate, follows a target f-I curve (`recircuit.spiking.convert.correct_for_time_step` applies it to a
calibration).
"""

from __future__ import annotations

import functools

import numpy as np

GRID_PER_STEP_SD = 6  # grid points of v per SD of one step's noise (finer changes rates by < 0.02 Hz)
TABLE_POINTS = 200  # drives at which E[k] is solved where the rate bends; cubic interpolation between them
TAIL_POINTS = 80  # drives from there to the top of a table, where E[k] steps down from about 2 to 1
TRANSITION_SDS = 20.0  # the bend: up to this many free membrane SDs above threshold
TOP_SDS = 400.0  # the table's top, free membrane SDs above threshold (2.9 V at dt 0.1 ms, where E[k] = 1)
SILENT_SDS = 7.0  # below gap - SILENT_SDS x the free membrane SD the rate is taken as 0 (< 1e-8 Hz at dt 0.1 ms)


def refractory_steps(refractory_ms: float, dt_ms: float) -> int:
    """R: the whole steps after a spike at which the twin's neuron is first integrated again (network.REFRACTORY)."""
    return int(np.floor(refractory_ms / dt_ms + 1e-3))


def _free_sd_mV(noise_mV: float, tau_m_ms: float, dt_ms: float) -> float:
    """Stationary SD of the discretized membrane without threshold, mV."""
    a = dt_ms / tau_m_ms
    return noise_mV * np.sqrt(a / (1.0 - (1.0 - a) ** 2))


def steps_to_threshold(
    drive_mV: np.ndarray, noise_mV: float, gap_mV: float, tau_m_ms: float, dt_ms: float
) -> np.ndarray:
    """E[k]: mean Euler steps from reset (0 mV) until v > ``gap_mV`` at constant drive ``drive_mV`` (mV above rest).

    inf where the drive is more than SILENT_SDS free-membrane SDs below threshold."""
    from scipy.special import ndtr  # here: scipy.special takes 0.15 s to import

    if noise_mV <= 0 or dt_ms <= 0 or tau_m_ms <= dt_ms:
        raise ValueError(f"need noise > 0 mV and 0 < dt < tau_m, got {noise_mV} mV, dt {dt_ms} ms, tau_m {tau_m_ms} ms")
    a = dt_ms / tau_m_ms
    step_sd = noise_mV * np.sqrt(a)
    free_sd = _free_sd_mV(noise_mV, tau_m_ms, dt_ms)
    spacing = step_sd / GRID_PER_STEP_SD
    drives = np.atleast_1d(np.asarray(drive_mV, dtype=np.float64))
    result = np.full(drives.shape, np.inf)
    for index, mu in np.ndenumerate(drives):
        if not np.isfinite(mu) or mu < gap_mV - SILENT_SDS * free_sd:
            continue
        lowest = min(0.0, mu) - 7.0 * free_sd
        v = np.arange(gap_mV, lowest, -spacing)[::-1]  # cells centred on v; the last one ends at the threshold
        edges = np.concatenate([[-np.inf], (v[:-1] + v[1:]) / 2.0, [gap_mV]])
        mean = (1.0 - a) * v + a * mu
        transition = np.diff(ndtr((edges[None, :] - mean[:, None]) / step_sd), axis=1)
        steps = np.linalg.solve(np.eye(v.size) - transition, np.ones(v.size))
        result[index] = np.interp(0.0, v, steps)
    return result


def _rate_hz(steps: np.ndarray, refractory_ms: float, dt_ms: float) -> np.ndarray:
    """1 / (dt (R - 1 + E[k])), Hz: R - 1 steps held at reset, then E[k] integrated steps to threshold."""
    return 1000.0 / (dt_ms * (refractory_steps(refractory_ms, dt_ms) - 1 + steps))


def discrete_rate_hz(
    drive_mV: np.ndarray, noise_mV: float, gap_mV: float, tau_m_ms: float, refractory_ms: float, dt_ms: float
) -> np.ndarray:
    """Stationary rate (Hz) of the twin's neuron as Brian2 integrates it at constant drive (mV above rest)."""
    return _rate_hz(steps_to_threshold(drive_mV, noise_mV, gap_mV, tau_m_ms, dt_ms), refractory_ms, dt_ms)


class DiscreteRateTable:
    """E[k] of one neuron (noise, gap, tau_m, dt) tabulated from silence (SILENT_SDS free membrane SDs below threshold)
    to TOP_SDS above it, interpolated in log E[k] with a cubic spline: the rate at any drive and refractory period in
    microseconds (within about 0.002 Hz of `discrete_rate_hz`). Build it with `rate_table`, which keeps one per
    neuron."""

    def __init__(self, noise_mV: float, gap_mV: float, tau_m_ms: float, dt_ms: float):
        from scipy.interpolate import CubicSpline

        self.dt_ms = dt_ms
        free_sd = _free_sd_mV(noise_mV, tau_m_ms, dt_ms)
        self.silent_mV, self.top_mV = gap_mV - SILENT_SDS * free_sd, gap_mV + TOP_SDS * free_sd
        # dense where the rate bends (up to TRANSITION_SDS free SDs above threshold), sparser beyond it
        bend = gap_mV + TRANSITION_SDS * free_sd
        drives = np.concatenate(
            [np.linspace(self.silent_mV, bend, TABLE_POINTS), np.linspace(bend, self.top_mV, TAIL_POINTS + 1)[1:]]
        )
        self._log_steps = CubicSpline(drives, np.log(steps_to_threshold(drives, noise_mV, gap_mV, tau_m_ms, dt_ms)))

    def rate_hz(self, drive_mV: np.ndarray, refractory_ms: float) -> np.ndarray:
        """The discretized neuron's rate (Hz); 0 below silence, held at the table's top above it (E[k] is 1
        there: the neuron fires in the first step it is integrated)."""
        drive = np.asarray(drive_mV, dtype=np.float64)
        steps = np.exp(self._log_steps(np.clip(drive, self.silent_mV, self.top_mV)))
        return np.where(drive < self.silent_mV, 0.0, _rate_hz(steps, refractory_ms, self.dt_ms))


@functools.lru_cache(maxsize=8)
def rate_table(noise_mV: float, gap_mV: float, tau_m_ms: float, dt_ms: float) -> DiscreteRateTable:
    """The rate table of one neuron, built once per process (about a second)."""
    return DiscreteRateTable(float(noise_mV), float(gap_mV), float(tau_m_ms), float(dt_ms))


def fit_drive(
    current: np.ndarray,
    target_hz: np.ndarray,
    gain_mV: float,
    offset_mV: float,
    refractory_ms: float,
    noise_mV: float,
    gap_mV: float,
    tau_m_ms: float,
    dt_ms: float,
    lambda_s: float,
    min_refractory_ms: float = 0.0,
) -> tuple[float, float, float, float]:
    """(gain mV, offset mV, refractory ms, RMS error Hz) for which the neuron integrated at ``dt_ms`` fires at
    ``target_hz`` at rate-model currents ``current`` (drive gain x + offset): gain and offset by least squares from
    the given ones (residuals in units of the max rate 1 / ``lambda_s``), the refractory period the best of the
    whole-step values around the given one (at least two steps and ``min_refractory_ms``)."""
    from scipy.optimize import least_squares

    table = rate_table(noise_mV, gap_mV, tau_m_ms, dt_ms)
    nearest = refractory_steps(refractory_ms, dt_ms)
    fewest = max(2, int(np.ceil(min_refractory_ms / dt_ms - 1e-3)))
    best = None
    for steps in range(max(nearest - 1, fewest), max(nearest + 3, fewest + 1)):
        refractory = steps * dt_ms

        def residual(p: np.ndarray, refractory: float = refractory) -> np.ndarray:
            return (table.rate_hz(p[0] * current + p[1], refractory) - target_hz) * lambda_s

        fit = least_squares(residual, np.array([gain_mV, offset_mV]), x_scale=[gain_mV, gap_mV])
        if best is None or fit.cost < best[0].cost:
            best = (fit, refractory)
    assert best is not None
    fit, refractory = best
    gain, offset = map(float, fit.x)
    return gain, offset, refractory, float(np.sqrt(np.mean(fit.fun**2))) / lambda_s

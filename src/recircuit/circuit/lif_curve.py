"""The ``lif`` activation: the rate of the spiking twin's LIF neuron as the rate model's nonlinearity ("soft-LIF").

phi(x) = lambda f(gain x + offset), with f the stationary rate (Hz) of a leaky integrate-and-fire neuron with white
membrane noise in the diffusion approximation (Siegert 1951; Brunel 2000):

    1/f = t_ref + tau_m sqrt(pi) int_{-mu/s}^{(gap - mu)/s} erfcx(-u) du,    mu = gain x + offset (mV above rest).

A circuit trained with it has the twin's f-I curve as its own, so the rate circuit is the twin's mean field and the
conversion needs no fit (shared/research/spiking_export.md §1.3). The neuron is the twin's (spec section
``spiking``: membrane noise, tau_m, threshold above reset, and the rate 1/lambda at which phi = 1; `lif_curve`), with
gain, offset and refractory period fitted to sigmoid(x) over x in [-6, 6] (`fit_to_sigmoid`), so that the
activation is a drop-in for the sigmoid. For the default neuron (membrane noise 3 mV, tau_m 10 ms, threshold 15 mV,
1/lambda = 400 Hz) the fit is pinned as `LIF_CURVE` (relative RMS error 5 %; `tests/test_lif_curve.py` refits it):
about 0 below x = -4, 0.55 at x = 0, 1.03 at x = 5, rising slowly to lambda / t_ref = 1.54. So is the default
until 2026-12-06 (10 mV, 200 Hz: `LIF_CURVE_10MV_200HZ`), so that circuits trained with it compute as they did.
Another neuron's curve is fitted when first asked for. Why this default: less membrane noise fires more regularly,
and a higher 1/lambda fires more spikes for the same rate-model activity, so the twin adds less spike-count noise of
its own (docs/results.md, "The twin neuron").

In torch the curve is a cubic Hermite interpolant of tabulated values and slopes (float64 Siegert, `TABLE_POINTS`
nodes on [X_LOW, X_HIGH]), stored as each cell's cubic coefficients (one gather per element): exact first derivative
of the interpolant for autograd and the fused scan alike, and a second derivative for the curvature analysis.
Beyond the table it is held at its end values (slope 0); where phi < `SILENT_FLOOR` it is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from recircuit.spec_sections.spiking import LIF_MIN_REFRACTORY_MS as MIN_REFRACTORY_MS
from recircuit.spec_sections.spiking import max_refractory_ms as refractory_bound_ms

_GAUSS_X, _GAUSS_W = np.polynomial.legendre.leggauss(160)


def siegert_rate_hz(
    drive_mV: np.ndarray, noise_mV: float, gap_mV: float, tau_m_s: float, refractory_s: float
) -> np.ndarray:
    """Stationary rate (Hz) of tau_m dv/dt = -v + mu + sigma sqrt(tau_m) xi, threshold ``gap_mV``, reset 0.

    Diffusion approximation (Siegert 1951; Brunel 2000): 1/f = t_ref + tau_m sqrt(pi) int_{-mu/s}^{(gap-mu)/s}
    erfcx(-u) du, with mu = ``drive_mV`` above rest and s = ``noise_mV`` > 0.
    """
    from scipy.special import erfcx  # here: scipy.special takes 0.15 s to import

    if noise_mV <= 0:
        raise ValueError("the Siegert rate needs membrane noise > 0 mV")
    mu = np.asarray(drive_mV, dtype=np.float64)
    lower, upper = -mu / noise_mV, (gap_mV - mu) / noise_mV
    mid, half = (upper + lower) / 2.0, (upper - lower) / 2.0
    nodes = mid[..., None] + half[..., None] * _GAUSS_X
    integral = (erfcx(-nodes) * _GAUSS_W).sum(-1) * half
    return 1.0 / (refractory_s + tau_m_s * np.sqrt(np.pi) * integral)


@dataclass(frozen=True)
class LIFCurve:
    """A LIF neuron and its drive: phi(x) = lambda_s * siegert_rate_hz(gain_mV x + offset_mV, ...)."""

    max_rate_hz: float  # 1/lambda
    gain_mV: float
    offset_mV: float
    refractory_ms: float
    noise_mV: float
    tau_m_ms: float
    threshold_gap_mV: float

    @property
    def lambda_s(self) -> float:
        return 1.0 / self.max_rate_hz

    def __call__(self, current: np.ndarray) -> np.ndarray:
        """phi(x) in float64 (exact Siegert, no table)."""
        drive = self.gain_mV * np.asarray(current, dtype=np.float64) + self.offset_mV
        tau_m_s, refractory_s = self.tau_m_ms / 1e3, self.refractory_ms / 1e3
        return self.lambda_s * siegert_rate_hz(drive, self.noise_mV, self.threshold_gap_mV, tau_m_s, refractory_s)


# fit_to_sigmoid's result to the last digit, so a circuit trained before it was pinned computes exactly as then
LIF_CURVE = LIFCurve(
    max_rate_hz=400.0,
    gain_mV=26.84763135879991,
    offset_mV=59.575510505686466,
    refractory_ms=1.6280327483287345,
    noise_mV=3.0,
    tau_m_ms=10.0,
    threshold_gap_mV=15.0,
)
LIF_CURVE_10MV_200HZ = LIFCurve(
    max_rate_hz=200.0,
    gain_mV=15.6969,
    offset_mV=32.5088,
    refractory_ms=3.4272,
    noise_mV=10.0,
    tau_m_ms=10.0,
    threshold_gap_mV=15.0,
)
PINNED_CURVES = {
    (curve.noise_mV, curve.tau_m_ms, curve.threshold_gap_mV, curve.max_rate_hz): curve
    for curve in (LIF_CURVE, LIF_CURVE_10MV_200HZ)
}
SIGMOID_FIT_RANGE = (-6.0, 6.0)  # currents over which a lif curve follows sigmoid(x)


def fit_to_sigmoid(
    lambda_s: float,
    current_range: tuple[float, float],
    noise_mV: float,
    gap_mV: float,
    tau_m_ms: float,
    min_refractory_ms: float,
    n_points: int = 161,
) -> tuple[float, float, float, float]:
    """(gain mV, offset mV, refractory ms, RMS error Hz) such that lambda times the Siegert rate of drive
    gain x + offset follows sigmoid(x) over ``current_range``.

    Least squares on a uniform grid of ``n_points`` currents; the refractory period is bounded to
    [``min_refractory_ms``, 0.97 lambda] so the neuron saturates near 1/lambda as the sigmoid does.
    """
    from scipy.optimize import least_squares
    from scipy.special import expit

    low, high = map(float, current_range)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"operating range ({low}, {high}) must be finite with high > low")
    if lambda_s <= 0:
        raise ValueError(f"lambda must be > 0 s, got {lambda_s}")
    max_refractory_ms = refractory_bound_ms(1.0 / lambda_s)
    if max_refractory_ms <= min_refractory_ms:
        raise ValueError(
            f"max rate 1/lambda = {1 / lambda_s:.0f} Hz is too high for the minimum refractory period "
            f"{min_refractory_ms} ms"
        )
    current = np.linspace(low, high, n_points)
    target = expit(current) / lambda_s
    tau_m_s = tau_m_ms / 1000.0
    half_width = (high - low) / 2.0
    centre = (high + low) / 2.0

    def residual(p: np.ndarray) -> np.ndarray:
        gain, offset, refractory = p
        rate = siegert_rate_hz(gain * current + offset, noise_mV, gap_mV, tau_m_s, refractory / 1000.0)
        return (rate - target) * lambda_s

    best = None
    # A few starts: the fit has shallow directions (gain vs noise), so keep the best of several.
    for gain0 in (0.5 * gap_mV / half_width, 2.0 * gap_mV / half_width, 6.0 * gap_mV / half_width):
        start = np.array([gain0, gap_mV - gain0 * centre, 0.8 * max_refractory_ms])
        start[2] = np.clip(start[2], min_refractory_ms * 1.01, max_refractory_ms * 0.99)
        fit = least_squares(
            residual,
            start,
            bounds=([0.0, -20.0 * gap_mV, min_refractory_ms], [100.0 * gap_mV, 20.0 * gap_mV, max_refractory_ms]),
            x_scale=[gap_mV / half_width, gap_mV, max_refractory_ms],
        )
        if best is None or fit.cost < best.cost:
            best = fit
    assert best is not None
    gain, offset, refractory = map(float, best.x)
    return gain, offset, refractory, float(np.sqrt(np.mean((best.fun / lambda_s) ** 2)))


@cache
def lif_curve(noise_mV: float, tau_m_ms: float, threshold_gap_mV: float, max_rate_hz: float) -> LIFCurve:
    """The lif activation of the neuron with this membrane noise (mV), membrane time constant (ms), threshold above
    reset (mV) and 1/lambda (Hz): one of `PINNED_CURVES` (the default neuron's `LIF_CURVE` and the earlier
    default), else gain, offset and refractory period fitted to the sigmoid over `SIGMOID_FIT_RANGE`
    (`fit_to_sigmoid`)."""
    neuron = tuple(map(float, (noise_mV, tau_m_ms, threshold_gap_mV, max_rate_hz)))
    if neuron in PINNED_CURVES:
        return PINNED_CURVES[neuron]
    noise_mV, tau_m_ms, threshold_gap_mV, max_rate_hz = neuron
    gain, offset, refractory, _ = fit_to_sigmoid(
        1.0 / max_rate_hz, SIGMOID_FIT_RANGE, noise_mV, threshold_gap_mV, tau_m_ms, MIN_REFRACTORY_MS
    )
    return LIFCurve(max_rate_hz, gain, offset, refractory, noise_mV, tau_m_ms, threshold_gap_mV)


X_LOW, X_HIGH, TABLE_POINTS = -20.0, 40.0, 6001
# phi below this is set to 0 (with its slope): the curve's far tail (1e-40 and less) is subnormal in float32, and
# subnormal rates, slopes and gradients made training 2x slower at 128 units and 15x at the reference size
SILENT_FLOOR = 1e-12
_SLOPE_STEP = 1e-5


class TabulatedCurve:
    """phi as a cubic Hermite interpolant of ``curve`` on a uniform grid (torch, any device, float32 or float64)."""

    def __init__(self, curve: LIFCurve, low: float = X_LOW, high: float = X_HIGH, points: int = TABLE_POINTS):
        self.curve = curve
        self.low, self.high, self.step, self.points = low, high, (high - low) / (points - 1), points
        self._nodes: tuple[np.ndarray, np.ndarray] | None = None  # built on first use (keeps imports fast)
        self._tables: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def nodes(self) -> tuple[np.ndarray, np.ndarray]:
        """(phi, phi') at the table's nodes, float64 (0 where phi < SILENT_FLOOR)."""
        if self._nodes is None:
            grid, curve = np.linspace(self.low, self.high, self.points), self.curve
            values = curve(grid)
            slopes = (curve(grid + _SLOPE_STEP) - curve(grid - _SLOPE_STEP)) / (2 * _SLOPE_STEP)
            silent = values < SILENT_FLOOR  # below about 2e-10 Hz: exactly silent, so no subnormal floats downstream
            self._nodes = (np.where(silent, 0.0, values), np.where(silent, 0.0, slopes))
        return self._nodes

    def _table(self, like: torch.Tensor) -> torch.Tensor:
        """Per cell, the cubic's coefficients (a, b, c, d) of y(w) = a + b w + c w^2 + d w^3 on the device and dtype
        of ``like``, (4, points) (the last column holds the end value): computed in float64, so that the small
        increments keep their digits in float32."""
        key = (like.device, like.dtype)
        if key not in self._tables:
            y0, slopes = self.nodes()
            m = slopes * self.step  # slopes per unit of w
            dy, m0, m1 = np.diff(y0), m[:-1], m[1:]
            cells = np.stack([y0[:-1], m0, 3 * dy - 2 * m0 - m1, m0 + m1 - 2 * dy], axis=1)
            coefficients = np.ascontiguousarray(np.concatenate([cells, [[y0[-1], 0.0, 0.0, 0.0]]]).T)  # contiguous rows
            self._tables[key] = torch.as_tensor(coefficients, dtype=like.dtype, device=like.device)
        return self._tables[key]

    def _cell(self, current: torch.Tensor):
        """Position w within the cell and the cell's coefficients; beyond the table w sits at its ends (x = X_LOW,
        where the curve and its slope are 0 in float64, or the last node, whose cubic is the constant end value), so
        the interpolant's derivative there is 0 without a mask."""
        position = torch.add(current, -self.low).mul_(1.0 / self.step).clamp(0.0, self.points - 1.0)  # not clamp_: vmap
        index = position.detach().floor().nan_to_num_(0.0)  # a NaN current keeps w NaN, so phi(NaN) is NaN
        w = position - index
        rows = self._table(current).index_select(1, index.reshape(-1).long())
        return (w, *rows.view(4, *current.shape).unbind(0))

    @staticmethod
    def _cubic(w, a, b, c, d) -> torch.Tensor:
        """a + w (b + w (c + w d)) (Horner)."""
        return torch.addcmul(a, torch.addcmul(b, torch.addcmul(c, d, w), w), w)

    def __call__(self, current: torch.Tensor) -> torch.Tensor:
        """phi(x), differentiable (twice) through the interpolant; held at the ends beyond the table."""
        return self._cubic(*self._cell(current))

    def value_and_slope(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi(x), phi'(x)) without autograd: the interpolant (the same operations as calling it) and its exact
        derivative (0 beyond the table)."""
        with torch.no_grad():
            w, a, b, c, d = self._cell(current)
            value = self._cubic(w, a, b, c, d)
            slope = torch.addcmul(b, torch.addcmul(c.mul(2), d, w, value=3), w).div_(self.step)  # b + w (2c + 3dw)
        return value, slope


lif_activation = TabulatedCurve(LIF_CURVE)


@cache
def tabulated_lif(noise_mV: float, tau_m_ms: float, threshold_gap_mV: float, max_rate_hz: float) -> TabulatedCurve:
    """The torch interpolant of `lif_curve` for this neuron (one per neuron; `lif_activation` for the default)."""
    curve = lif_curve(noise_mV, tau_m_ms, threshold_gap_mV, max_rate_hz)
    return lif_activation if curve is LIF_CURVE else TabulatedCurve(curve)

"""Rate circuit -> LIF twin, unit for unit (Kim, Li & Sejnowski 2019, PNAS 116:22811).

Rate unit i becomes LIF neuron i firing at about phi(x_i) / lambda Hz, where x_i = W_rec h + W_in u + b is the rate
model's current. The rate h_j corresponds to lambda r_j, r_j being neuron j's spike train through a unit-area synaptic
kernel whose decay constant is the rate unit's tau, so the spiking current is W_rec (lambda r) + W_in u + b:

* recurrent and readout weights are scaled by one lambda (s), chosen by a recorded grid search (`simulate.py`);
* input weights, bias and tau are copied; Dale's law is kept because lambda > 0 scales every column alike;
* the neuron's f-I curve is calibrated so that f(x) = phi(x) / lambda over the circuit's operating range: the
  membrane drive is ``gain * x + offset`` (mV) and the refractory period sets the saturation, fitted to the
  diffusion-approximation (Siegert) rate of a LIF neuron with white membrane noise, then checked by simulation.

Refused, never silently dropped: relu/softplus (rates that do not saturate: the LIF map failed for every relu net and
half of the softplus nets in Kim 2019 Fig. 7), and any parameter or spec field the converter does not know
(a mechanism without a spiking counterpart). tanh circuits are rewritten exactly as sigmoid circuits first (§1.3 of
the spiking note): with s = (1 + h) / 2, W' = 4 W, b' = 2 b - 2 W 1, W_in' = 2 W_in, W_out' = 2 W_out,
b_out' = b_out - W_out 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import erfcx, expit

# What the converter knows about the rate circuit; anything else is a mechanism without a spiking counterpart.
KNOWN_PARAMETERS = frozenset(
    {"recurrent_raw", "input_raw", "bias", "output_raw", "output_bias", "encoder", "encoder_bias"}
)
KNOWN_BUFFERS = frozenset({"column_sign", "recurrent_mask"})
KNOWN_NETWORK_FIELDS = frozenset(
    {
        "n_exc",
        "n_inh",
        "dale",
        "activation",
        "tau_ms",
        "spectral_radius",
        "input_weights",
        "zero_self_connections",
        "initial_state",
        "noise",
    }
)
KNOWN_NOISE_FIELDS = frozenset({"recurrent_sd", "input_sd", "placement"})

_GAUSS_X, _GAUSS_W = np.polynomial.legendre.leggauss(160)


class ConversionRefused(ValueError):
    """The circuit has something the unit-for-unit LIF conversion cannot represent."""


@dataclass(frozen=True)
class RateCircuit:
    """The effective weights of a trained rate circuit in float64, post x pre, with phi = sigmoid."""

    input: np.ndarray  # (units, n_inputs)
    recurrent: np.ndarray  # (units, units), post x pre
    bias: np.ndarray  # (units,)
    output: np.ndarray  # (n_outputs, units)
    output_bias: np.ndarray  # (n_outputs,)
    tau_s: np.ndarray  # (units,) time constant of each unit, s (a = step_s / tau_s)
    synaptic_tau_s: np.ndarray  # (units,) decay of the twin's synaptic kernel, s
    n_exc: int
    n_inh: int
    dale: bool
    step_s: float  # rate-model time step, s
    source_activation: str  # the trained activation ('sigmoid', or 'tanh' rewritten exactly as sigmoid)

    @property
    def n_units(self) -> int:
        return self.recurrent.shape[0]

    def initial_rates(self, tanh_rates: np.ndarray) -> np.ndarray:
        """The model's initial rates h0 mapped into this sigmoid circuit (s0 = (1 + h0)/2 after a tanh rewrite)."""
        return (1.0 + tanh_rates) / 2.0 if self.source_activation == "tanh" else tanh_rates

    def check_dale(self) -> None:
        """Raise if a recurrent column has the wrong sign for its population."""
        if not self.dale:
            return
        exc, inh = self.recurrent[:, : self.n_exc], self.recurrent[:, self.n_exc :]
        if (exc < 0).any() or (inh > 0).any():
            raise ConversionRefused("recurrent weights break Dale's law (E columns must be >= 0, I columns <= 0)")


def check_convertible(spec, state_keys) -> None:
    """Refuse, naming the spec field or parameter, what the LIF twin cannot represent."""
    net = spec.network
    if net.activation in ("relu", "softplus"):
        raise ConversionRefused(
            f"network.activation is {net.activation!r}: the unit-for-unit LIF conversion needs a saturating rate "
            "function. A LIF neuron's rate saturates (at about 1/refractory) while relu/softplus rates grow without "
            "bound, and Kim, Li & Sejnowski (2019, Fig. 7) converted 0 of 100 relu and 55 of 100 softplus networks "
            "this way. Retrain with network.activation: sigmoid (or tanh, which is rewritten exactly as sigmoid)."
        )
    if net.activation not in ("sigmoid", "tanh"):
        raise ConversionRefused(f"network.activation {net.activation!r} has no LIF counterpart here")
    problems = []
    defaults = type(net)()
    for name in type(net).model_fields:
        if name not in KNOWN_NETWORK_FIELDS and getattr(net, name) != getattr(defaults, name):
            problems.append(f"network.{name} = {getattr(net, name)!r}")
    for name in type(net.noise).model_fields:
        if name not in KNOWN_NOISE_FIELDS and getattr(net.noise, name) != getattr(defaults.noise, name):
            problems.append(f"network.noise.{name} = {getattr(net.noise, name)!r}")
    unknown = sorted(set(state_keys) - KNOWN_PARAMETERS - KNOWN_BUFFERS)
    problems += [f"model parameter {k!r}" for k in unknown]
    if problems:
        raise ConversionRefused(
            "the spiking conversion has no counterpart for: "
            + "; ".join(problems)
            + " (refusing rather than dropping a mechanism silently)"
        )


def synaptic_decay_s(tau_s: np.ndarray, step_s: float, mode: str) -> np.ndarray:
    """Synaptic decay (s) of the twin: the rate tau, or the tau whose exact exponential decay over one step equals the
    Euler map's leak 1 - a (``discrete_matched``: -step / ln(1 - a); then h_t = (1 - a) h + a phi is the exact
    solution of tau' dh/dt = -h + phi with phi held over the step)."""
    if mode == "rate_tau":
        return np.array(tau_s, dtype=np.float64)
    if mode != "discrete_matched":
        raise ValueError(f"spiking.synaptic_tau must be 'rate_tau' or 'discrete_matched', not {mode!r}")
    alpha = step_s / np.asarray(tau_s, dtype=np.float64)
    if np.any(alpha >= 1):
        raise ValueError("spiking.synaptic_tau = discrete_matched needs task.dt_s < network.tau_ms (dt/tau < 1)")
    return -step_s / np.log1p(-alpha)


def rate_circuit_from_model(model, synaptic_tau: str = "rate_tau") -> RateCircuit:
    """The sigmoid rate circuit equivalent to a trained EICircuit (refusing what cannot convert).

    ``synaptic_tau``: 'rate_tau' (Kim et al.: the synaptic decay is the unit's tau) or 'discrete_matched'
    (see `synaptic_decay_s`)."""
    spec = model.spec
    check_convertible(spec, model.state_dict().keys())
    weights = {k: v.detach().cpu().double().numpy() for k, v in model.effective_weights().items()}
    n = weights["recurrent"].shape[0]
    w_in, w_rec, b = weights["input"], weights["recurrent"], weights["bias"]
    w_out, b_out = weights["output"], weights["output_bias"]
    if spec.network.activation == "tanh":
        w_in, w_rec, b, w_out, b_out = (
            2.0 * w_in,
            4.0 * w_rec,
            2.0 * b - 2.0 * w_rec.sum(1),
            2.0 * w_out,
            b_out - w_out.sum(1),
        )
    circuit = RateCircuit(
        input=w_in,
        recurrent=w_rec,
        bias=b,
        output=w_out,
        output_bias=b_out,
        tau_s=np.full(n, spec.network.tau_ms / 1000.0),
        synaptic_tau_s=synaptic_decay_s(np.full(n, spec.network.tau_ms / 1000.0), spec.task.dt_s, synaptic_tau),
        n_exc=spec.network.n_exc,
        n_inh=spec.network.n_inh,
        dale=spec.network.dale,
        step_s=spec.task.dt_s,
        source_activation=spec.network.activation,
    )
    circuit.check_dale()
    return circuit


# ------------------------------------------------------------------------------------------------ f-I calibration
def siegert_rate_hz(
    drive_mV: np.ndarray, noise_mV: float, gap_mV: float, tau_m_s: float, refractory_s: float
) -> np.ndarray:
    """Stationary rate (Hz) of tau_m dv/dt = -v + mu + sigma sqrt(tau_m) xi, threshold ``gap_mV``, reset 0.

    Diffusion approximation (Siegert 1951; Brunel 2000): 1/f = t_ref + tau_m sqrt(pi) int_{-mu/s}^{(gap-mu)/s}
    erfcx(-u) du, with mu = ``drive_mV`` above rest and s = ``noise_mV`` > 0.
    """
    if noise_mV <= 0:
        raise ValueError("the Siegert rate needs membrane noise > 0 mV")
    mu = np.asarray(drive_mV, dtype=np.float64)
    lower, upper = -mu / noise_mV, (gap_mV - mu) / noise_mV
    mid, half = (upper + lower) / 2.0, (upper - lower) / 2.0
    nodes = mid[..., None] + half[..., None] * _GAUSS_X
    integral = (erfcx(-nodes) * _GAUSS_W).sum(-1) * half
    return 1.0 / (refractory_s + tau_m_s * np.sqrt(np.pi) * integral)


@dataclass(frozen=True)
class LIFCalibration:
    """LIF input mapping fitted so that f(x) = sigmoid(x) / lambda over the operating range."""

    lambda_s: float  # rate-to-firing scale: h = lambda * r, s (max rate 1/lambda)
    gain_mV: float  # membrane drive per unit of rate-model current, mV
    offset_mV: float  # membrane drive at zero current, mV above rest
    noise_mV: float  # membrane noise sigma, mV (free-membrane SD sigma/sqrt 2)
    refractory_ms: float  # absolute refractory period, ms
    current_low: float  # operating range of the rate-model current, lower end
    current_high: float  # upper end
    rms_error_hz: float  # RMS of Siegert rate - target over the range, Hz

    @property
    def max_rate_hz(self) -> float:
        return 1.0 / self.lambda_s

    @property
    def relative_rms_error(self) -> float:
        """RMS error over the range / maximum rate 1/lambda."""
        return self.rms_error_hz * self.lambda_s

    def target_rate_hz(self, current: np.ndarray) -> np.ndarray:
        """sigmoid(x) / lambda, Hz."""
        return expit(np.asarray(current, dtype=np.float64)) / self.lambda_s

    def siegert_rate_hz(self, current: np.ndarray, gap_mV: float, tau_m_ms: float) -> np.ndarray:
        """The fitted LIF rate (diffusion approximation) at rate-model current x, Hz."""
        drive = self.gain_mV * np.asarray(current, dtype=np.float64) + self.offset_mV
        return siegert_rate_hz(drive, self.noise_mV, gap_mV, tau_m_ms / 1000.0, self.refractory_ms / 1000.0)


def calibrate_lif(
    lambda_s: float,
    current_range: tuple[float, float],
    noise_mV: float,
    gap_mV: float,
    tau_m_ms: float,
    min_refractory_ms: float,
    n_points: int = 161,
) -> LIFCalibration:
    """Fit gain (mV), offset (mV) and refractory period (ms) so the LIF rate follows sigmoid(x)/lambda on the range.

    Least squares on a uniform grid of ``n_points`` currents; the refractory period is bounded to
    [``min_refractory_ms``, lambda) so the neuron saturates near 1/lambda as the sigmoid does.
    """
    low, high = map(float, current_range)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"operating range ({low}, {high}) must be finite with high > low")
    if lambda_s <= 0:
        raise ValueError(f"lambda must be > 0 s, got {lambda_s}")
    max_refractory_ms = 0.97 * lambda_s * 1000.0
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
    rms = float(np.sqrt(np.mean((best.fun / lambda_s) ** 2)))
    return LIFCalibration(
        lambda_s=float(lambda_s),
        gain_mV=gain,
        offset_mV=offset,
        noise_mV=float(noise_mV),
        refractory_ms=refractory,
        current_low=low,
        current_high=high,
        rms_error_hz=rms,
    )

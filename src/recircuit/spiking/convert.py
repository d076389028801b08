"""Rate circuit -> LIF twin, unit for unit (Kim, Li & Sejnowski 2019, PNAS 116:22811).

Rate unit i becomes LIF neuron i firing at about phi(x_i) / lambda Hz, where x_i = W_rec h + W_in u + b is the rate
model's current. The rate h_j corresponds to lambda r_j, r_j being neuron j's spike train through a unit-area synaptic
kernel whose decay constant is the rate unit's tau, so the spiking current is W_rec (lambda r) + W_in u + b:

* recurrent and readout weights are scaled by one lambda (s), chosen by a recorded grid search (`simulate.py`);
* input weights, bias and tau are copied; Dale's law is kept because lambda > 0 scales every column alike;
* the neuron's f-I curve is calibrated so that f(x) = phi(x) / lambda over the circuit's operating range: the
  membrane drive is ``gain * x + offset`` (mV) and the refractory period sets the saturation, fitted to the
  diffusion-approximation (Siegert) rate of a LIF neuron with white membrane noise, then (spiking.time_step_correction)
  refitted to the exact rate of that neuron as Brian2 integrates it (`time_step.py`), then checked by simulation.

Refused, never silently dropped: relu/softplus (rates that do not saturate: the LIF map failed for every relu net and
half of the softplus nets in Kim 2019 Fig. 7), divisive normalization (see below), and any parameter or spec field
the converter does not know (a mechanism without a spiking counterpart). tanh circuits are rewritten exactly as
sigmoid circuits first (§1.3 of the spiking note): with s = (1 + h) / 2, W' = 4 W, b' = 2 b - 2 W 1, W_in' = 2 W_in,
W_out' = 2 W_out, b_out' = b_out - W_out 1.

Inhibitory normalization (`recircuit.circuit.normalization`). ``subtractive``: the E units' current is
z_E = a_E - W_EI i with i = W_IX [h_{t-1}; u_t; 1], from n_I fast, stateless, linear interneurons. They become n_I
extra LIF neurons, appended after the n model units (indices 0..n-1 keep their meaning), that are inhibitory: their
outgoing weights reach E units only and are <= 0. In sigmoid space (tanh: i = 2 W_IX,h s + W_IX,u u + (W_IX,1 -
W_IX,h 1), and the E-row subtraction doubles, W_EI' = 2 W_EI) interneuron k is a sigmoid unit used in its near-linear
range: current y_k = c_k (i_k - m_k), rate s_k = sigmoid(y_k) ~ 1/2 + y_k/4 (a ``lif`` circuit's interneurons use its
curve: phi(0) + phi'(0) y_k), so i_k ~ m_k - 2/c_k + (4/c_k) s_k and
the E rows get -(4/c_k) W_EI'[:, k] s_k plus the constant W_EI'[:, k] (2/c_k - m_k) in their bias (exact where the
sigmoid is linear). m_k is the midpoint of the interneuron's activity between its 1st and 99th percentiles on given
rate trajectories, c_k = Y / half that range, Y = ``normalization_current`` (spiking.normalization_current): a larger
Y modulates the interneuron's firing more (sigmoid 0.27..0.73 of the maximum rate at Y = 1, better against spike
noise) but adds more linearisation error (sigmoid(y) - 1/2 - y/4 ~ -y^3/48, relative -y^2/12; the E current error
scales as Y^2). In the rate equivalent the interneurons stay instantaneous (`RateCircuit.interneuron_rates`). In
the twin every synapse is filtered with its presynaptic unit's decay (exact, as h_j = lambda r_j with r_j filtered by
unit j's kernel; `recircuit.spiking.network`): the interneurons read the model units through the model units' kernel
and reach the E units through their own short one, of decay spiking.normalization_tau_ms.
``divisive`` is refused: it divides the drive by sqrt(B_EI (B_IX x)^2), the SD of a signed projection (B_IX has
both signs on every presynaptic unit, so it is not Dale's law), and a synapse adds current, it cannot divide the
drive. Error normalization (``errors``) and the homeostatic loss act only in training and convert trivially.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.special import expit

from recircuit.circuit.lif_curve import (
    LIFCurve,
    TabulatedCurve,
    fit_to_sigmoid,
    siegert_rate_hz,
)
from recircuit.spiking.time_step import fit_drive, rate_table

# What the converter knows about the rate circuit; anything else is a mechanism without a spiking counterpart.
KNOWN_PARAMETERS = frozenset(
    {
        "recurrent_raw",
        "input_raw",
        "bias",
        "output_raw",
        "output_bias",
        "encoder",
        "encoder_bias",
        "normalization.ix_raw",  # W_IX of subtractive normalization: the interneurons' input
        "normalization.ei_raw",  # W_EI: the interneurons' output onto E units
    }
)
KNOWN_BUFFERS = frozenset(
    {
        "column_sign",
        "recurrent_mask",
        "normalization.presynaptic_sign",  # Dale signs of W_IX's columns
        "normalization.fa_weights",  # error normalization (training only)
    }
)
KNOWN_NETWORK_FIELDS = frozenset(
    {
        "n_exc",
        "n_inh",
        "dale",
        "activation",
        "tau_ms",
        "spectral_radius",
        "input_weights",
        "input_init",
        "zero_self_connections",
        "learned_bias",
        "initial_state",
        "noise",
        "normalization",
    }
)
KNOWN_NOISE_FIELDS = frozenset({"recurrent_sd", "input_sd", "placement"})
# errors (error normalization) and homeostatic_weight act only in training; kind is checked on its own
KNOWN_NORMALIZATION_FIELDS = frozenset({"kind", "errors", "n_interneurons", "homeostatic_weight"})
CONVERTIBLE_NORMALIZATION = ("none", "subtractive")
NORMALIZATION_PERCENTILES = (1.0, 99.0)  # an interneuron's activity range, mapped onto currents [-Y, Y]
DIVISIVE_REFUSAL = (
    "network.normalization.kind = 'divisive' has no spiking counterpart: it divides the excitatory drive by "
    "sqrt(B_EI (B_IX x)^2), the SD of a signed projection B_IX of the presynaptic activity (both signs on every "
    "presynaptic unit, so not Dale's law), and a LIF synapse adds current, it cannot divide the drive. What converts: "
    "network.normalization.kind = 'subtractive' (its interneurons become spiking inhibitory neurons) or 'none'. "
    "Refusing rather than dropping the division silently."
)


class ConversionRefused(ValueError):
    """The circuit has something the unit-for-unit LIF conversion cannot represent."""


@dataclass(frozen=True)
class RateTrajectories:
    """Trajectories of the trained rate circuit in the model's own space (tanh or sigmoid), numpy."""

    rates: np.ndarray  # (trial, time, units) h_t
    inputs: np.ndarray  # (trial, time, n_inputs) u_t as fed to the circuit (input noise included)
    initial_rates: np.ndarray  # (trial, units) h_0


@dataclass(frozen=True)
class RateCircuit:
    """The effective weights of a trained rate circuit in float64, post x pre, with phi = sigmoid.

    Units: the n model units (E then I), then ``n_norm`` normalization interneurons (subtractive normalization,
    see the module docstring), which are instantaneous in this rate equivalent: at step t their rates
    s_I = sigmoid(W[I, :n] s_{t-1} + W_in[I] u_t + b[I]) enter the model units' current of the same step.
    """

    input: np.ndarray  # (units, n_inputs)
    recurrent: np.ndarray  # (units, units), post x pre
    bias: np.ndarray  # (units,)
    output: np.ndarray  # (n_outputs, units); zero on interneurons
    output_bias: np.ndarray  # (n_outputs,)
    tau_s: np.ndarray  # (units,) time constant of each unit, s (a = step_s / tau_s); interneurons: their synaptic decay
    # (units,) decay of the twin's kernel of each unit's spikes, s: on every synapse the unit makes (presynaptic
    # decay) and in its readout trace
    synaptic_tau_s: np.ndarray
    n_exc: int
    n_inh: int
    dale: bool
    step_s: float  # rate-model time step, s
    source_activation: str  # the trained activation: 'sigmoid', 'tanh' (rewritten exactly as sigmoid) or 'lif'
    n_norm: int = 0  # normalization interneurons: the last n_norm units
    norm_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n_norm,) c_k of y_k = c_k (i_k - m_k)
    norm_midpoint: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n_norm,) m_k, model-space activity
    norm_current: float = 0.0  # Y: the interneurons' activity range maps onto currents [-Y, Y] (0 without any)
    lif_curve: TabulatedCurve | None = None  # a ``lif`` circuit's activation (the torch model's interpolant)

    @property
    def n_units(self) -> int:
        """All neurons of the twin: model units and normalization interneurons."""
        return self.recurrent.shape[0]

    @property
    def n_model(self) -> int:
        """Units of the trained rate model (E then I); the interneurons follow them."""
        return self.n_units - self.n_norm

    @property
    def alpha(self) -> np.ndarray:
        """Euler step of each model unit, dt/tau (n_model,): the rate model's update s += alpha (phi(.) - s)."""
        return self.step_s / self.tau_s[: self.n_model]

    def initial_rates(self, tanh_rates: np.ndarray) -> np.ndarray:
        """The model's rates h (..., n_model) mapped into this sigmoid circuit (s = (1 + h)/2 after a tanh rewrite)."""
        return (1.0 + tanh_rates) / 2.0 if self.source_activation == "tanh" else tanh_rates

    @property
    def state_scale(self) -> float:
        """Sigmoid-space rate per unit of the model's own rate: 1/2 after a tanh rewrite (s = (1 + h)/2), else 1."""
        return 0.5 if self.source_activation == "tanh" else 1.0

    def phi(self, current: np.ndarray) -> np.ndarray:
        """The circuit's rate function in float64: sigmoid, or for a ``lif`` circuit the twin's LIF curve (the same
        interpolant the torch model uses)."""
        if self.lif_curve is not None:
            return self.lif_curve(torch.as_tensor(np.asarray(current, dtype=np.float64))).numpy()
        return expit(current)

    def interneuron_rates(self, previous: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """Rates (..., n_norm) of the instantaneous interneurons at a step whose model units start from rates
        ``previous`` (..., n_model) with input ``inputs`` (..., n_inputs); (..., 0) without interneurons."""
        n = self.n_model
        current = previous @ self.recurrent[n:, :n].T + inputs @ self.input[n:].T + self.bias[n:]
        return self.phi(current)

    def presynaptic(self, previous: np.ndarray, inputs: np.ndarray) -> np.ndarray:
        """[s_{t-1}; s_I,t] (..., n_units): what every unit's current at step t reads (W[I, I] = 0)."""
        return np.concatenate([previous, self.interneuron_rates(previous, inputs)], axis=-1)

    def unit_rates(self, rates: np.ndarray, inputs: np.ndarray, initial_rates: np.ndarray) -> np.ndarray:
        """All units' sigmoid rates (trial, time, n_units) along model-space rates (trial, time, n_model), inputs
        (trial, time, n_inputs) and h0 (trial, n_model): interneuron rates at step t are those the model units'
        current of step t reads (from s_{t-1} and u_t)."""
        s = self.initial_rates(rates)
        if not self.n_norm:
            return s
        previous = np.concatenate([self.initial_rates(initial_rates)[:, None], s[:, :-1]], axis=1)
        return np.concatenate([s, self.interneuron_rates(previous, inputs)], axis=-1)

    def start_rates(self, initial_rates: np.ndarray) -> np.ndarray:
        """All units' sigmoid rates (..., n_units) at the start of a trial from model-space h0 (..., n_model): the
        interneurons at h0 with zero input."""
        s0 = self.initial_rates(initial_rates)
        return self.presynaptic(s0, np.zeros(s0.shape[:-1] + (self.input.shape[1],)))

    def check_dale(self) -> None:
        """Raise if a recurrent column has the wrong sign for its population.

        Interneuron columns must be <= 0 and zero on every row but the E units' (with or without Dale's law, as
        W_EI >= 0 in the rate model); under Dale's law E columns are >= 0 and I columns <= 0 on every row,
        interneuron rows included (W_IX keeps the presynaptic signs)."""
        n = self.n_model
        if self.n_norm:
            norm = self.recurrent[:, n:]
            if (norm > 0).any() or norm[self.n_exc :].any():
                raise ConversionRefused(
                    "normalization interneuron weights must be <= 0 and reach only E units (W_EI >= 0 onto E rows)"
                )
        if not self.dale:
            return
        exc, inh = self.recurrent[:, : self.n_exc], self.recurrent[:, self.n_exc : n]
        if (exc < 0).any() or (inh > 0).any():
            raise ConversionRefused("recurrent weights break Dale's law (E columns must be >= 0, I columns <= 0)")


def check_convertible(spec, state_keys, lif_curve: TabulatedCurve | None = None) -> None:
    """Refuse, naming the spec field or parameter, what the LIF twin cannot represent; ``lif_curve``: the curve a
    ``lif`` circuit was trained with (`EICircuit.lif_curve`), whose neuron ``spec.spiking`` must keep."""
    net = spec.network
    if net.activation in ("relu", "softplus"):
        raise ConversionRefused(
            f"network.activation is {net.activation!r}: the unit-for-unit LIF conversion needs a saturating rate "
            "function. A LIF neuron's rate saturates (at about 1/refractory) while relu/softplus rates grow without "
            "bound, and Kim, Li & Sejnowski (2019, Fig. 7) converted 0 of 100 relu and 55 of 100 softplus networks "
            "this way. Retrain with network.activation: lif (the twin's own f-I curve, as the shipped specs), or "
            "sigmoid (or tanh, which is rewritten exactly as sigmoid) through a fitted LIF curve."
        )
    if net.activation not in ("sigmoid", "tanh", "lif"):
        raise ConversionRefused(f"network.activation {net.activation!r} has no LIF counterpart here")
    if net.activation == "lif" and lif_curve is not None:
        neuron, trained = spec.spiking, lif_curve.curve
        mismatched = [
            f"spiking.{field} = {getattr(neuron, field)} (the activation's is {value})"
            for field, value in (
                ("membrane_noise_mV", trained.noise_mV),
                ("tau_m_ms", trained.tau_m_ms),
                ("threshold_gap_mV", trained.threshold_gap_mV),
                ("lif_max_rate_hz", trained.max_rate_hz),
            )
            if getattr(neuron, field) != value
        ]
        if mismatched:
            raise ConversionRefused(
                "network.activation is 'lif': the circuit was trained with the f-I curve of its spiking neuron, so "
                "its twin must use that neuron (retrain to change it), but " + "; ".join(mismatched)
            )
    if net.normalization.kind == "divisive":
        raise ConversionRefused(DIVISIVE_REFUSAL)
    if net.noise.distribution != "gaussian":
        raise ConversionRefused(
            f"network.noise.distribution is {net.noise.distribution!r}: its nonzero mean (recurrent_sd / 2 per step) "
            "is a tonic drive the circuit was trained with, and the twin's zero-mean membrane noise has no "
            "counterpart for it. Convert circuits trained with network.noise.distribution: gaussian."
        )
    problems = []
    if net.normalization.kind not in CONVERTIBLE_NORMALIZATION:
        problems.append(f"network.normalization.kind = {net.normalization.kind!r}")
    defaults = type(net)()
    for name in type(net).model_fields:
        if name not in KNOWN_NETWORK_FIELDS and getattr(net, name) != getattr(defaults, name):
            problems.append(f"network.{name} = {getattr(net, name)!r}")
    for name in type(net.noise).model_fields:
        if name not in KNOWN_NOISE_FIELDS and getattr(net.noise, name) != getattr(defaults.noise, name):
            problems.append(f"network.noise.{name} = {getattr(net.noise, name)!r}")
    norm, norm_defaults = net.normalization, defaults.normalization
    for name in type(norm).model_fields:
        if name not in KNOWN_NORMALIZATION_FIELDS and getattr(norm, name) != getattr(norm_defaults, name):
            problems.append(f"network.normalization.{name} = {getattr(norm, name)!r}")
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


def interneuron_activity(ix: np.ndarray, trajectories: RateTrajectories) -> np.ndarray:
    """The rate model's interneuron activity i = W_IX [h_{t-1}; u_t; 1] (trial, time, n_I) along trajectories."""
    rates, inputs = trajectories.rates, trajectories.inputs
    n, n_inputs = rates.shape[-1], inputs.shape[-1]
    if ix.shape[1] != n + n_inputs + 1:
        raise ValueError(f"W_IX has {ix.shape[1]} columns; trajectories give {n} units + {n_inputs} inputs + 1")
    previous = np.concatenate([trajectories.initial_rates[:, None], rates[:, :-1]], axis=1)
    return previous @ ix[:, :n].T + inputs @ ix[:, n : n + n_inputs].T + ix[:, -1]


def _phi_at_zero(lif_curve: TabulatedCurve | None) -> tuple[float, float]:
    """(phi(0), phi'(0)) of the twin's rate function: (1/2, 1/4) for the sigmoid (and rewritten tanh); a lif
    circuit's from its curve's interpolant."""
    if lif_curve is None:
        return 0.5, 0.25
    value, slope = lif_curve.value_and_slope(torch.zeros(1, dtype=torch.float64))
    return float(value[0]), float(slope[0])


def rate_circuit_from_model(
    model,
    synaptic_tau: str = "rate_tau",
    trajectories: RateTrajectories | None = None,
    *,
    normalization_tau_s: float = 0.01,
    normalization_current: float = 1.0,
) -> RateCircuit:
    """The sigmoid rate circuit equivalent to a trained EICircuit (refusing what cannot convert).

    ``synaptic_tau``: 'rate_tau' (Kim et al.: the synaptic decay is the unit's tau) or 'discrete_matched'
    (see `synaptic_decay_s`). A circuit with subtractive normalization also needs ``trajectories`` of the model
    (e.g. the lambda-search trials) to set its interneurons' operating range, maps that range onto currents
    [-``normalization_current``, +``normalization_current``] and gives their synapses onto the E units the decay
    ``normalization_tau_s`` (see the module docstring)."""
    spec = model.spec
    lif_curve = model.lif_curve
    check_convertible(spec, model.state_dict().keys(), lif_curve)
    weights = {k: v.detach().cpu().double().numpy() for k, v in model.effective_weights().items()}
    n = weights["recurrent"].shape[0]
    n_exc = spec.network.n_exc
    w_in, w_rec, b = weights["input"], weights["recurrent"], weights["bias"]
    w_out, b_out = weights["output"], weights["output_bias"]
    tanh = spec.network.activation == "tanh"
    if tanh:
        w_in, w_rec, b, w_out, b_out = (
            2.0 * w_in,
            4.0 * w_rec,
            2.0 * b - 2.0 * w_rec.sum(1),
            2.0 * w_out,
            b_out - w_out.sum(1),
        )
    tau_s = np.full(n, spec.network.tau_ms / 1000.0)
    synaptic = synaptic_decay_s(tau_s, spec.task.dt_s, synaptic_tau)
    norm: dict = {}
    if "normalization_ix" in weights:
        if trajectories is None:
            raise ValueError(
                "the circuit has subtractive normalization interneurons: rate_circuit_from_model needs rate "
                "trajectories of the model (trajectories=RateTrajectories(...)) to set their operating range"
            )
        if not (normalization_tau_s > 0 and normalization_current > 0):
            raise ValueError("normalization_tau_s and normalization_current must be > 0")
        ix, ei = weights["normalization_ix"], weights["normalization_ei"]
        k, n_inputs = ix.shape[0], w_in.shape[1]
        activity = interneuron_activity(ix, trajectories).reshape(-1, k)
        low, high = np.percentile(activity, NORMALIZATION_PERCENTILES, axis=0)
        midpoint = (low + high) / 2.0
        half = np.maximum((high - low) / 2.0, 1e-6 * (1.0 + np.abs(midpoint)))  # a constant interneuron stays finite
        scale = normalization_current / half
        ix_h, ix_u, ix_1 = ix[:, :n], ix[:, n : n + n_inputs], ix[:, -1]
        if tanh:  # i = 2 W_IX,h s + W_IX,u u + (W_IX,1 - W_IX,h 1); the sigmoid current is twice the tanh one
            ix_h, ix_1, ei = 2.0 * ix_h, ix_1 - ix_h.sum(1), 2.0 * ei
        recurrent = np.zeros((n + k, n + k))
        recurrent[:n, :n] = w_rec
        # s_k = phi(y_k) ~ phi(0) + phi'(0) y_k (sigmoid: 1/2 + y/4), so i_k ~ m_k + (s_k - phi(0)) / (phi'(0) c_k)
        level, slope = _phi_at_zero(lif_curve)
        recurrent[:n_exc, n:] = -(1.0 / (slope * scale)) * ei
        recurrent[n:, :n] = scale[:, None] * ix_h
        w_rec = recurrent
        w_in = np.concatenate([w_in, scale[:, None] * ix_u])
        b = np.concatenate([b, scale * (ix_1 - midpoint)])
        b[:n_exc] += ei @ (level / (slope * scale) - midpoint)
        w_out = np.concatenate([w_out, np.zeros((w_out.shape[0], k))], axis=1)
        tau_s = np.concatenate([tau_s, np.full(k, normalization_tau_s)])
        synaptic = np.concatenate([synaptic, np.full(k, normalization_tau_s)])
        norm = {
            "n_norm": k,
            "norm_scale": scale,
            "norm_midpoint": midpoint,
            "norm_current": float(normalization_current),
        }
    circuit = RateCircuit(
        input=w_in,
        recurrent=w_rec,
        bias=b,
        output=w_out,
        output_bias=b_out,
        tau_s=tau_s,
        synaptic_tau_s=synaptic,
        n_exc=n_exc,
        n_inh=spec.network.n_inh,
        dale=spec.network.dale,
        step_s=spec.task.dt_s,
        source_activation=spec.network.activation,
        lif_curve=lif_curve,
        **norm,
    )
    circuit.check_dale()
    return circuit


# ------------------------------------------------------------------------------------------------ f-I calibration
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
    rms_error_hz: float  # RMS of the predicted rate (`rate_hz`) - target over the range, Hz
    dt_ms: float | None = None  # fitted for the neuron integrated at this step (`time_step`); None: continuous time
    curve: LIFCurve | None = None  # a lif circuit's own curve, the rate function fitted (exactly); None: the sigmoid

    @property
    def max_rate_hz(self) -> float:
        return 1.0 / self.lambda_s

    @property
    def target(self) -> str:
        """The rate function fitted: 'sigmoid', or 'lif' (the circuit's own curve)."""
        return "sigmoid" if self.curve is None else "lif"

    @property
    def relative_rms_error(self) -> float:
        """RMS error over the range / maximum rate 1/lambda."""
        return self.rms_error_hz * self.lambda_s

    def target_rate_hz(self, current: np.ndarray) -> np.ndarray:
        """phi(x) / lambda, Hz: the sigmoid's, or for a lif circuit its LIF curve's."""
        current = np.asarray(current, dtype=np.float64)
        return (self.curve(current) if self.curve is not None else expit(current)) / self.lambda_s

    def drive_mV(self, current: np.ndarray) -> np.ndarray:
        """Membrane drive gain x + offset (mV above rest) at rate-model current x."""
        return self.gain_mV * np.asarray(current, dtype=np.float64) + self.offset_mV

    def siegert_rate_hz(self, current: np.ndarray, gap_mV: float, tau_m_ms: float) -> np.ndarray:
        """The fitted LIF rate (diffusion approximation, continuous time) at rate-model current x, Hz."""
        return siegert_rate_hz(
            self.drive_mV(current), self.noise_mV, gap_mV, tau_m_ms / 1000.0, self.refractory_ms / 1000.0
        )

    def rate_hz(self, current: np.ndarray, gap_mV: float, tau_m_ms: float) -> np.ndarray:
        """The calibrated neuron's rate at rate-model current x, Hz: as integrated at ``dt_ms`` (`time_step.rate_table`)
        where the calibration was fitted for it, else the Siegert rate."""
        if self.dt_ms is None:
            return self.siegert_rate_hz(current, gap_mV, tau_m_ms)
        table = rate_table(self.noise_mV, gap_mV, tau_m_ms, self.dt_ms)
        return table.rate_hz(self.drive_mV(current), self.refractory_ms)

    def lif_activation(
        self, gap_mV: float, tau_m_ms: float, n_points: int = 20_001
    ) -> Callable[[np.ndarray], np.ndarray]:
        """x -> lambda f_LIF(x): the calibrated neuron's f-I curve (`rate_hz`) in the rate model's units.

        Tabulated on ``n_points`` currents spanning 5x the operating range and interpolated linearly; beyond the
        table the rate is held at its end values (the neuron is silent or saturated there)."""
        width = self.current_high - self.current_low
        grid = np.linspace(self.current_low - 2 * width, self.current_high + 2 * width, n_points)
        table = self.lambda_s * self.rate_hz(grid, gap_mV, tau_m_ms)
        return lambda current: np.interp(current, grid, table)


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

    `recircuit.circuit.lif_curve.fit_to_sigmoid`: least squares on a uniform grid of ``n_points`` currents, the
    refractory period bounded to [``min_refractory_ms``, 0.97 lambda] so the neuron saturates near 1/lambda.
    """
    low, high = map(float, current_range)
    gain, offset, refractory, rms = fit_to_sigmoid(
        lambda_s, (low, high), noise_mV, gap_mV, tau_m_ms, min_refractory_ms, n_points
    )
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


def correct_for_time_step(
    cal: LIFCalibration,
    gap_mV: float,
    tau_m_ms: float,
    dt_ms: float,
    min_refractory_ms: float = 0.0,
    n_points: int = 161,
) -> LIFCalibration:
    """``cal`` refitted for the neuron integrated at ``dt_ms`` (`time_step.fit_drive`): gain, offset and a refractory
    period of whole steps (at least two and ``min_refractory_ms``) such that the discretized neuron follows
    ``cal.target_rate_hz`` over the calibration's current range. The result has ``dt_ms`` set (`rate_hz` is then the
    discretized neuron's rate)."""
    current = np.linspace(cal.current_low, cal.current_high, n_points)
    gain, offset, refractory, rms = fit_drive(
        current, cal.target_rate_hz(current), cal.gain_mV, cal.offset_mV, cal.refractory_ms, cal.noise_mV, gap_mV,
        tau_m_ms, dt_ms, cal.lambda_s, min_refractory_ms,
    )  # fmt: skip
    return replace(
        cal, gain_mV=gain, offset_mV=offset, refractory_ms=refractory, rms_error_hz=rms, dt_ms=dt_ms
    )


def lif_curve_calibration(
    current_range: tuple[float, float], lif_curve: TabulatedCurve, n_points: int = 161
) -> LIFCalibration:
    """The twin's neuron input of a circuit trained with the ``lif`` activation ``lif_curve`` (`RateCircuit.lif_curve`):
    no fit, the curve's own lambda, gain, offset, refractory period and noise; the RMS error is that of the torch
    interpolant against the exact curve over the operating range (rounding level)."""
    low, high = map(float, current_range)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"operating range ({low}, {high}) must be finite with high > low")
    current = np.linspace(low, high, n_points)
    curve = lif_curve.curve
    interpolated = lif_curve(torch.as_tensor(current)).numpy()
    rms = float(np.sqrt(np.mean((interpolated - curve(current)) ** 2))) / curve.lambda_s
    return LIFCalibration(
        lambda_s=curve.lambda_s,
        gain_mV=curve.gain_mV,
        offset_mV=curve.offset_mV,
        noise_mV=curve.noise_mV,
        refractory_ms=curve.refractory_ms,
        current_low=low,
        current_high=high,
        rms_error_hz=rms,
        curve=curve,
    )

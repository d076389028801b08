"""The Brian2 LIF network of a spiking twin: build once per network size, run many times with new arrays.

One neuron per rate unit (and per normalization interneuron of a subtractive circuit), one dense ``Synapses`` object
(every pre -> post pair connected in pre-major order, zeros kept, so one compiled binary serves every weight matrix of
that size), an event-driven double-exponential synaptic filter, and the input drive ``W_in u(t)`` through a 2-D
``TimedArray`` that holds each rate step's value for one rate step.

Membrane (mV, s)::

    tau_m dv/dt = v_rest - v + gain (I_rec + I_ext(t, i) + bias) + offset + noise sqrt(tau_m) xi   (unless refractory)
    I_rec = sum_j w_ij r_ij        (dimensionless: w = lambda W_rec in s, r_ij the filtered spike train of j in Hz)

Synaptic filter. The rate model's h_j is lambda r_j, r_j being unit j's spikes through a unit-area kernel
K_j(s) = (exp(-s/tau_j) - exp(-s/tau_rise)) / (tau_j - tau_rise) whose decay tau_j is unit j's own, so a synapse from j
is exact when it is filtered with the *presynaptic* decay tau_j, whoever receives it. Brian2 filters the sum of a
neuron's inputs in one state variable whose decay is the receiving neuron's, so the twin holds one current per
presynaptic decay:

* networks without normalization interneurons (``NetworkShape.fast_synapses = False``): one current I_rec with the
  decay ``syn_rate = 1/tau_syn`` of each neuron (Kim, Li & Sejnowski 2019's code filters with the postsynaptic
  decay, which is the same thing here, as every model unit has the same tau);
* with interneurons (``fast_synapses = True``): I_rec (decay of the model units, the same for every neuron,
  interneurons included) receives the spikes of the model units, and a second current I_fast, with its own rise
  variable and the interneurons' short decay (``NeuronParameters.tau_fast_s``), receives the spikes of the neurons
  flagged ``NeuronParameters.fast`` (the interneurons). Interneurons then read lambda r = h of the model units, and
  E units read the interneurons through their fast kernel, nearly instantaneous as in the rate model::

      tau_m dv/dt = ... gain (I_rec + I_fast + I_ext(t, i) + bias) ...
      on a spike of j:  g_rise_i += w_ij (1 - is_fast_j) / (tau_syn_i tau_rise)
                        g_fast_i += w_ij is_fast_j / (tau_fast_i tau_rise)

  The flags and the fast decay are per-run arrays (``run_args``), so one binary per size serves every circuit; the
  equations without interneurons are unchanged, and so are their binary and build key.

The readout trace r (each neuron's own spikes through its own kernel K_j, Hz; read out as lambda W_out r)
is computed exactly from the recorded spike times (`filter_spikes`), so the network has a single clock: Brian2
writes clocks into main.cpp in set order, and a second clock made the generated code, hence the binary, differ
from one process to the next.

Batching: one simulation holds ``NetworkShape.copies`` independent copies of the network (K x N neurons, synapses
only within each copy: block-diagonal), each with its own weights, input, parameters, initial state and noise
seed, so one ``device.run`` (whose fixed cost -- process start, loading arrays, writing results -- is 0.1-0.2 s)
simulates K trials. `SpikingNetwork.run_batch` takes up to K runs; unused copies idle (no weights, no drive, no
noise: they never spike).

Targets: ``cpp_standalone`` compiles once per (size, copies, equations, time steps) into a build folder shared by
jobs (guarded by a lock file; every job then runs a private copy of the binary, so concurrent jobs never write
into the same folder), then each batch is one run of the binary with per-run arrays given on its command line
(Brian's ``run_args`` mechanism); an array equal to the one of the previous run is not written again. ``numpy``
runs the same model in Python (no compiler, slower), for machines without one.

Randomness: the membrane noise is counter-based (`noise.py`): neuron u of a run with seed s gets sample
normal(key(s, u), step), a pure function, so a trial's spikes do not depend on what else runs in the same batch,
and both targets draw the same numbers. Nothing uses Brian's own generators.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recircuit.spiking import noise

STATE_VARIABLES = ("v", "I_rec", "g_rise", "lastspike", "not_refractory")
FAST_STATE_VARIABLES = ("I_fast", "g_fast")  # the fast current and its rise variable (NetworkShape.fast_synapses)
PARAMETERS = ("syn_rate", "spike_gain", "bias", "gain", "offset", "noise", "t_ref")

# Brian2 equations in the names used above; units are Brian units (volt, second, Hz). The noise term is Euler-
# Maruyama's noise sqrt(dt/tau_m) z per step with z ~ N(0, 1) from the counter-based generator of noise.py.
NEURON_EQUATIONS = """
dv/dt = (v_rest - v + gain*(I_rec + I_ext(t,i) + bias) + offset)/tau_m + noise*twin_normal(key_high, key_low, t_in_timesteps)/sqrt(tau_m*dt) : volt (unless refractory)
dI_rec/dt = -I_rec*syn_rate + g_rise : 1
dg_rise/dt = -g_rise/tau_rise : Hz
syn_rate : Hz (constant)
spike_gain : Hz**2 (constant)
bias : 1 (constant)
gain : volt (constant)
offset : volt (constant)
noise : volt (constant)
t_ref : second (constant)
key_high : integer (constant)
key_low : integer (constant)
"""
# With normalization interneurons (NetworkShape.fast_synapses): a second current I_fast, fed by the neurons flagged
# is_fast (0 or 1), decaying at fast_rate; I_rec is fed by the others. Everything else as NEURON_EQUATIONS.
_MEMBRANE_INPUT = "gain*(I_rec + I_ext(t,i) + bias)"
assert _MEMBRANE_INPUT in NEURON_EQUATIONS
FAST_NEURON_EQUATIONS = NEURON_EQUATIONS.replace(_MEMBRANE_INPUT, "gain*(I_rec + I_fast + I_ext(t,i) + bias)") + """\
dI_fast/dt = -I_fast*fast_rate + g_fast : 1
dg_fast/dt = -g_fast/tau_rise : Hz
fast_rate : Hz (constant)
fast_gain : Hz**2 (constant)
is_fast : 1 (constant)
"""
RESET = "v = v_reset"
ON_PRE = "g_rise_post += w*spike_gain_post"
FAST_ON_PRE = """
g_rise_post += w*spike_gain_post*(1 - is_fast_pre)
g_fast_post += w*fast_gain_post*is_fast_pre
"""
CONNECT = "k for k in range(n_units*(i//n_units), n_units*(i//n_units) + n_units)"  # all pairs within a copy
# Refractory while less than t_ref has passed, with t_ref = (whole steps of the refractory period - 1/2) dt: the
# same steps as Brian's own rule for refractory="t_ref" (timestep(t - lastspike) < timestep(t_ref)), without its
# two divisions per neuron and step.
REFRACTORY = "t - lastspike < t_ref"
# Set for a run of the binary: keep the synapse arrays so that they are written out with the results.
KEEP_SYNAPSES_VARIABLE = "RECIRCUIT_KEEP_SYNAPSES"
# -march=native (about 10% faster binaries than generic x86-64 code); a build cache shared between machines stays
# correct because the build key holds the host CPU (`host_cpu`), so another kind of CPU gets its own build.
COMPILE_ARGS = ["-w", "-O3", "-ffast-math", "-fno-finite-math-only", "-march=native", "-std=c++11"]


def host_cpu() -> str:
    """What -march=native compiles for: the CPU's model name and instruction-set flags (Linux), else the platform."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text(errors="replace").splitlines():
            name, _, value = (part.strip() for part in line.partition(":"))
            if name in ("model name", "flags", "Features", "CPU part") and name not in fields:  # x86 and ARM names
                fields[name] = value if name == "model name" else " ".join(sorted(value.split()))
        if fields:
            return f"{platform.machine()} " + "; ".join(f"{k}: {v}" for k, v in sorted(fields.items()))
    return f"{platform.machine()} {platform.processor()}"


@dataclass(frozen=True)
class LIFConstants:
    """Constants compiled into the network (changing one means a new build)."""

    tau_m_ms: float = 10.0
    v_rest_mV: float = -65.0
    v_threshold_mV: float = -50.0
    v_reset_mV: float = -65.0
    tau_rise_ms: float = 2.0

    @property
    def threshold_gap_mV(self) -> float:
        """Threshold minus rest, mV."""
        return self.v_threshold_mV - self.v_rest_mV


@dataclass(frozen=True)
class NetworkShape:
    """What a compiled binary is specific to: size, copies per run, trial length and time steps."""

    n_units: int
    steps: int  # rate steps per run
    step_s: float  # length of one rate step (the TimedArray step), s
    dt_ms: float  # integration step, ms
    copies: int = 1  # independent copies of the network simulated side by side in one run
    # a second, fast synaptic current for the spikes of neurons flagged NeuronParameters.fast (normalization
    # interneurons); False: today's single-current network (see the module docstring)
    fast_synapses: bool = False

    @property
    def duration_s(self) -> float:
        return self.steps * self.step_s

    @property
    def n_neurons(self) -> int:
        return self.n_units * self.copies

    @property
    def state_variables(self) -> tuple[str, ...]:
        """The Brian2 state of a neuron: STATE_VARIABLES, plus FAST_STATE_VARIABLES with fast synapses."""
        return STATE_VARIABLES + (FAST_STATE_VARIABLES if self.fast_synapses else ())

    @property
    def equations(self) -> str:
        return FAST_NEURON_EQUATIONS if self.fast_synapses else NEURON_EQUATIONS

    @property
    def on_pre(self) -> str:
        return FAST_ON_PRE if self.fast_synapses else ON_PRE


@dataclass(frozen=True)
class NeuronParameters:
    """Per-run neuron parameters; scalars apply to every neuron, arrays have one value per neuron.

    ``tau_syn_s`` is the decay of the neuron's current I_rec; it must be the decay of the units whose spikes I_rec
    receives (the model units: the same for every neuron when there are interneurons). ``fast`` and ``tau_fast_s``
    only with ``NetworkShape.fast_synapses``: the neurons whose spikes go to the fast current I_fast instead, and
    its decay (one value or per neuron; the fast neurons' own decay)."""

    tau_syn_s: np.ndarray  # decay of the synaptic current I_rec per neuron, s
    bias: np.ndarray  # rate-model bias b per neuron (dimensionless current)
    gain_mV: float  # mV of membrane drive per unit of rate-model current
    offset_mV: float  # constant membrane drive above rest, mV
    noise_mV: float  # sigma of the membrane noise (free-membrane SD = sigma / sqrt 2), mV
    refractory_ms: float  # absolute refractory period, ms
    fast: np.ndarray | None = None  # (neurons,) bool: spikes feed I_fast (normalization interneurons)
    tau_fast_s: float | np.ndarray | None = None  # decay of the fast current I_fast, s


@dataclass(frozen=True)
class RunInputs:
    """Everything that changes from run to run."""

    weights_s: np.ndarray  # (post, pre) recurrent weights lambda W_rec, s
    drive: np.ndarray  # (steps, n_units) input current W_in u per rate step (dimensionless)
    parameters: NeuronParameters
    # NetworkShape.state_variables: v mV, I_rec 1, g_rise Hz, lastspike s, not_refractory bool (I_fast 1, g_fast Hz)
    initial_state: Mapping[str, np.ndarray]
    seed: int  # membrane-noise seed of this run (0 <= seed < 2**64)


@dataclass(frozen=True)
class RunOutput:
    spike_unit: np.ndarray  # (n_spikes,) neuron index
    spike_time_s: np.ndarray  # (n_spikes,) time since the run start, s
    final_state: dict[str, np.ndarray]  # state_variables at the end, lastspike relative to the end (<= 0)
    wall_s: float  # wall time of the run call that simulated this run (shared by the runs of one batch), s
    binary_s: float | None = None  # cpp_standalone: simulation time inside the binary (Brian's timer), s


@dataclass
class BuildInfo:
    """Where and how the network was built."""

    target: str
    directory: Path | None  # the shared build folder (standalone) or None
    key: str  # the cache key (size + hash of equations, constants and time steps)
    build_s: float  # wall time of network creation + code generation + compilation, s
    compiled: bool  # False when an up-to-date binary was reused (make found nothing to do)
    binary_mtime: float | None = None  # mtime of the shared binary after the build, s since the epoch
    extras: dict[str, Any] = field(default_factory=dict)


SYNAPSE_BUDGET = 2**21  # synapses per binary for the default number of copies (~64 MB of synapse arrays)
MAX_COPIES = 16


def default_copies(n_units: int) -> int:
    """Copies per run for a network of ``n_units``: as many as keep copies x n_units^2 <= SYNAPSE_BUDGET, 1 to
    MAX_COPIES. A function of the size only, so that every job of a sweep shares one binary per size."""
    return max(1, min(MAX_COPIES, SYNAPSE_BUDGET // (n_units * n_units)))


def build_key(shape: NetworkShape, constants: LIFConstants) -> str:
    """``N<units>x<copies>_<hash>``: a folder name unique to everything compiled into the binary.

    ``fast_synapses`` enters through the equations (and stays out of the shape's fields), so the key of a network
    without interneurons is the one it had before the fast current existed."""
    import brian2

    shape_fields = {k: v for k, v in shape.__dict__.items() if k != "fast_synapses"}
    payload = json.dumps(
        {
            "equations": shape.equations,
            "reset": RESET,
            "refractory": REFRACTORY,
            "on_pre": shape.on_pre,
            "connect": CONNECT,
            "noise_code": noise.CPP_CODE,
            "compile_args": COMPILE_ARGS,
            "host_cpu": host_cpu(),
            "constants": constants.__dict__,
            "shape": shape_fields,
            "brian2": brian2.__version__,
        },
        sort_keys=True,
    )
    return f"N{shape.n_units}x{shape.copies}_{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def filter_spikes(
    spike_unit: np.ndarray,
    spike_time_s: np.ndarray,
    steps: int,
    step_s: float,
    tau_syn_s: np.ndarray,
    tau_rise_s: float,
    initial: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Spike trains through the unit-area double-exponential kernel, sampled exactly at the end of every rate step.

    Kernel K(s) = (exp(-s/tau_syn) - exp(-s/tau_rise)) / (tau_syn - tau_rise), per neuron's own tau_syn (s).
    ``initial`` = (r in Hz, rise variable x in Hz/s) at the run start; returns the samples (steps, units) in Hz
    and the final (r, x) to carry into the next run. A spike at time t falls in step floor(t / step_s).
    """
    tau_d = np.asarray(tau_syn_s, dtype=np.float64)
    n = tau_d.size
    if np.any(tau_d <= tau_rise_s):
        raise ValueError(f"synaptic decay constants must exceed the rise time {tau_rise_s} s")
    r, x = (np.array(a, dtype=np.float64) for a in initial)
    step_bin = np.floor(np.asarray(spike_time_s) / step_s + 1e-9).astype(np.int64)
    if spike_unit.size and (step_bin.min() < 0 or step_bin.max() >= steps):
        raise ValueError(f"spike times outside the run of {steps} steps of {step_s} s")
    lag = (step_bin + 1) * step_s - spike_time_s  # time from each spike to the end of its step, (0, step_s]
    tau_spk = tau_d[spike_unit]
    add_r = np.zeros((steps, n))
    add_x = np.zeros((steps, n))
    kernel = (np.exp(-lag / tau_spk) - np.exp(-lag / tau_rise_s)) / (tau_spk - tau_rise_s)
    np.add.at(add_r, (step_bin, spike_unit), kernel)
    np.add.at(add_x, (step_bin, spike_unit), np.exp(-lag / tau_rise_s) / (tau_rise_s * tau_spk))
    decay_d = np.exp(-step_s / tau_d)
    decay_r = np.exp(-step_s / tau_rise_s)
    carry = (decay_r - decay_d) / (1.0 / tau_d - 1.0 / tau_rise_s)
    samples = np.empty((steps, n))
    for k in range(steps):
        r = r * decay_d + x * carry + add_r[k]
        x = x * decay_r + add_x[k]
        samples[k] = r
    return samples, (r, x)


def _check_run_inputs(shape: NetworkShape, inputs: RunInputs) -> None:
    n = shape.n_units
    if inputs.weights_s.shape != (n, n):
        raise ValueError(f"weights_s has shape {inputs.weights_s.shape}, expected ({n}, {n}) (post x pre)")
    if inputs.drive.shape != (shape.steps, n):
        raise ValueError(f"drive has shape {inputs.drive.shape}, expected ({shape.steps}, {n}) (steps x units)")
    missing = [k for k in shape.state_variables if k not in inputs.initial_state]
    if missing:
        raise ValueError(f"initial_state lacks {', '.join(missing)}")
    fast, tau_fast = inputs.parameters.fast, inputs.parameters.tau_fast_s
    if shape.fast_synapses:
        if fast is None or tau_fast is None:
            raise ValueError(
                "a network with fast synapses (NetworkShape.fast_synapses) needs NeuronParameters.fast and tau_fast_s"
            )
        if not np.all(np.asarray(tau_fast) > 0):
            raise ValueError(f"tau_fast_s must be > 0 s, got {tau_fast}")
    elif fast is not None and np.any(fast):
        raise ValueError(
            "NeuronParameters.fast flags neurons, but the network has no fast synaptic current "
            "(NetworkShape(..., fast_synapses=True)): their spikes would be filtered with the slow decay"
        )
    if not 0 <= int(inputs.seed) < 2**64:
        raise ValueError(f"seed {inputs.seed} must be in [0, 2**64)")
    for name, value in (("weights_s", inputs.weights_s), ("drive", inputs.drive)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} holds NaN or Inf")
    if inputs.parameters.refractory_ms < shape.dt_ms:
        raise ValueError(
            f"refractory period {inputs.parameters.refractory_ms} ms is shorter than the time step {shape.dt_ms} ms"
        )


def _per_neuron(value: Any, n: int) -> np.ndarray:
    array = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))
    return np.ascontiguousarray(array)


def resting_state(shape: NetworkShape, v_mV: float | np.ndarray) -> dict[str, np.ndarray]:
    """Initial state of ``shape.n_units`` neurons at membrane potential ``v_mV`` (mV) with no synaptic current, not
    refractory (every entry of ``shape.state_variables``)."""
    n = shape.n_units
    state = {
        "v": np.array(np.broadcast_to(np.asarray(v_mV, dtype=np.float64), (n,))),
        "I_rec": np.zeros(n),
        "g_rise": np.zeros(n),
        "lastspike": np.full(n, -1e4),
        "not_refractory": np.ones(n, dtype=bool),
    }
    if shape.fast_synapses:
        state.update({"I_fast": np.zeros(n), "g_fast": np.zeros(n)})
    return state


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a block and restore the previous values (Brian sets LD_BIND_NOW for good)."""
    keys = set(values) | {"LD_BIND_NOW"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if missing), released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SpikingNetwork:
    """A built LIF network of one shape; ``run_batch(runs)`` simulates up to ``shape.copies`` trials (or chunks of
    long trials) side by side, ``run(inputs)`` one.

    Use as a context manager: it owns Brian2's global device and preferences while open and resets them on close.
    Only one may be open per process at a time.
    """

    _open = False

    def __init__(
        self,
        shape: NetworkShape,
        constants: LIFConstants = LIFConstants(),
        target: Literal["cpp_standalone", "numpy"] = "cpp_standalone",
        build_dir: str | Path | None = None,
        make_jobs: int = 2,
        keep_synapses: bool = False,
    ):
        if target not in ("cpp_standalone", "numpy"):
            raise ValueError(f"spiking.target must be 'cpp_standalone' or 'numpy', not {target!r}")
        if target == "cpp_standalone" and build_dir is None:
            raise ValueError("the cpp_standalone target needs a build directory (build_dir)")
        if shape.n_units < 1 or shape.steps < 1 or shape.copies < 1:
            raise ValueError(f"network shape {shape} must have at least one unit, one step and one copy")
        ratio = shape.step_s * 1000.0 / shape.dt_ms
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"task.dt_s ({shape.step_s * 1000:g} ms) must be a whole number of spiking.dt_ms steps "
                f"({shape.dt_ms:g} ms)"
            )
        self.shape, self.constants, self.target = shape, constants, target
        self.build_root = Path(build_dir) if build_dir is not None else None
        self.make_jobs = make_jobs
        self.keep_synapses = keep_synapses  # cpp_standalone: write the synapses back after each run (for reading)
        self.info: BuildInfo | None = None
        self._private: Path | None = None
        self._objects: dict[str, Any] = {}
        self._arg_files: dict[str, tuple[_Snapshot, str]] = {}
        self._runs = 0
        self._frozen = False

    # ------------------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SpikingNetwork:
        if SpikingNetwork._open:
            raise RuntimeError("another SpikingNetwork is open in this process (Brian2 has one global device)")
        SpikingNetwork._open = True
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the private run folder and give Brian2 back its runtime device and default preferences."""
        from brian2 import prefs
        from brian2.devices.device import reinit_devices, set_device

        if self._private is not None:
            shutil.rmtree(self._private)
            self._private = None
        self._objects = {}
        self._arg_files = {}
        if self._frozen:
            gc.unfreeze()
            self._frozen = False
        reinit_devices()
        set_device("runtime")
        prefs.reset_to_defaults()
        SpikingNetwork._open = False

    # ---------------------------------------------------------------------------------------------------- build
    def _create_objects(self) -> None:
        import brian2 as b2

        shape, c = self.shape, self.constants
        n = shape.n_units
        clock = b2.Clock(shape.dt_ms * b2.ms, name="twin_clock")
        drive = b2.TimedArray(np.zeros((shape.steps, shape.n_neurons)), dt=shape.step_s * b2.second, name="I_ext")
        namespace = {
            "I_ext": drive,
            noise.FUNCTION_NAME: noise.brian_function(),
            "tau_m": c.tau_m_ms * b2.ms,
            "tau_rise": c.tau_rise_ms * b2.ms,
            "v_rest": c.v_rest_mV * b2.mV,
            "v_reset": c.v_reset_mV * b2.mV,
            "v_threshold": c.v_threshold_mV * b2.mV,
        }
        group = b2.NeuronGroup(
            shape.n_neurons,
            shape.equations,
            threshold="v > v_threshold",
            reset=RESET,
            refractory=REFRACTORY,
            method="euler",
            namespace=namespace,
            clock=clock,
            name="lif",
        )
        synapses = b2.Synapses(
            group, group, "w : second", on_pre=shape.on_pre, namespace=namespace, clock=clock, name="recurrent"
        )
        # Every pre -> post pair within a copy, created in order of pre, then post (so copy c holds synapses
        # c N^2 .. (c+1) N^2 - 1, pre-major). A generator rather than index arrays: no K N^2 static arrays to load.
        synapses.connect(j=CONNECT, namespace={"n_units": n})
        synapses.w = 0 * b2.second
        group.v = c.v_rest_mV * b2.mV
        group.syn_rate = 10 * b2.Hz
        group.t_ref = 2 * b2.ms
        spikes = b2.SpikeMonitor(group, name="spikes")
        network = b2.Network(group, synapses, spikes, name="twin")
        self._objects = {
            "b2": b2,
            "group": group,
            "synapses": synapses,
            "spikes": spikes,
            "drive": drive,
            "network": network,
        }

    def _build(self) -> None:
        import brian2 as b2
        from brian2.devices.device import get_device, reinit_devices, set_device

        start = time.perf_counter()
        reinit_devices()
        b2.prefs.reset_to_defaults()
        b2.prefs.logging.console_log_level = "WARNING"
        key = build_key(self.shape, self.constants)
        if self.target == "numpy":
            set_device("runtime")
            b2.prefs.codegen.target = "numpy"
            self._create_objects()
            self._objects["network"].store("initial")
            # Brian's Network.run calls gc.collect() every run: ~1 s with torch loaded. Objects alive now are moved
            # out of the collector's sight while the network is open (gc.unfreeze() on close puts them back).
            gc.freeze()
            self._frozen = True
            self.info = BuildInfo("numpy", None, key, time.perf_counter() - start, compiled=False)
            return

        b2.prefs.devices.cpp_standalone.openmp_threads = 0
        b2.prefs.devices.cpp_standalone.extra_make_args_unix = [f"-j{max(1, int(self.make_jobs))}"]
        b2.prefs.codegen.cpp.extra_compile_args_gcc = list(COMPILE_ARGS)
        set_device("cpp_standalone", build_on_run=False)
        device = get_device()
        device.reinit()
        device.activate(build_on_run=False)
        self._create_objects()
        self._objects["network"].run(self.shape.duration_s * b2.second, namespace={})
        device.insert_code("main", self._drop_synapses_code(device))

        assert self.build_root is not None
        shared = (self.build_root / key).resolve()
        binary = shared / "main"
        with _locked(self.build_root / f"{key}.lock"):
            before = binary.stat().st_mtime if binary.exists() else None
            try:
                device.build(directory=str(shared), compile=True, run=False, with_output=False)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"Brian2 could not build the spiking network in {shared} ({exc}); is a C++ compiler installed? "
                    "(spiking.target: numpy runs without one)"
                ) from exc
            if not binary.is_file():
                raise RuntimeError(f"Brian2 build in {shared} produced no binary (see {shared}/make.log if any)")
            after = binary.stat().st_mtime
            # A private copy of the binary and its static arrays: runs never write into the shared folder.
            prefix = f"{key}.run-{socket.gethostname()}-{os.getpid()}-"  # left behind only by a killed job
            private = Path(tempfile.mkdtemp(prefix=prefix, dir=self.build_root)).resolve()
            shutil.copy2(binary, private / "main")
            shutil.copytree(shared / "static_arrays", private / "static_arrays")
            (private / "results").mkdir()
        self._private = private
        device.project_dir = str(private)
        self.info = BuildInfo(
            "cpp_standalone",
            shared,
            key,
            time.perf_counter() - start,
            compiled=before is None or after != before,
            binary_mtime=after,
        )

    def _drop_synapses_code(self, device: Any) -> str:
        """C++ run after the simulation: empty the synapse arrays (32 B per synapse; they never change during a run)
        so that the binary does not write them out, unless KEEP_SYNAPSES_VARIABLE is set."""
        from brian2.core.variables import DynamicArrayVariable

        synapses = self._objects["synapses"]
        names = sorted(
            {
                device.get_array_name(var, access_data=False)
                for variables in (synapses.variables, *(path.variables for path in synapses._pathways))
                for var in variables.values()
                if isinstance(var, DynamicArrayVariable) and var.owner.name.startswith(synapses.name)
            }
        )
        cleared = " ".join(f"brian::{name}.clear();" for name in names)
        return f'if (!std::getenv("{KEEP_SYNAPSES_VARIABLE}")) {{ {cleared} }}'

    # ------------------------------------------------------------------------------------------------------ run
    def run(self, inputs: RunInputs) -> RunOutput:
        """Simulate one run of ``shape.steps`` rate steps from ``inputs.initial_state`` (other copies idle)."""
        return self.run_batch([inputs])[0]

    def run_batch(self, batch: Sequence[RunInputs]) -> list[RunOutput]:
        """Simulate up to ``shape.copies`` independent runs in one simulation; one output per run, in order.

        Each run's spikes equal those of the same run simulated alone (the noise is counter-based, the copies share
        no synapses)."""
        if self.info is None:
            raise RuntimeError("SpikingNetwork.run_batch called outside its `with` block")
        if not 1 <= len(batch) <= self.shape.copies:
            raise ValueError(f"a batch holds 1 to {self.shape.copies} runs (NetworkShape.copies), not {len(batch)}")
        for inputs in batch:
            _check_run_inputs(self.shape, inputs)
        start = time.perf_counter()
        values = self._values(batch)
        if self.target == "numpy":
            self._run_runtime(values)
            binary_s = None
        else:
            binary_s = self._run_standalone(values)
        outputs = self._collect(len(batch))
        self._runs += 1
        wall = time.perf_counter() - start
        return [RunOutput(**out, wall_s=wall, binary_s=binary_s) for out in outputs]

    def _idle(self) -> RunInputs:
        """A copy that never spikes: no weights, drive, gain or noise; at rest."""
        n, c = self.shape.n_units, self.constants
        fast = {"fast": np.zeros(n, dtype=bool), "tau_fast_s": 0.01} if self.shape.fast_synapses else {}
        params = NeuronParameters(np.full(n, 0.1), np.zeros(n), 0.0, 0.0, 0.0, max(self.shape.dt_ms, 1.0), **fast)
        state = resting_state(self.shape, c.v_rest_mV)
        return RunInputs(np.zeros((n, n)), np.zeros((self.shape.steps, n)), params, state, seed=0)

    def _values(self, batch: Sequence[RunInputs]) -> dict[str, np.ndarray | _Weights]:
        """Brian name -> value in SI base units (Brian's internal representation) for every per-run array."""
        n, dt_ms, tau_rise_s = self.shape.n_units, self.shape.dt_ms, self.constants.tau_rise_ms * 1e-3
        runs = list(batch) + [self._idle()] * (self.shape.copies - len(batch))

        def stack(get: Callable[[RunInputs], Any], scale: float = 1.0) -> np.ndarray:
            return np.concatenate([_per_neuron(get(r), n) for r in runs]) * scale

        keys = np.concatenate([noise.stream_keys(r.seed, n) for r in runs])
        key_high, key_low = noise.split_keys(keys)
        values: dict[str, Any] = {
            "lif.syn_rate": 1.0 / stack(lambda r: r.parameters.tau_syn_s),
            "lif.spike_gain": 1.0 / (stack(lambda r: r.parameters.tau_syn_s) * tau_rise_s),
            "lif.bias": stack(lambda r: r.parameters.bias),
            "lif.gain": stack(lambda r: r.parameters.gain_mV, 1e-3),
            "lif.offset": stack(lambda r: r.parameters.offset_mV, 1e-3),
            "lif.noise": stack(lambda r: r.parameters.noise_mV, 1e-3),
            "lif.t_ref": (np.floor(stack(lambda r: r.parameters.refractory_ms) / dt_ms + 1e-3) - 0.5) * dt_ms * 1e-3,
            "lif.key_high": key_high,
            "lif.key_low": key_low,
            "lif.v": stack(lambda r: r.initial_state["v"], 1e-3),
            "lif.I_rec": stack(lambda r: r.initial_state["I_rec"]),
            "lif.g_rise": stack(lambda r: r.initial_state["g_rise"]),
            "lif.lastspike": stack(lambda r: r.initial_state["lastspike"]),
            "lif.not_refractory": np.concatenate(
                [np.broadcast_to(np.asarray(r.initial_state["not_refractory"], bool), (n,)) for r in runs]
            ),
            "I_ext.values": np.concatenate([np.asarray(r.drive, dtype=np.float64) for r in runs], axis=1),
            "recurrent.w": _Weights(tuple(r.weights_s for r in runs)),
        }
        if self.shape.fast_synapses:
            tau_fast = stack(lambda r: r.parameters.tau_fast_s)
            values.update(
                {
                    "lif.fast_rate": 1.0 / tau_fast,
                    "lif.fast_gain": 1.0 / (tau_fast * tau_rise_s),
                    "lif.is_fast": np.concatenate(
                        [np.broadcast_to(np.asarray(r.parameters.fast, dtype=bool), (n,)) for r in runs]
                    ).astype(np.float64),
                    "lif.I_fast": stack(lambda r: r.initial_state["I_fast"]),
                    "lif.g_fast": stack(lambda r: r.initial_state["g_fast"]),
                }
            )
        return values

    def _run_standalone(self, values: Mapping[str, Any]) -> float:
        """One run of the private binary; returns the simulation time inside it, s."""
        from brian2.devices.device import get_device

        assert self._private is not None
        device = get_device()
        run_args = [f"{name}={self._arg_file(name, value)}" for name, value in values.items()]
        with _environment({KEEP_SYNAPSES_VARIABLE: "1"} if self.keep_synapses else {}):
            device.run(directory=str(self._private), results_directory="results", with_output=False, run_args=run_args)
        return float(device._last_run_time)

    def _arg_file(self, name: str, value: np.ndarray | _Weights) -> str:
        """Path (relative to the run folder) of a file holding ``value``; written only if it changed since last run.

        Brian reads each file as the variable's raw array (C order, its own dtype)."""
        assert self._private is not None
        previous = self._arg_files.get(name)
        if previous is not None and previous[0] == value:
            return previous[1]
        array = value.flat() if isinstance(value, _Weights) else value
        dtype = np.int32 if name.endswith(("key_high", "key_low")) else bool if name.endswith("refractory") else float
        relative = f"static_arrays/run_{name}_{self._runs}.dat"
        np.ascontiguousarray(array, dtype=dtype).tofile(self._private / relative)
        if previous is not None:
            (self._private / previous[1]).unlink()
        self._arg_files[name] = (_Snapshot.of(value), relative)
        return relative

    def _run_runtime(self, values: Mapping[str, Any]) -> None:
        b2 = self._objects["b2"]
        network, group, synapses = self._objects["network"], self._objects["group"], self._objects["synapses"]
        network.restore("initial")
        group.set_states({k.split(".")[1]: v for k, v in values.items() if k.startswith("lif.")}, units=False)
        synapses.set_states({"w": values["recurrent.w"].flat()}, units=False)
        self._objects["drive"].values[:] = values["I_ext.values"]  # the numpy implementation reads it in place
        network.run(self.shape.duration_s * b2.second, namespace={})

    def _collect(self, n_runs: int) -> list[dict[str, Any]]:
        b2 = self._objects["b2"]
        group, spikes = self._objects["group"], self._objects["spikes"]
        n, end = self.shape.n_units, self.shape.duration_s
        unit = np.asarray(spikes.i[:], dtype=np.int64)
        spike_time = np.asarray(spikes.t[:] / b2.second, dtype=np.float64)
        if spike_time.size and spike_time.max() > end + 1e-9:
            raise RuntimeError(f"spike at {spike_time.max()} s after the end of the run ({end} s)")
        final = {
            "v": np.asarray(group.v[:] / b2.mV, dtype=np.float64),
            "I_rec": np.asarray(group.I_rec[:], dtype=np.float64),
            "g_rise": np.asarray(group.g_rise[:] / b2.Hz, dtype=np.float64),
            "lastspike": np.asarray(group.lastspike[:] / b2.second, dtype=np.float64) - end,
            "not_refractory": np.asarray(group.not_refractory[:], dtype=bool),
        }
        if self.shape.fast_synapses:
            final["I_fast"] = np.asarray(group.I_fast[:], dtype=np.float64)
            final["g_fast"] = np.asarray(group.g_fast[:] / b2.Hz, dtype=np.float64)
        copy = unit // n
        outputs = []
        for c in range(n_runs):
            mine = copy == c  # the monitor's order (time, then neuron) is kept within each copy
            outputs.append(
                {
                    "spike_unit": (unit[mine] - c * n).astype(np.int32),
                    "spike_time_s": spike_time[mine],
                    "final_state": {k: v[c * n : (c + 1) * n].copy() for k, v in final.items()},
                }
            )
        return outputs

    def synapse_matrix_s(self, copy: int = 0) -> np.ndarray:
        """The recurrent weights of one copy as Brian2 holds them after the last run, (post, pre), s.

        cpp_standalone needs ``keep_synapses=True``. Raises if any synapse connects two copies."""
        if self.target == "cpp_standalone" and not self.keep_synapses:
            raise RuntimeError("synapse_matrix_s needs SpikingNetwork(..., keep_synapses=True) on cpp_standalone")
        b2 = self._objects["b2"]
        synapses = self._objects["synapses"]
        n = self.shape.n_units
        pre, post = np.asarray(synapses.i[:]), np.asarray(synapses.j[:])
        if np.any(pre // n != post // n):
            raise RuntimeError("a synapse connects two copies of the network")
        mine = pre // n == copy
        matrix = np.full((n, n), np.nan)
        matrix[post[mine] - copy * n, pre[mine] - copy * n] = np.asarray(synapses.w[:] / b2.second)[mine]
        return matrix

    @property
    def runs(self) -> int:
        """Number of simulations (batches) run so far."""
        return self._runs


@dataclass(frozen=True)
class _Weights:
    """The (post, pre) weight matrices of every copy; flattened lazily into Brian's synapse order."""

    matrices: tuple[np.ndarray, ...]

    def flat(self) -> np.ndarray:
        return np.concatenate([np.ascontiguousarray(np.asarray(m, dtype=np.float64).T).ravel() for m in self.matrices])


@dataclass(frozen=True, eq=False)
class _Snapshot:
    """A private copy of a run argument, compared with the next run's value (cheaper than writing it again)."""

    arrays: tuple[np.ndarray, ...]

    @staticmethod
    def of(value: np.ndarray | _Weights) -> _Snapshot:
        arrays = value.matrices if isinstance(value, _Weights) else (value,)
        return _Snapshot(tuple(np.array(a, copy=True) for a in arrays))

    def __eq__(self, other: object) -> bool:
        arrays = other.matrices if isinstance(other, _Weights) else (other,)
        return len(arrays) == len(self.arrays) and all(
            np.shape(a) == b.shape and np.array_equal(a, b) for a, b in zip(arrays, self.arrays)
        )

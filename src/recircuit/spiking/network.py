"""The Brian2 LIF network of a spiking twin: build once per network size, run many times with new arrays.

One neuron per rate unit, one dense ``Synapses`` object (every pre -> post pair connected in pre-major order, zeros
kept, so one compiled binary serves every weight matrix of that size), an event-driven double-exponential synaptic
filter with the *postsynaptic* decay constant (Kim, Li & Sejnowski 2019, code version), and the input drive
``W_in u(t)`` through a 2-D ``TimedArray`` that holds each rate step's value for one rate step.

Membrane (mV, s)::

    tau_m dv/dt = v_rest - v + gain (I_rec + I_ext(t, i) + bias) + offset + noise sqrt(tau_m) xi   (unless refractory)
    I_rec = sum_j w_ij r_ij        (dimensionless: w = lambda W_rec in s, r_ij the filtered spike train of j in Hz)

The readout trace r (each neuron's own spikes through the same unit-area kernel, Hz; read out as lambda W_out r)
is computed exactly from the recorded spike times (`filter_spikes`), so the network has a single clock: Brian2
writes clocks into main.cpp in set order, and a second clock made the generated code, hence the binary, differ
from one process to the next.

Targets: ``cpp_standalone`` compiles once per (size, equations, time steps) into a build folder shared by jobs
(guarded by a lock file; every job then runs a private copy of the binary, so concurrent jobs never write into
the same folder), then each trial is one ``device.run(run_args=...)``; ``numpy`` runs the same model in Python
(no compiler, slower), for machines without one.

Randomness: the membrane noise of each run is seeded from an explicit per-run seed. Standalone reads it from the
``TRIAL_SEED`` environment variable through a few lines of C++ inserted before the run (``device.insert_code``);
the numpy target seeds Brian's runtime generator for the run and restores its previous state afterwards.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

STATE_VARIABLES = ("v", "I_rec", "g_rise", "lastspike", "not_refractory")
PARAMETERS = ("tau_syn", "bias", "gain", "offset", "noise", "t_ref")

# Brian2 equations in the names used above; units are Brian units (volt, second, Hz).
NEURON_EQUATIONS = """
dv/dt = (v_rest - v + gain*(I_rec + I_ext(t,i) + bias) + offset)/tau_m + noise*xi*tau_m**-0.5 : volt (unless refractory)
dI_rec/dt = -I_rec/tau_syn + g_rise : 1
dg_rise/dt = -g_rise/tau_rise : Hz
tau_syn : second (constant)
bias : 1 (constant)
gain : volt (constant)
offset : volt (constant)
noise : volt (constant)
t_ref : second (constant)
"""
RESET = "v = v_reset"
ON_PRE = "g_rise_post += w/(tau_rise*tau_syn_post)"

# C++ run before the simulation: reseed every generator from TRIAL_SEED (workaround from the spiking note, §2.6).
SEED_CODE = (
    'if (const char* _seed_text = std::getenv("TRIAL_SEED")) '
    "for (size_t _k = 0; _k < brian::_random_generators.size(); _k++) "
    "brian::_random_generators[_k].seed(std::strtoul(_seed_text, nullptr, 10) + _k);"
)
# Portable flags for a cache that may be shared between machines (Brian's default adds -march=native).
COMPILE_ARGS = ["-w", "-O3", "-ffast-math", "-fno-finite-math-only", "-std=c++11"]


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
    """What a compiled binary is specific to: size, trial length and time steps."""

    n_units: int
    steps: int  # rate steps per run
    step_s: float  # length of one rate step (the TimedArray step), s
    dt_ms: float  # integration step, ms

    @property
    def duration_s(self) -> float:
        return self.steps * self.step_s


@dataclass(frozen=True)
class NeuronParameters:
    """Per-run neuron parameters; scalars apply to every neuron, arrays have one value per neuron."""

    tau_syn_s: np.ndarray  # synaptic (= rate unit) decay constant per neuron, s
    bias: np.ndarray  # rate-model bias b per neuron (dimensionless current)
    gain_mV: float  # mV of membrane drive per unit of rate-model current
    offset_mV: float  # constant membrane drive above rest, mV
    noise_mV: float  # sigma of the membrane noise (free-membrane SD = sigma / sqrt 2), mV
    refractory_ms: float  # absolute refractory period, ms


@dataclass(frozen=True)
class RunInputs:
    """Everything that changes from run to run."""

    weights_s: np.ndarray  # (post, pre) recurrent weights lambda W_rec, s
    drive: np.ndarray  # (steps, n_units) input current W_in u per rate step (dimensionless)
    parameters: NeuronParameters
    initial_state: Mapping[str, np.ndarray]  # STATE_VARIABLES: v mV, I_rec 1, g_rise Hz, lastspike s, bool
    seed: int  # membrane-noise seed of this run (0 <= seed < 2**32)


@dataclass(frozen=True)
class RunOutput:
    spike_unit: np.ndarray  # (n_spikes,) neuron index
    spike_time_s: np.ndarray  # (n_spikes,) time since the run start, s
    final_state: dict[str, np.ndarray]  # STATE_VARIABLES at the end, lastspike relative to the end (<= 0)
    wall_s: float  # wall time of the run call, s


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


def build_key(shape: NetworkShape, constants: LIFConstants) -> str:
    """``N<units>_<hash>``: a folder name unique to everything compiled into the binary."""
    import brian2

    payload = json.dumps(
        {
            "equations": NEURON_EQUATIONS,
            "reset": RESET,
            "on_pre": ON_PRE,
            "seed_code": SEED_CODE,
            "compile_args": COMPILE_ARGS,
            "constants": constants.__dict__,
            "shape": shape.__dict__,
            "brian2": brian2.__version__,
        },
        sort_keys=True,
    )
    return f"N{shape.n_units}_{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


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
    missing = [k for k in STATE_VARIABLES if k not in inputs.initial_state]
    if missing:
        raise ValueError(f"initial_state lacks {', '.join(missing)}")
    if not 0 <= int(inputs.seed) < 2**32:
        raise ValueError(f"seed {inputs.seed} must be in [0, 2**32)")
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
    """A built LIF network of one shape; ``run(inputs)`` simulates one trial (or one chunk of a long trial).

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
    ):
        if target not in ("cpp_standalone", "numpy"):
            raise ValueError(f"spiking.target must be 'cpp_standalone' or 'numpy', not {target!r}")
        if target == "cpp_standalone" and build_dir is None:
            raise ValueError("the cpp_standalone target needs a build directory (build_dir)")
        if shape.n_units < 1 or shape.steps < 1:
            raise ValueError(f"network shape {shape} must have at least one unit and one step")
        ratio = shape.step_s * 1000.0 / shape.dt_ms
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"task.dt_s ({shape.step_s * 1000:g} ms) must be a whole number of spiking.dt_ms steps "
                f"({shape.dt_ms:g} ms)"
            )
        self.shape, self.constants, self.target = shape, constants, target
        self.build_root = Path(build_dir) if build_dir is not None else None
        self.make_jobs = make_jobs
        self.info: BuildInfo | None = None
        self._private: Path | None = None
        self._objects: dict[str, Any] = {}
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
        drive = b2.TimedArray(np.zeros((shape.steps, n)), dt=shape.step_s * b2.second, name="I_ext")
        namespace = {
            "I_ext": drive,
            "tau_m": c.tau_m_ms * b2.ms,
            "tau_rise": c.tau_rise_ms * b2.ms,
            "v_rest": c.v_rest_mV * b2.mV,
            "v_reset": c.v_reset_mV * b2.mV,
            "v_threshold": c.v_threshold_mV * b2.mV,
        }
        group = b2.NeuronGroup(
            n,
            NEURON_EQUATIONS,
            threshold="v > v_threshold",
            reset=RESET,
            refractory="t_ref",
            method="euler",
            namespace=namespace,
            clock=clock,
            name="lif",
        )
        synapses = b2.Synapses(
            group, group, "w : second", on_pre=ON_PRE, namespace=namespace, clock=clock, name="recurrent"
        )
        pre, post = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")  # pre-major: Brian's internal order
        synapses.connect(i=pre.ravel(), j=post.ravel())
        synapses.w = 0 * b2.second
        group.v = c.v_rest_mV * b2.mV
        group.tau_syn = 0.1 * b2.second
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
        device.insert_code("main", SEED_CODE)
        self._objects["network"].run(self.shape.duration_s * b2.second, namespace={})

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
        device.project_dir = str(private)  # run_args arrays are written under project_dir/static_arrays
        self.info = BuildInfo(
            "cpp_standalone",
            shared,
            key,
            time.perf_counter() - start,
            compiled=before is None or after != before,
            binary_mtime=after,
        )

    # ------------------------------------------------------------------------------------------------------ run
    def run(self, inputs: RunInputs) -> RunOutput:
        """Simulate one run of ``shape.steps`` rate steps from ``inputs.initial_state``."""
        if self.info is None:
            raise RuntimeError("SpikingNetwork.run called outside its `with` block")
        _check_run_inputs(self.shape, inputs)
        start = time.perf_counter()
        if self.target == "numpy":
            self._run_runtime(inputs)
        else:
            self._run_standalone(inputs)
        output = self._collect()
        self._runs += 1
        return RunOutput(**output, wall_s=time.perf_counter() - start)

    def _values(self, inputs: RunInputs) -> dict[str, tuple[Any, np.ndarray]]:
        """(Brian attribute holder, value in Brian units) for every per-run array."""
        b2 = self._objects["b2"]
        n = self.shape.n_units
        p, s = inputs.parameters, inputs.initial_state
        group = self._objects["group"]
        return {
            "w": (self._objects["synapses"].w, np.ascontiguousarray(inputs.weights_s.T).ravel() * b2.second),
            "tau_syn": (group.tau_syn, _per_neuron(p.tau_syn_s, n) * b2.second),
            "bias": (group.bias, _per_neuron(p.bias, n)),
            "gain": (group.gain, _per_neuron(p.gain_mV, n) * b2.mV),
            "offset": (group.offset, _per_neuron(p.offset_mV, n) * b2.mV),
            "noise": (group.noise, _per_neuron(p.noise_mV, n) * b2.mV),
            "t_ref": (group.t_ref, _per_neuron(p.refractory_ms, n) * b2.ms),
            "v": (group.v, _per_neuron(s["v"], n) * b2.mV),
            "I_rec": (group.I_rec, _per_neuron(s["I_rec"], n)),
            "g_rise": (group.g_rise, _per_neuron(s["g_rise"], n) * b2.Hz),
            "lastspike": (group.lastspike, _per_neuron(s["lastspike"], n) * b2.second),
            "not_refractory": (group.not_refractory, np.broadcast_to(np.asarray(s["not_refractory"], bool), (n,))),
        }

    def _run_standalone(self, inputs: RunInputs) -> None:
        from brian2.devices.device import get_device

        device = get_device()
        run_args: dict[Any, Any] = {holder: value for holder, value in self._values(inputs).values()}
        run_args[self._objects["drive"]] = np.ascontiguousarray(inputs.drive, dtype=np.float64)
        with _environment({"TRIAL_SEED": str(int(inputs.seed))}):
            device.run(
                directory=str(self._private),
                results_directory="results",
                with_output=False,
                run_args=run_args,
            )

    def _run_runtime(self, inputs: RunInputs) -> None:
        from brian2.devices.device import get_device

        b2 = self._objects["b2"]
        network = self._objects["network"]
        network.restore("initial")
        for holder, value in self._values(inputs).values():
            holder[:] = value
        self._objects["drive"].values[:] = inputs.drive  # the numpy implementation reads this array in place
        device = get_device()
        saved = device.get_random_state()
        device.seed(int(inputs.seed))
        try:
            network.run(self.shape.duration_s * b2.second, namespace={})
        finally:
            device.set_random_state(saved)

    def _collect(self) -> dict[str, Any]:
        b2 = self._objects["b2"]
        group, spikes = self._objects["group"], self._objects["spikes"]
        end = self.shape.duration_s
        spike_unit = np.asarray(spikes.i[:], dtype=np.int32)
        spike_time = np.asarray(spikes.t[:] / b2.second, dtype=np.float64)
        final = {
            "v": np.asarray(group.v[:] / b2.mV, dtype=np.float64),
            "I_rec": np.asarray(group.I_rec[:], dtype=np.float64),
            "g_rise": np.asarray(group.g_rise[:] / b2.Hz, dtype=np.float64),
            "lastspike": np.asarray(group.lastspike[:] / b2.second, dtype=np.float64) - end,
            "not_refractory": np.asarray(group.not_refractory[:], dtype=bool),
        }
        if spike_time.size and spike_time.max() > end + 1e-9:
            raise RuntimeError(f"spike at {spike_time.max()} s after the end of the run ({end} s)")
        return {"spike_unit": spike_unit, "spike_time_s": spike_time, "final_state": final}

    def synapse_matrix_s(self) -> np.ndarray:
        """The recurrent weights as Brian2 holds them after the last run, (post, pre), s."""
        b2 = self._objects["b2"]
        synapses = self._objects["synapses"]
        n = self.shape.n_units
        matrix = np.full((n, n), np.nan)
        matrix[np.asarray(synapses.j[:]), np.asarray(synapses.i[:])] = np.asarray(synapses.w[:] / b2.second)
        return matrix

    @property
    def runs(self) -> int:
        """Number of runs done so far."""
        return self._runs

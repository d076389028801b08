"""Spiking-twin benchmark: synaptic events per second and build time, Brian2 cpp_standalone vs the numpy target,
on the same networks, inputs and seeds in the same process.

    OMP_NUM_THREADS=1 python benchmarks/spiking.py [--workloads ref,pi,hd] [--trials-scale 1.0]

Network: recircuit's LIF twin (`recircuit.spiking.network`: dense all-pairs synapses within each copy,
event-driven double-exponential synapses, 2-D TimedArray input, counter-based membrane noise) with a random
balanced Dale matrix (80 % E), driven to about 20 Hz. Runs are batched as the pipeline batches them: each Brian2
run simulates ``default_copies(N)`` independent trials side by side (block-diagonal synapses).

Workloads (trials x biological seconds each):
  ref: N = 1000, 4 x 1 s   -- the reference network of the research note (shared/research/spiking_export.md)
  pi:  N = 512,  8 x 2 s   -- the path-integration circuit (100 steps of 20 ms per trial)
  hd:  N = 128, 16 x 2 s   -- the head-direction circuit (and the quick configuration's circuits)

Measured per workload and target:
  build: cpp_standalone cold (code generation + compilation in an empty folder) and warm (a second session of
         the same size reusing the binary); numpy: creating the Brian2 objects.
  wall:  the sum over runs of the whole `SpikingNetwork.run_batch` call -- writing the per-run arrays, the
         device.run (process start, loading arrays, simulation, writing results) or numpy Network.run, and
         reading the spikes and final state back. Builds are excluded for both targets.
  binary: cpp_standalone only, the simulation time inside the binary (Brian's own timer, CPU time).
Synaptic events = spikes x N (every pair within a copy is connected). The numpy and cpp spike counts are printed
side by side (same model and noise; -ffast-math may move a rare spike).

The last line is ``ratio R``: R = cpp events/s / numpy events/s, both counting the full wall time of the run
calls (builds excluded), summed over all workloads run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recircuit.spiking.convert import calibrate_lif
from recircuit.spiking.network import (
    LIFConstants,
    NetworkShape,
    NeuronParameters,
    RunInputs,
    SpikingNetwork,
    default_copies,
)

STEP_S = 0.02
DT_MS = 0.1
LAMBDA_S = 1 / 100
WORKLOADS = {  # name: (units, trials, seconds per trial, label)
    "ref": (1000, 4, 1.0, "N=1000 reference"),
    "pi": (512, 8, 2.0, "N=512 path integration"),
    "hd": (128, 16, 2.0, "N=128 head direction"),
}


def balanced_weights(n: int, gain: float, seed: int) -> np.ndarray:
    """Dale matrix (post x pre), 80 % E columns >= 0, rows summing to zero, entries ~ gain / sqrt(n)."""
    rng = np.random.default_rng(seed)
    n_exc = int(0.8 * n)
    magnitude = np.abs(rng.normal(size=(n, n))) * gain / np.sqrt(n)
    np.fill_diagonal(magnitude, 0.0)
    magnitude[:, n_exc:] *= magnitude[:, :n_exc].sum(1, keepdims=True) / magnitude[:, n_exc:].sum(1, keepdims=True)
    return magnitude * np.where(np.arange(n) < n_exc, 1.0, -1.0)


def run_inputs(n: int, steps: int, seed: int, lam: float, cal, weights: np.ndarray) -> RunInputs:
    """One trial: a constant drive around sigmoid(-1.3)/lambda ~ 21 Hz, random start voltages, seed ``seed``."""
    rng = np.random.default_rng(seed)
    drive = np.full((steps, n), -1.3) + rng.normal(0, 0.3, size=(1, n))
    params = NeuronParameters(np.full(n, 0.1), np.zeros(n), cal.gain_mV, cal.offset_mV, cal.noise_mV, cal.refractory_ms)
    state = {
        "v": rng.uniform(-65.0, -50.0, n),
        "I_rec": np.zeros(n),
        "g_rise": np.zeros(n),
        "lastspike": np.full(n, -1e4),
        "not_refractory": np.ones(n, dtype=bool),
    }
    return RunInputs(lam * weights, drive, params, state, seed=seed)


@dataclass
class Result:
    build_s: float
    warm_build_s: float | None
    runs: int
    spikes: int
    wall_s: float
    binary_s: float | None

    def events(self, n: int) -> float:
        return float(self.spikes) * n


def bench(target: str, shape: NetworkShape, build_dir: Path, trials: list[RunInputs]) -> Result:
    start = time.perf_counter()
    with SpikingNetwork(shape, LIFConstants(), target, build_dir) as net:
        build = time.perf_counter() - start
        wall, binary, spikes = 0.0, 0.0, 0
        for first in range(0, len(trials), shape.copies):
            outputs = net.run_batch(trials[first : first + shape.copies])
            wall += outputs[0].wall_s
            binary += outputs[0].binary_s or 0.0
            spikes += sum(out.spike_unit.size for out in outputs)
        runs = net.runs
    warm = None
    if target == "cpp_standalone":
        start = time.perf_counter()
        with SpikingNetwork(shape, LIFConstants(), target, build_dir) as net:
            assert net.info is not None and not net.info.compiled, "the second session must reuse the binary"
            warm = time.perf_counter() - start
    return Result(build, warm, runs, spikes, wall, binary if target == "cpp_standalone" else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="ref,pi,hd", help=f"comma-separated, from {', '.join(WORKLOADS)}")
    args = parser.parse_args()
    names = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; choose from {sorted(WORKLOADS)}")

    cal = calibrate_lif(LAMBDA_S, (-6.0, 6.0), 5.0, 15.0, 10.0, 1.0)
    header = (
        f"{'workload':<27} {'target':<15} {'build s':>13} {'runs':>4} {'trials':>6} {'rate Hz':>7} {'events':>9} "
        f"{'wall s':>7} {'events/s wall':>13} {'binary s':>8} {'events/s binary':>15}"
    )
    print(f"dt {DT_MS} ms, rate step {STEP_S * 1000:g} ms, one core; build s = cold / warm (reuse) for cpp")
    print(header)
    totals = {"cpp_standalone": [0.0, 0.0], "numpy": [0.0, 0.0]}  # events, wall
    with tempfile.TemporaryDirectory(prefix="recircuit_spike_bench") as tmp:
        for name in names:
            n, n_trials, seconds, label = WORKLOADS[name]
            steps = round(seconds / STEP_S)
            shape = NetworkShape(n, steps, STEP_S, DT_MS, default_copies(n))
            weights = balanced_weights(n, gain=1.0, seed=0)
            trials = [run_inputs(n, steps, k, LAMBDA_S, cal, weights) for k in range(n_trials)]
            results = {t: bench(t, shape, Path(tmp), trials) for t in ("cpp_standalone", "numpy")}
            bio_s = n_trials * seconds
            for target, r in results.items():
                events = r.events(n)
                totals[target][0] += events
                totals[target][1] += r.wall_s
                build = f"{r.build_s:.1f} / {r.warm_build_s:.1f}" if r.warm_build_s is not None else f"{r.build_s:.1f}"
                binary = f"{r.binary_s:8.3f} {events / r.binary_s:15.3g}" if r.binary_s else f"{'-':>8} {'-':>15}"
                print(
                    f"{label + f' x{shape.copies}':<27} {target:<15} {build:>13} {r.runs:>4} {n_trials:>6} "
                    f"{r.spikes / (n * bio_s):7.1f} {events:9.3g} {r.wall_s:7.2f} {events / r.wall_s:13.3g} {binary}"
                )
            cpp, npy = results["cpp_standalone"], results["numpy"]
            print(
                f"{'':<27} spikes cpp {cpp.spikes} / numpy {npy.spikes}; events/s ratio (wall) "
                f"{(cpp.events(n) / cpp.wall_s) / (npy.events(n) / npy.wall_s):.1f}"
            )
    (ce, cw), (ne, nw) = totals["cpp_standalone"], totals["numpy"]
    print(f"all workloads: cpp_standalone {ce / cw:.3g} events/s, numpy {ne / nw:.3g} events/s (run-call wall time)")
    print(f"ratio {(ce / cw) / (ne / nw):.1f}")


if __name__ == "__main__":
    main()

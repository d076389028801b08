"""Spiking-twin benchmark: synaptic events per second and build time, Brian2 cpp_standalone vs the numpy target,
on the same network in the same process.

    OMP_NUM_THREADS=1 python benchmarks/spiking.py [--units 1000] [--seconds 1.0] [--repeats 3]

The network is recircuit's LIF twin model (one dense Synapses object with all N^2 pairs, event-driven
double-exponential synapses, a 2-D TimedArray input) with a random balanced Dale matrix (80 % E) scaled so that
it fires at about 20-30 Hz. Synaptic events = spikes x N (every pair is connected). cpp_standalone is built cold in
a temporary folder, then warm (a second session reusing the binary); each run is one `device.run`, timed in wall
clock (process start, loading arrays and writing results included) and inside the binary. The numpy target runs
the same inputs and seeds (Brian's C++ and numpy generators give the same noise for the same seed).
The last line printed is ``ratio R`` with R = cpp events/s (device.run wall) / numpy events/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from recircuit.spiking.convert import calibrate_lif
from recircuit.spiking.network import LIFConstants, NetworkShape, NeuronParameters, RunInputs, SpikingNetwork

STEP_S = 0.02
DT_MS = 0.1


def balanced_weights(n: int, gain: float, seed: int) -> np.ndarray:
    """Dale matrix (post x pre), 80 % E columns >= 0, rows summing to zero, entries ~ gain / sqrt(n)."""
    rng = np.random.default_rng(seed)
    n_exc = int(0.8 * n)
    magnitude = np.abs(rng.normal(size=(n, n))) * gain / np.sqrt(n)
    np.fill_diagonal(magnitude, 0.0)
    magnitude[:, n_exc:] *= magnitude[:, :n_exc].sum(1, keepdims=True) / magnitude[:, n_exc:].sum(1, keepdims=True)
    return magnitude * np.where(np.arange(n) < n_exc, 1.0, -1.0)


def run_inputs(n: int, steps: int, seconds_seed: int, lam: float, cal, weights: np.ndarray) -> RunInputs:
    rng = np.random.default_rng(seconds_seed)
    drive = np.full((steps, n), -1.3) + rng.normal(0, 0.3, size=(1, n))  # sigmoid(-1.3)/lambda ~ 21 Hz at 100 Hz max
    params = NeuronParameters(np.full(n, 0.1), np.zeros(n), cal.gain_mV, cal.offset_mV, cal.noise_mV, cal.refractory_ms)
    state = {
        "v": rng.uniform(-65.0, -50.0, n),
        "I_rec": np.zeros(n),
        "g_rise": np.zeros(n),
        "lastspike": np.full(n, -1e4),
        "not_refractory": np.ones(n, dtype=bool),
    }
    return RunInputs(lam * weights, drive, params, state, seed=seconds_seed)


def bench(target: str, shape: NetworkShape, build_dir: Path, inputs: list[RunInputs]) -> dict[str, float]:
    from brian2.devices.device import get_device

    start = time.perf_counter()
    with SpikingNetwork(shape, LIFConstants(), target, build_dir) as net:
        build = time.perf_counter() - start
        walls, binaries, spikes = [], [], []
        for run in inputs:
            out = net.run(run)
            walls.append(out.wall_s)
            spikes.append(out.spike_unit.size)
            if target == "cpp_standalone":
                binaries.append(float(get_device()._last_run_time))
        compiled = net.info.compiled
    events = [s * shape.n_units for s in spikes]
    result = {
        "build_s": build,
        "compiled": float(compiled),
        "wall_s": statistics.median(walls),
        "events": statistics.median(events),
        "rate_hz": statistics.median(spikes) / (shape.n_units * shape.duration_s),
        "events_per_s": statistics.median(e / w for e, w in zip(events, walls)),
    }
    if binaries:
        result["binary_s"] = statistics.median(binaries)
        result["events_per_s_in_binary"] = statistics.median(e / b for e, b in zip(events, binaries))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=1.0, help="biological time per run, s")
    parser.add_argument("--repeats", type=int, default=3, help="runs per target (median reported)")
    args = parser.parse_args()

    n = args.units
    steps = max(1, round(args.seconds / STEP_S))
    shape = NetworkShape(n, steps, STEP_S, DT_MS)
    lam = 1 / 100
    cal = calibrate_lif(lam, (-6.0, 6.0), 5.0, 15.0, 10.0, 1.0)
    weights = balanced_weights(n, gain=1.0, seed=0)
    inputs = [run_inputs(n, steps, k, lam, cal, weights) for k in range(args.repeats)]
    print(f"N = {n} LIF neurons, {n * n:,} synapses (dense), {shape.duration_s:.2f} s biological time, dt {DT_MS} ms")
    with tempfile.TemporaryDirectory(prefix="recircuit_spike_bench") as tmp:
        cold = bench("cpp_standalone", shape, Path(tmp), inputs)
        warm = bench("cpp_standalone", shape, Path(tmp), inputs[:1])
        numpy_result = bench("numpy", shape, Path(tmp), inputs)
    print(
        f"cpp_standalone: build {cold['build_s']:.1f} s cold (compiled={bool(cold['compiled'])}), "
        f"{warm['build_s']:.1f} s warm (compiled={bool(warm['compiled'])}); run {cold['wall_s']:.3f} s wall per "
        f"device.run ({cold['binary_s']:.3f} s in the binary); {cold['rate_hz']:.1f} Hz, {cold['events']:.3g} events"
    )
    print(
        f"cpp_standalone: {cold['events_per_s']:.3g} synaptic events/s (device.run wall), "
        f"{cold['events_per_s_in_binary']:.3g} in the binary"
    )
    print(
        f"numpy: build {numpy_result['build_s']:.1f} s, run {numpy_result['wall_s']:.3f} s wall; "
        f"{numpy_result['rate_hz']:.1f} Hz, {numpy_result['events']:.3g} events; "
        f"{numpy_result['events_per_s']:.3g} synaptic events/s"
    )
    print(f"ratio {cold['events_per_s'] / numpy_result['events_per_s']:.1f}")


if __name__ == "__main__":
    main()

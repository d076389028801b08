"""Run every speed benchmark and print one table: each target, the measured ratio or rate, and pass/fail.

Each benchmark runs in its own process (so thread settings and allocators do not leak between them) and measures
its own baseline in that process. Usage: python benchmarks/run_all.py [--quick] [--threads N] [--pipeline]
(--pipeline also times the quick reproduction from scratch, target 7: about 10 minutes more).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str, threads: int) -> str:
    """Run one benchmark in its own process (glibc malloc settings: each benchmark sets what it measures)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": "1"}
    env.pop("GLIBC_TUNABLES", None)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{result.stderr[-2000:]}")
    print(f"--- {script} {' '.join(args)} ({time.perf_counter() - start:.0f} s)\n{result.stdout.strip()}\n", flush=True)
    return result.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"pattern {pattern!r} not found in benchmark output")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier numbers)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the training-step benchmark")
    parser.add_argument("--pipeline", action="store_true", help="also run the quick reproduction in a fresh copy")
    args = parser.parse_args()
    repeats = "2" if args.quick else "5"
    rows = []

    out = run("train_step.py", "--threads", str(args.threads), "--repeats", repeats, "--activation", "relu",
              threads=args.threads)
    ratio = number(r"\nratio ([0-9.]+)", out)
    defaults_ratio, settings_ratio = (float(x) for x in re.findall(r"ratio, same allocator: ([0-9.]+)", out))
    ms = number(r"recircuit as it runs ([0-9.]+) ms/step", out)
    ceiling = number(r"recircuit as it runs [0-9.]+ ms/step \(([0-9.]+)% of the matmul ceiling", out)
    rows.append(("1 training step, recircuit vs reference-style loop, each as it runs", ">= 4x", f"{ratio:.2f}x",
                 ratio >= 4))
    rows.append(("1   same, both with glibc's default malloc", ">= 4x", f"{defaults_ratio:.2f}x", defaults_ratio >= 4))
    rows.append(("1   same, both with recircuit's malloc settings", ">= 4x", f"{settings_ratio:.2f}x",
                 settings_ratio >= 4))
    rows.append(("1 training step, % of matmul ceiling", ">= 75%", f"{ceiling:.0f}%", ceiling >= 75))
    rows.append(("1 training step time", "<= 450 ms", f"{ms:.0f} ms", ms <= 450))

    out = run("ensemble.py", "--steps", "10" if args.quick else "20", threads=1)
    ratio = number(r"ratio ([0-9.]+)", out)
    rows.append(("2 ensemble K=16 x 128 units vs one by one", ">= 4x", f"{ratio:.2f}x", ratio >= 4))

    rows.append(("3 GPU path (not launch-bound)", "GPU only", "no GPU here", None))

    out = run("trajectories.py", "--repeats", repeats, threads=1)
    rate = number(r"recircuit \(torch, float32\): ([0-9.e+]+)", out)
    rows.append(("4 path-integration trajectories", ">= 1e7 steps/s", f"{rate:.2e}/s", rate >= 1e7))

    out = run("spiking.py", threads=1)
    in_binary = number(r"N=1000 reference[^\n]*cpp_standalone[^\n]* ([0-9.]+e[+0-9]+)\n", out)
    wall = number(r"all workloads: cpp_standalone ([0-9.]+e[+0-9]+) events/s", out)
    ratio = number(r"ratio ([0-9.]+)", out)
    rows.append(("5 spiking events/s, N=1000, inside the binary", ">= 2e8", f"{in_binary:.2e}/s", in_binary >= 2e8))
    rows.append(("5 spiking events/s, all workloads, run wall", ">= 2e8", f"{wall:.2e}/s", wall >= 2e8))
    rows.append(("5 spiking, cpp_standalone vs numpy target", ">= 5x", f"{ratio:.1f}x", ratio >= 5))

    out = run("curvature.py", threads=1)
    hvps = number(r"HVPs to reach 1e-06 relative accuracy on lambda_max: eigsh ([0-9]+)", out)
    hvp_ratio = number(r"HVP / gradient time \([a-z_]+\): ([0-9.]+)", out)
    rows.append(("6 curvature: HVPs to 1e-6 on lambda_max", "<= 40", f"{hvps:.0f}", hvps <= 40))
    rows.append(("6 curvature: one HVP / one gradient", "<= 3x", f"{hvp_ratio:.2f}x", hvp_ratio <= 3))

    if args.pipeline:
        out = run("pipeline.py", threads=1)
        wall = number(r"wall time ([0-9.]+) s", out)
        rows.append(("7 whole quick pipeline, fresh copy, wall", "< 600 s", f"{wall:.0f} s", wall < 600))
    else:
        rows.append(("7 whole quick pipeline (run_all.py --pipeline)", "< 600 s", "not run", None))

    width = max(len(r[0]) for r in rows)
    print(f"{'target':<{width}}  {'goal':<15}{'measured':<14}result")
    for name, goal, measured, ok in rows:
        verdict = "n/a" if ok is None else ("pass" if ok else "FAIL")
        print(f"{name:<{width}}  {goal:<15}{measured:<14}{verdict}")


if __name__ == "__main__":
    main()

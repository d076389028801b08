"""Curvature benchmark: HVPs to reach 1e-6 relative accuracy on the top Hessian eigenvalue (Lanczos vs power
iteration on the same operator, same process) and the cost of one HVP relative to one gradient.

    OMP_NUM_THREADS=1 python benchmarks/curvature.py [--units 64] [--steps 30] [--batch 32] [--train-steps 60]

The circuit is a small path integrator trained briefly with BPTT (so the Hessian is that of a partly trained
network); the Hessian is of the exact loss w.r.t. the free entries of recurrent_raw, float64, frozen noise.
The last line is the HVP / gradient time ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from recircuit.analysis.curvature import exact_loss_operator, extreme_eigenvalue, power_iteration, time_per_call
from recircuit.circuit.io import build_circuit
from recircuit.learning.train import task_loss
from recircuit.spec import CircuitSpec

TARGET = 1e-6


def trained_circuit(units: int, steps: int, batch: int, train_steps: int):
    n_inh = units // 4
    spec = CircuitSpec.model_validate(
        {
            "task": {"kind": "path_integration", "sequence_steps": steps, "place_cells": {"n_cells": 128}},
            "network": {"n_exc": units - n_inh, "n_inh": n_inh, "noise": {"recurrent_sd": 0.01}},
            "training": {"loss": "cross_entropy", "learning_rate": 0.003, "device": "cpu"},
        }
    )
    model, task = build_circuit(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.training.learning_rate)
    g = torch.Generator().manual_seed(0)
    for _ in range(train_steps):
        trials = task.sample(batch, steps, g)
        outputs, _ = model(trials.inputs, trials.initial_code, model.draw_noise(batch, steps, g))
        loss = task_loss(outputs, trials.targets, "cross_entropy")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    eval_g = torch.Generator().manual_seed(1)
    trials = task.sample(batch, steps, eval_g)
    return model, trials, model.draw_noise(batch, steps, eval_g), float(loss.detach())


def first_within(history: list[float], reference: float, target: float) -> int | None:
    """1-based index of the first estimate within ``target`` relative error of ``reference`` (None if never)."""
    for i, value in enumerate(history):
        if abs(value - reference) / abs(reference) < target:
            return i + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--max-power-iterations", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    model, trials, noise, loss = trained_circuit(args.units, args.steps, args.batch, args.train_steps)
    print(f"circuit: {args.units} units, T = {args.steps}, batch {args.batch}, {args.train_steps} BPTT steps "
          f"(last loss {loss:.4f}) in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")

    ops = {mode: exact_loss_operator(model, trials, noise, "cross_entropy", ("recurrent_raw",), mode)
           for mode in ("forward_over_reverse", "reverse_over_reverse")}
    op = ops["reverse_over_reverse"]
    print(f"Hessian: {op.size} free entries of recurrent_raw, float64")
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    agree = float((ops["forward_over_reverse"].hvp(v) - op.hvp(v)).norm() / op.hvp(v).norm())
    fresh = exact_loss_operator(model, trials, noise, "cross_entropy", ("recurrent_raw",), "reverse_over_reverse")
    t1 = time.perf_counter()
    fresh.hvp(v)
    setup_s = time.perf_counter() - t1
    grad_s = time_per_call(op.gradient)
    hvp_s = {mode: time_per_call(lambda o=o: o.hvp(v)) for mode, o in ops.items()}
    print(f"the two HVP modes agree to {agree:.1e} (relative)")
    print(f"gradient: {1e3 * grad_s:.1f} ms; first reverse_over_reverse HVP (builds the reusable graph): "
          f"{1e3 * setup_s:.1f} ms")
    for mode, seconds in hvp_s.items():
        print(f"HVP {mode}: {1e3 * seconds:.1f} ms ({seconds / grad_s:.2f} x gradient)")

    reference = extreme_eigenvalue(op, "LA", tol=1e-13, ncv=30)
    bottom = extreme_eigenvalue(op, "SA", tol=1e-10, ncv=30)
    print(f"reference: lambda_max = {reference.value:.10e} (eigsh tol 1e-13, {reference.n_hvp} HVPs); "
          f"lambda_min = {bottom.value:.4e}")

    rows = []
    for tol in (1e-3, 1e-6, 1e-9):
        est = extreme_eigenvalue(op, "LA", tol=tol, ncv=20)
        rows.append(("eigsh LA", tol, est.n_hvp, abs(est.value - reference.value) / abs(reference.value)))
    start = op.n_hvp
    value, n_power, history = power_iteration(op, tol=0.0, max_iter=args.max_power_iterations)
    assert op.n_hvp - start == n_power
    needed_power = first_within(history, reference.value, TARGET)
    for tol in (1e-3, 1e-6):
        value, n, _ = power_iteration(op, tol=tol, max_iter=args.max_power_iterations)
        rows.append(("power (PyHessian rule)", tol, n, abs(value - reference.value) / abs(reference.value)))
    print(f"{'method':<24}{'tol':>8}{'HVPs':>7}{'rel. error':>12}")
    for name, tol, n, err in rows:
        print(f"{name:<24}{tol:>8.0e}{n:>7d}{err:>12.2e}")

    needed_eigsh, needed_ncv = None, None
    for ncv in (3, 4, 6, 8, 12, 20):  # ARPACK fills ncv Lanczos vectors before its first check: scan it
        for tol in np.logspace(-2, -12, 11):
            est = extreme_eigenvalue(op, "LA", tol=float(tol), ncv=ncv)
            if abs(est.value - reference.value) / abs(reference.value) < TARGET:
                if needed_eigsh is None or est.n_hvp < needed_eigsh:
                    needed_eigsh, needed_ncv = est.n_hvp, ncv
                break
    print(f"HVPs to reach {TARGET:.0e} relative accuracy on lambda_max: eigsh {needed_eigsh} "
          f"(best ncv = {needed_ncv}, loosest sufficient tol), "
          f"power iteration {needed_power if needed_power else f'> {n_power}'} "
          f"(oracle stop on the true value; it converges to the largest |lambda|)")
    if needed_eigsh and needed_power:
        print(f"power / eigsh HVPs: {needed_power / needed_eigsh:.2f}")
    best = min(hvp_s, key=hvp_s.get)
    print(f"HVP / gradient time ({best}): {hvp_s[best] / grad_s:.2f}")


if __name__ == "__main__":
    main()

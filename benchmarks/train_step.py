"""Speed of one training step (forward + backward + Adam) of recircuit's EICircuit against a reference-style RNN.

The baseline is written the way the Krishna et al. (ICLR 2024) reference code writes its RNN: ``nn.Linear`` per time
step for the recurrence and the readout, noise drawn per step inside the loop, states and outputs stored by index into
preallocated tensors. Both run in the same process on the same fixed batch (trajectory generation is not timed), with
the same activation, noise SD, loss (MSE) and sizes. A matmul-only loop doing recircuit's matmul FLOPs (recurrent
forward and backward, readout forward and backward) gives the ceiling that both are compared to.

    python benchmarks/train_step.py --threads 2            # reference size: 512 units, 512 outputs, batch 200, T 100
    python benchmarks/train_step.py --small --repeats 3    # a quick check

The variants run twice in one process: first with glibc's default malloc settings (how the reference code runs),
then with the settings the `recircuit` command sets for itself (recircuit.allocator: large freed blocks stay in
the heap instead of being page-faulted afresh every step, shared/research/env_measure.md 4c). Three ratios follow:
the same allocator for both in each phase, and recircuit as it runs against the reference-style loop as it runs.
The last line printed is ``ratio R``, that last one (> 1: recircuit is faster); the lines before it say whether the
targets of issue 8 are met (R >= 4, and recircuit at >= 75% of the matmul ceiling measured with the same settings).
``--default-allocator`` runs the first phase only.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from recircuit.allocator import allocator_in_use
from recircuit.circuit import ACTIVATIONS, build_circuit
from recircuit.learning import task_loss
from recircuit.spec import load_spec

SPEC = Path(__file__).resolve().parents[1] / "circuits" / "path_integration.yaml"
REFERENCE_SIZE = {"n_exc": 410, "n_inh": 102, "n_cells": 512, "batch": 200, "steps": 100}
SMALL_SIZE = {"n_exc": 102, "n_inh": 26, "n_cells": 128, "batch": 32, "steps": 20}
TARGET_RATIO, TARGET_CEILING = 4.0, 0.75


class ReferenceStyleRNN(nn.Module):
    """The reference code's structure: nn.Linear per step, per-step noise, indexed stores into preallocated tensors."""

    def __init__(self, n_inputs: int, n_units: int, n_outputs: int, alpha: float, noise_sd: float, activation: str):
        super().__init__()
        self.encoder = nn.Linear(n_outputs, n_units, bias=False)
        self.input = nn.Linear(n_inputs, n_units, bias=False)
        self.recurrent = nn.Linear(n_units, n_units, bias=False)
        self.output = nn.Linear(n_units, n_outputs)
        self.alpha, self.noise_sd, self.phi = alpha, noise_sd, ACTIVATIONS[activation]
        self.n_units, self.n_outputs = n_units, n_outputs

    def forward(self, inputs: torch.Tensor, initial_code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, steps, _ = inputs.shape
        h = self.encoder(initial_code)
        hidden = torch.zeros(batch, steps, self.n_units, device=inputs.device)
        outputs = torch.zeros(batch, steps, self.n_outputs, device=inputs.device)
        for t in range(steps):
            u = self.recurrent(h) + self.input(inputs[:, t])
            h = (1 - self.alpha) * h + self.alpha * self.phi(u) + self.noise_sd * torch.randn_like(h)
            hidden[:, t] = h
            outputs[:, t] = self.output(h)
        return outputs, hidden


def matmul_loop(n_units: int, n_readout: int, n_cells: int, batch: int, steps: int, device) -> Callable[[], None]:
    """The matmuls of one recircuit training step, alone: per step forward addmm, dX and dW; readout fwd, dX and dW."""
    g = torch.Generator(device).manual_seed(0)
    rates = torch.randn(batch, n_units, generator=g, device=device)
    weight = torch.randn(n_units, n_units, generator=g, device=device)
    bias = torch.randn(n_units, device=device)
    out, grad_in, grad_w = torch.empty_like(rates), torch.empty_like(rates), torch.empty_like(weight)
    history = torch.randn(batch * steps, n_readout, generator=g, device=device)
    readout = torch.randn(n_readout, n_cells, generator=g, device=device)
    y, grad_history = torch.empty(batch * steps, n_cells, device=device), torch.empty_like(history)
    grad_readout = torch.empty_like(readout)

    def run() -> None:
        for _ in range(steps):
            torch.addmm(bias, rates, weight, out=out)
        for _ in range(steps):
            torch.mm(rates, weight, out=grad_in)
            torch.mm(rates.T, rates, out=grad_w)
        torch.mm(history, readout, out=y)
        torch.mm(y, readout.T, out=grad_history)
        torch.mm(history.T, y, out=grad_readout)

    return run


def matmul_flops(n_units: int, n_readout: int, n_cells: int, batch: int, steps: int) -> float:
    recurrent = 3 * 2 * batch * n_units * n_units * steps
    readout = 3 * 2 * batch * steps * n_readout * n_cells
    return float(recurrent + readout)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--small", action="store_true", help="128 units, 128 outputs, batch 32, 20 steps")
    parser.add_argument(
        "--activation", choices=sorted(ACTIVATIONS), default="relu", help="of both variants (default relu, as the reference)"
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--default-allocator", action="store_true", help="glibc's default malloc settings only")
    args = parser.parse_args(argv)
    if "GLIBC_TUNABLES" in os.environ:
        raise SystemExit("unset GLIBC_TUNABLES: this benchmark compares glibc's defaults with recircuit's settings")

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = SMALL_SIZE if args.small else REFERENCE_SIZE
    n_units, batch, steps, n_cells = size["n_exc"] + size["n_inh"], size["batch"], size["steps"], size["n_cells"]
    spec = load_spec(
        SPEC,
        {
            "network.n_exc": size["n_exc"],
            "network.n_inh": size["n_inh"],
            "network.activation": args.activation,
            "task.place_cells.n_cells": n_cells,
            "task.sequence_steps": steps,
            "training.batch_size": batch,
            "training.loss": "mse",
        },
    )
    torch.manual_seed(0)
    model, task = build_circuit(spec, device)
    generator = torch.Generator(device).manual_seed(0)
    trials = task.sample(batch, steps, generator)
    noise_sd = model.noise_sd_per_step()[0]
    baseline = ReferenceStyleRNN(task.n_inputs, n_units, n_cells, spec.alpha, noise_sd, args.activation).to(device)
    lr = spec.training.learning_rate
    opt_recircuit = torch.optim.Adam(model.parameters(), lr=lr)
    opt_baseline = torch.optim.Adam(baseline.parameters(), lr=lr)

    def recircuit_step() -> float:
        noise = model.draw_noise(batch, steps, generator)
        outputs, _ = model(trials.inputs, trials.initial_code, noise)
        loss = task_loss(outputs, trials.targets, "mse")
        opt_recircuit.zero_grad(set_to_none=True)
        loss.backward()
        opt_recircuit.step()
        return loss.item()

    def baseline_step() -> float:
        outputs, _ = baseline(trials.inputs, trials.initial_code)
        loss = nn.functional.mse_loss(outputs, trials.targets)
        opt_baseline.zero_grad(set_to_none=True)
        loss.backward()
        opt_baseline.step()
        return loss.item()

    mm_run = matmul_loop(n_units, model.n_readout, n_cells, batch, steps, device)
    flops = matmul_flops(n_units, model.n_readout, n_cells, batch, steps)
    # The baseline reads out from every unit (recircuit: E units only under Dale's law), so it does more matmul work.
    variant_flops = {"recircuit": flops, "baseline": matmul_flops(n_units, n_units, n_cells, batch, steps)}
    variants = {"recircuit": recircuit_step, "baseline": baseline_step, "matmul-only": mm_run}

    print(
        f"train step: {n_units} units ({size['n_exc']} E + {size['n_inh']} I), {n_cells} outputs, batch {batch}, "
        f"{steps} time steps, {args.activation}, {device.type} with {torch.get_num_threads()} threads, "
        f"median of {args.repeats} (after {args.warmup} warm-up)"
    )
    print(
        f"matmul FLOPs per step (recurrent and readout, fwd+bwd): recircuit {flops / 1e9:.2f} GFLOP, "
        f"baseline {variant_flops['baseline'] / 1e9:.2f} GFLOP (its readout reads all {n_units} units)"
    )

    def phase(allocator: str) -> tuple[dict[str, float], float]:
        """Median seconds per variant, interleaved so that load changes on a shared machine hit every variant alike;
        and the matmul ceiling in FLOP/s."""
        for _ in range(args.warmup):
            for fn in variants.values():
                fn()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                times[name].append(timed(fn, device))
        if not math.isfinite(recircuit_step()) or not math.isfinite(baseline_step()):
            raise SystemExit("a variant produced a non-finite loss")
        median = {name: statistics.median(t) for name, t in times.items()}
        ceiling = flops / median["matmul-only"]
        print(f"allocator: {allocator}")
        for name in variants:
            t = median[name]
            spread = f"{min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f}"
            line = f"  {name:<12} {t * 1e3:8.1f} ms/step ({spread})  {1 / t:7.2f} steps/s"
            if name == "matmul-only":
                line += f"  {ceiling / 1e9:6.1f} GFLOP/s (the ceiling)"
            else:
                achieved = variant_flops[name] / t
                line += f"  {achieved / 1e9:6.1f} GFLOP/s = {achieved / ceiling:5.1%} of the matmul ceiling"
            print(line)
        print(f"  ratio, same allocator: {median['baseline'] / median['recircuit']:.2f}")
        return median, ceiling

    default_median, default_ceiling = phase(allocator_in_use(keep_defaults=True))
    if args.default_allocator:
        median, ceiling = default_median, default_ceiling
    else:
        median, ceiling = phase(allocator_in_use())
    ratio = default_median["baseline"] / median["recircuit"]  # recircuit steps/s over baseline steps/s, each as run
    of_ceiling = flops / median["recircuit"] / ceiling
    print(f"recircuit as it runs {median['recircuit'] * 1e3:.0f} ms/step ({of_ceiling:.1%} of the matmul ceiling "
          f"with the same settings); reference-style loop as it runs {default_median['baseline'] * 1e3:.0f} ms/step")
    print(f"target ratio >= {TARGET_RATIO:g}: {'pass' if ratio >= TARGET_RATIO else 'FAIL'} ({ratio:.2f})")
    print(f"target >= {TARGET_CEILING:.0%} of the matmul ceiling: {'pass' if of_ceiling >= TARGET_CEILING else 'FAIL'} "
          f"({of_ceiling:.1%})")
    print(f"ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

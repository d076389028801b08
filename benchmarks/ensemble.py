"""Many circuits at once: K circuits trained as one batched network vs the same K trained one after another.

Both use recircuit's own training step (sample, noise, forward, backward, clip, Adam) on K seeds of one spec, in
this process. Prints member-steps/s of each, the share of the sequential time that is readout + loss work (the
place-cell readout and its cross-entropy, forward and backward: work that batching members cannot remove, so
sequential / that work bounds the ratio), and the throughput ratio (ensemble / sequential) on the last line.

Unless ``--default-allocator`` is given, both run with the glibc malloc settings the `recircuit` command sets
(recircuit.allocator; shared/research/env_measure.md 4c): the ensemble's (K, batch, time, cells) tensors are over
glibc's 32 MiB mmap threshold and would otherwise be page-faulted afresh every step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from recircuit.allocator import allocator_in_use
from recircuit.learning.ensemble import train_ensemble
from recircuit.learning.train import task_loss, train
from recircuit.spec import CircuitSpec, load_spec

TARGET_RATIO = 4.0


def readout_seconds(spec: CircuitSpec, repeats: int = 5) -> float:
    """Seconds of one member's readout (E units -> cells) and task loss, forward and backward (median)."""
    net, batch, steps = spec.network, spec.training.batch_size, spec.task.sequence_steps
    n_cells = spec.task.place_cells.n_cells
    g = torch.Generator().manual_seed(0)
    rates = torch.rand(batch, steps, net.n_units, generator=g, requires_grad=True)
    weight = (torch.rand(n_cells, net.n_exc, generator=g) * 0.01).requires_grad_()
    bias = torch.zeros(n_cells, requires_grad=True)
    targets = torch.softmax(torch.randn(batch, steps, n_cells, generator=g), -1)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = task_loss(F.linear(rates[..., : net.n_exc], weight, bias), targets, spec.training.loss)
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--default-allocator", action="store_true", help="keep glibc's default malloc settings")
    args = parser.parse_args()
    allocator = allocator_in_use(args.default_allocator)
    torch.set_num_threads(args.threads)
    n_inh = args.units // 5
    overrides = [
        f"network.n_exc={args.units - n_inh}", f"network.n_inh={n_inh}", f"training.batch_size={args.batch}",
        f"task.sequence_steps={args.time_steps}", f"training.steps={args.steps}", f"training.device={args.device}",
        f"training.log_every_steps={args.steps}", f"training.checkpoint_every_steps={10 * args.steps}",
    ]
    spec_file = "circuits/path_integration.yaml"
    specs = [load_spec(spec_file, [*overrides, f"training.seed={k}"]) for k in range(args.members)]
    quiet = lambda message: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        train(specs[0], Path(tmp) / "warmup", circuit="bench", log=quiet)
        start = time.perf_counter()
        for k, spec in enumerate(specs):
            train(spec, Path(tmp) / f"alone{k}", circuit="bench", log=quiet)
        sequential = time.perf_counter() - start
        start = time.perf_counter()
        train_ensemble(specs, [Path(tmp) / f"member{k}" for k in range(args.members)], circuit="bench",
                       variants=[f"seed{k}" for k in range(args.members)], log=quiet)
        ensemble = time.perf_counter() - start
    readout = readout_seconds(specs[0]) * args.members * args.steps if args.device == "cpu" else float("nan")
    member_steps = args.members * args.steps
    print(f"allocator: {allocator}")
    print(f"{args.members} circuits x {args.units} units, batch {args.batch} x {args.time_steps} time steps, "
          f"{specs[0].task.place_cells.n_cells} place cells ({specs[0].training.loss}), {args.steps} steps each, "
          f"{args.threads} thread(s), {args.device}")
    print(f"one after another: {member_steps / sequential:8.1f} member-steps/s ({sequential:.1f} s)")
    print(f"as one ensemble:   {member_steps / ensemble:8.1f} member-steps/s ({ensemble:.1f} s)")
    print(f"readout + loss alone (fwd+bwd, every member-step): {readout:.1f} s = {readout / sequential:.0%} of the "
          f"sequential time, so batching can give at most {sequential / readout:.1f}x")
    ratio = sequential / ensemble
    print(f"target >= {TARGET_RATIO:g}x: {'pass' if ratio >= TARGET_RATIO else 'FAIL'}")
    print(f"ratio {ratio:.2f}")


if __name__ == "__main__":
    main()

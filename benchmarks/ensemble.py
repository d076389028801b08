"""Many circuits at once: K circuits trained as one batched network vs the same K trained one after another.

Both use recircuit's own training step (sample, noise, forward, backward, clip, Adam) on K seeds of one spec, in
this process. Prints member-steps/s of each and the throughput ratio (ensemble / sequential) on the last line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from recircuit.learning.ensemble import train_ensemble
from recircuit.learning.train import train
from recircuit.spec import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--time-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_inh = args.units // 5
    overrides = [
        f"network.n_exc={args.units - n_inh}", f"network.n_inh={n_inh}", f"training.batch_size={args.batch}",
        f"task.sequence_steps={args.time_steps}", f"training.steps={args.steps}", f"training.device={args.device}",
        f"training.log_every_steps={args.steps}", f"training.checkpoint_every_steps={10 * args.steps}",
    ]
    specs = [load_spec("circuits/path_integration.yaml", [*overrides, f"training.seed={k}"]) for k in range(args.members)]
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
    member_steps = args.members * args.steps
    print(f"{args.members} circuits x {args.units} units, batch {args.batch} x {args.time_steps} time steps, "
          f"{args.steps} steps each, {args.threads} thread(s), {args.device}")
    print(f"one after another: {member_steps / sequential:8.1f} member-steps/s ({sequential:.1f} s)")
    print(f"as one ensemble:   {member_steps / ensemble:8.1f} member-steps/s ({ensemble:.1f} s)")
    ratio = sequential / ensemble
    print(f"target >= 4x: {'pass' if ratio >= 4 else 'FAIL'}")
    print(f"ratio {ratio:.2f}")


if __name__ == "__main__":
    main()

"""`recircuit spike`: the Brian2 spiking twin of a trained run folder -> spiking.nc; `recircuit spiking-report`:
the twin claims seed by seed on a spiking summary."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_spike(args: argparse.Namespace) -> int:
    from recircuit.spiking.simulate import spike

    run_dir: Path = args.run_dir
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    if args.build_dir is not None and args.build_dir.exists() and not args.build_dir.is_dir():
        raise ValueError(f"--build-dir {args.build_dir} exists and is not a folder")
    spike(run_dir, args.out, args.build_dir, overrides=args.set, log=lambda m: print(m, flush=True))
    return 0


def cmd_spiking_report(args: argparse.Namespace) -> int:
    from recircuit.results import open_summary
    from recircuit.spiking.report import REQUIRED, report

    print(report(open_summary(args.summary, "spiking", REQUIRED, "the spike and collect rules")))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `spike` and `spiking-report` on the `recircuit` subcommand parser."""
    from recircuit.cli_options import add_set_argument

    p = sub.add_parser(
        "spike",
        help="Brian2 LIF twin of a trained circuit: lambda search, task trials, quiescence -> spiking.nc",
        description="Converts the trained rate circuit unit for unit into LIF neurons (Kim, Li & Sejnowski 2019), "
        "builds the Brian2 network once per network size and runs the held-out task trials and quiescence.",
    )
    p.add_argument("run_dir", type=Path, help="run folder holding model.pt (and waking.nc for the offline KL)")
    p.add_argument("--out", type=Path, help="output file (default: RUN_DIR/spiking.nc)")
    p.add_argument(
        "--build-dir",
        type=Path,
        help="Brian2 build cache (default: RUN_DIR/.brian_build). A sweep may share one, e.g. results/.brian_build: "
        "each network size gets its own N<units>_<hash> folder, built under a lock, and every job runs a private copy",
    )
    add_set_argument(p, help="spiking.* or reactivation.* overrides, e.g. --set spiking.target=numpy spiking.n_trials=50")
    p.set_defaults(func=cmd_spike)

    p = sub.add_parser(
        "spiking-report",
        help="the twin claims (error ratio, unit correlation, twin of noisy below twin of noise-free offline) seed "
        "by seed",
    )
    p.add_argument("summary", type=Path, nargs="?", default=Path("results/summary/spiking.nc"))
    p.set_defaults(func=cmd_spiking_report)

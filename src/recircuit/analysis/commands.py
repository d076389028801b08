"""CLI commands of the offline-reactivation analysis: `recircuit quiesce`, `recircuit reactivation` and
`recircuit reactivation-report`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _log(message: str) -> None:
    print(message, flush=True)


def parse_runs(items: list[str]) -> dict[str, Path]:
    """``LABEL=RUN_DIR`` strings -> {label: run folder}, in the order given."""
    runs: dict[str, Path] = {}
    for item in items:
        lbl, sep, path = item.partition("=")
        if not sep or not lbl.strip() or not path.strip():
            raise ValueError(f"--run {item!r} must look like LABEL=RUN_DIR (e.g. noisy=results/pi/noisy/seed0)")
        lbl = lbl.strip()
        if lbl in runs:
            raise ValueError(f"--run label {lbl!r} is given twice")
        if "+" in lbl:
            raise ValueError(f"--run label {lbl!r} must not contain '+' (it marks the offline-noise rows)")
        run_dir = Path(path.strip())
        if not run_dir.is_dir():
            raise FileNotFoundError(f"--run {lbl}: {run_dir} is not a folder")
        runs[lbl] = run_dir
    return runs


def cmd_quiesce(args: argparse.Namespace) -> int:
    from recircuit.analysis.quiescence import quiesce

    path = quiesce(args.run_dir, args.out, overrides=args.set, device=args.device or "auto", log=_log)
    _log(f"wrote {path}")
    return 0


def cmd_reactivation_report(args: argparse.Namespace) -> int:
    from recircuit.analysis.reactivation_report import report
    from recircuit.results import open_summary

    print(report(open_summary(args.summary, "reactivation", ("kl", "circuit", "quiescent", "waking"),
                              "the reactivation rules")))  # fmt: skip
    return 0


def cmd_reactivation(args: argparse.Namespace) -> int:
    from recircuit.analysis.reactivation import compute_reactivation

    runs = parse_runs(args.run)
    path = compute_reactivation(
        runs, args.out, overrides=args.set, circuit=args.circuit, seed=args.seed, variant=args.variant
    )
    _log(f"wrote {path} ({', '.join(runs)})")
    return 0


def _add_set(p: argparse.ArgumentParser) -> None:
    from recircuit.cli_options import add_set_argument

    add_set_argument(
        p,
        metavar="reactivation.KEY=VALUE",
        help="override reactivation settings, e.g. --set reactivation.duration_steps=2000 reactivation.noise_mode=same",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `quiesce` and `reactivation` on the `recircuit` subcommand parser."""
    p = sub.add_parser(
        "quiesce",
        help="run a trained circuit with zero input and noise on (trained, offline-noise, untrained, uniform), "
        "and awake with its self-motion input scaled toward zero (reactivation.input_scales) -> quiescence.nc",
        description="Quiesce a trained circuit: zero input, recurrent noise on, under each condition (the trained "
        "circuit, the offline-noise control of a noise-free circuit, an untrained circuit, the uniform baseline); "
        "then the scaled-input test: the trained circuit awake, with its training noise, on held-out self-motion "
        "multiplied by each of reactivation.input_scales. Writes quiescence.nc.",
    )
    p.add_argument("run_dir", type=Path, help="run folder holding model.pt")
    p.add_argument("--out", type=Path, help="output file (default: RUN_DIR/quiescence.nc)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    _add_set(p)
    p.set_defaults(func=cmd_quiesce)

    p = sub.add_parser(
        "reactivation",
        help="KL matrix, coverage, variance, step size, PCA of several runs of one circuit and seed -> reactivation.nc",
        description="Reads waking.nc and quiescence.nc of each --run. Quiescent rows: each run's trained condition "
        "(LABEL), LABEL+offline_noise for noise-free runs, LABEL+noise_off (the circuit offline without noise) for "
        "noisy runs, and 'untrained' and 'uniform' from the first run; "
        "waking columns: the runs.",
    )
    p.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="LABEL=RUN_DIR",
        help="a run folder with waking.nc and quiescence.nc and its label, e.g. noisy=results/pi/noisy/seed0 "
        "(repeat; the first also gives the untrained and uniform rows)",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="output file, e.g. results/pi/reactivation/seed0/reactivation.nc"
    )
    p.add_argument("--circuit", help="circuit label (default: the runs' circuit, which must agree)")
    p.add_argument("--seed", type=int, help="seed label (default: the runs' seed, which must agree)")
    p.add_argument("--variant", default="all", help="variant label of the length-1 variant dim (default: all)")
    _add_set(p)
    p.set_defaults(func=cmd_reactivation)

    p = sub.add_parser(
        "reactivation-report",
        help="the reactivation claims (KL orderings, coverage, variance, heading uniformity and drift) seed by seed",
    )
    p.add_argument("summary", type=Path, nargs="?", default=Path("results/summary/reactivation.nc"))
    p.set_defaults(func=cmd_reactivation_report)

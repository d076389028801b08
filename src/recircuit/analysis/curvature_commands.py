"""CLI: `recircuit curvature RUN_DIR` and `recircuit curvature-comparison`; the work is done in recircuit.analysis.curvature_run and
curvature_comparison (imported lazily, so
building the command line stays fast)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_curvature(args: argparse.Namespace) -> int:
    from recircuit.analysis.curvature_run import analyse_run

    path = analyse_run(
        args.run_dir, args.out, device=args.device or "auto", overrides=args.set, log=lambda m: print(m, flush=True)
    )
    print(f"wrote {path}", flush=True)
    return 0


def cmd_curvature_comparison(args: argparse.Namespace) -> int:
    from recircuit.analysis.curvature_comparison import comparison_table, write_comparison
    from recircuit.results import open_dataset

    path = write_comparison(args.summary, args.out)
    print(comparison_table(open_dataset(path)))
    print(f"wrote {path}", flush=True)
    return 0


def add_commands(sub) -> None:
    """Register `curvature RUN_DIR [--out FILE] [--device D] [--set curvature.KEY=VALUE ...]` and
    `curvature-comparison [SUMMARY] [--out FILE]`."""
    from recircuit.cli_options import add_set_argument

    p = sub.add_parser(
        "curvature", help="Hessian spectrum (exact loss, Lanczos, Hutchinson) and generalization gap -> curvature.nc"
    )
    p.add_argument("run_dir", type=Path, help="run folder holding model.pt")
    p.add_argument("--out", type=Path, help="output file (default: RUN_DIR/curvature.nc)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    add_set_argument(
        p, metavar="curvature.KEY=VALUE", help="override curvature settings, e.g. --set curvature.hutchinson_probes=50"
    )
    p.set_defaults(func=cmd_curvature)

    p = sub.add_parser(
        "curvature-comparison",
        help="rules vs BPTT (raw and at matched training loss) and curvature-gap rank correlations -> a table + .nc",
    )
    p.add_argument("summary", type=Path, nargs="?", default=Path("results/summary/curvature.nc"))
    p.add_argument("--out", type=Path, default=Path("results/summary/curvature_comparison.nc"))
    p.set_defaults(func=cmd_curvature_comparison)

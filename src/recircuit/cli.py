"""The `recircuit` command line: every Snakemake rule is one of these commands, so any job can be re-run by hand.

Exit codes: 0 success, 2 bad input (spec, config, missing file), 1 a run that failed (e.g. diverged training).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recircuit.allocator import keep_large_allocations
from recircuit.cli_options import add_set_argument
from recircuit.spec import CircuitSpec, SpecError, load_spec


# Each module defines add_commands(subparsers): its subcommands, each with set_defaults(func=...) returning an int.
COMMAND_MODULES: tuple[str, ...] = (
    "recircuit.analysis.curvature_commands",
    "recircuit.analysis.commands",
    "recircuit.spiking.commands",
)


class UsageError(Exception):
    """Bad input that is not a spec error: one clear message, exit code 2."""


def _log(message: str) -> None:
    print(message, flush=True)


def _spec(args: argparse.Namespace, extra: Sequence[str] = ()) -> CircuitSpec:
    return load_spec(args.spec, [*args.set, *extra])


def _device_override(args: argparse.Namespace) -> list[str]:
    """--device as a spec override (none when not given)."""
    return [f"training.device={args.device}"] if args.device else []


def _circuit_name(args: argparse.Namespace) -> str:
    return args.circuit or Path(args.spec).stem


# ---------------------------------------------------------------------------------------------------- commands
def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.specs:
        try:
            spec = load_spec(path, args.set)
        except SpecError as exc:
            failed += 1
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            continue
        print(f"{path}: ok ({spec.task.kind}, {spec.network.n_exc} E + {spec.network.n_inh} I units)")
    return 2 if failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    from recircuit.circuit.io import model_path
    from recircuit.learning.train import train

    extra = [f"training.seed={args.seed}"] if args.seed is not None else []
    spec = _spec(args, [*extra, *_device_override(args)])
    if args.init_from is not None and not model_path(args.init_from).is_file():
        raise UsageError(f"--init-from {args.init_from}: no trained model here (a run folder with model.pt)")
    train(spec, args.out, circuit=_circuit_name(args), variant=args.variant, init_from=args.init_from, log=_log)
    return 0


def cmd_train_ensemble(args: argparse.Namespace) -> int:
    from recircuit.learning.ensemble import train_ensemble

    if "{seed}" not in args.out:
        raise UsageError(f"--out {args.out!r} must contain {{seed}}, e.g. results/<circuit>/<variant>/seed{{seed}}")
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError(f"--seeds lists a seed twice: {' '.join(map(str, args.seeds))}")
    specs = [_spec(args, [*_device_override(args), f"training.seed={seed}"]) for seed in args.seeds]
    if any(spec.training.on_divergence == "stop" for spec in specs):
        raise UsageError(
            "train-ensemble records diverged members (their weights frozen before the first non-finite step); "
            "set training.on_divergence=record, or train the seeds one by one with `recircuit train`"
        )
    train_ensemble(
        specs,
        [args.out.format(seed=seed) for seed in args.seeds],
        circuit=_circuit_name(args),
        variants=[args.variant] * len(specs),
        log=_log,
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recircuit.learning.evaluate import evaluate

    if args.out is not None and len(args.run_dirs) > 1:
        raise UsageError("--out needs a single run folder (with several, each gets RUN_DIR/waking.nc)")
    missing = [str(d) for d in args.run_dirs if not (d / "model.pt").is_file()]
    if missing:
        raise UsageError(f"run folders without model.pt: {', '.join(missing)}")
    for run_dir in args.run_dirs:
        _log(f"wrote {evaluate(run_dir, args.out, device=args.device or 'auto')}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from recircuit.results import collect

    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        raise UsageError(f"result files not found: {', '.join(missing)}")
    _log(f"wrote {collect(args.files, args.out)} from {len(args.files)} files")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from recircuit.sweep import config_schema_json

    text = config_schema_json()
    if args.write:
        Path(args.write).write_text(text)
        _log(f"wrote {args.write}")
    else:
        print(text)
    return 0


def cmd_sweep_validate(args: argparse.Namespace) -> int:
    from recircuit.sweep import SweepError, load_sweep_config

    try:
        config = load_sweep_config(args.config)
    except SweepError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    print(f"{args.config}: ok ({len(config.jobs())} trained circuits)")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from recircuit.figures import make_figures

    for path in make_figures(args.summary, args.out, only=args.only):
        _log(f"wrote {path}")
    return 0


def cmd_normalization_summary(args: argparse.Namespace) -> int:
    from recircuit.analysis.normalization import summarize, table
    from recircuit.results import open_dataset

    missing = [str(d) for d in args.run_dirs if not (d / "train.nc").is_file() or not (d / "waking.nc").is_file()]
    if missing:
        raise UsageError(f"run folders without train.nc and waking.nc: {', '.join(missing)}")
    path = summarize(args.run_dirs, args.out)
    print(table(open_dataset(path)))
    _log(f"wrote {path}")
    return 0


def cmd_report_times(args: argparse.Namespace) -> int:
    from recircuit.reporting import report_times

    print(report_times(args.benchmarks))
    return 0


# ------------------------------------------------------------------------------------------------------ parser
def _add_run_labels(p: argparse.ArgumentParser) -> None:
    """--variant, --circuit, --device and --set: what `train` and `train-ensemble` share."""
    p.add_argument("--variant", default="default", help="variant label stored with the results")
    p.add_argument("--circuit", help="circuit label (default: the spec file name)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="sets training.device")
    add_set_argument(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recircuit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check circuit specs; exit 2 listing every problem as file:line: key: message")
    p.add_argument("specs", nargs="+", help="circuit spec YAML files")
    add_set_argument(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="train a circuit into a run folder (model.pt, train.nc); resumes a checkpoint")
    p.add_argument("spec", help="circuit spec YAML file")
    p.add_argument("--out", required=True, type=Path, help="run folder, e.g. results/<circuit>/<variant>/seed0")
    p.add_argument("--seed", type=int, help="sets training.seed")
    p.add_argument(
        "--init-from",
        type=Path,
        help="start from the trained weights of this run folder (same network; fresh Adam state), e.g. to train a "
        "circuit on with another learning rate, noise level or trial length",
    )
    _add_run_labels(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "train-ensemble",
        help="train several seeds of one circuit as one batched network (bptt); one run folder per seed",
    )
    p.add_argument("spec", help="circuit spec YAML file")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds, one ensemble member each")
    p.add_argument("--out", required=True, help="run folder pattern with {seed}, e.g. results/pi/noisy/seed{seed}")
    _add_run_labels(p)
    p.set_defaults(func=cmd_train_ensemble)

    p = sub.add_parser("evaluate", help="held-out waking trajectories of trained circuits -> waking.nc")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="run_dir", help="run folders holding model.pt")
    p.add_argument("--out", type=Path, help="output file, for a single run folder (default: RUN_DIR/waking.nc)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("collect", help="combine per-job result files along circuit/variant/seed into one summary")
    p.add_argument("files", nargs="+", help="per-job .nc files")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("figures", help="figures (PNG and PDF) from summary datasets")
    p.add_argument("--summary", type=Path, default=Path("results/summary"), help="folder of summary .nc files")
    p.add_argument("--out", type=Path, default=Path("results/figures"))
    p.add_argument("--only", nargs="+", help="make only these figure groups")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("schema", help="print (or --write) the JSON schema of the Snakemake sweep config")
    p.add_argument("--write", type=Path)
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("check-config", help="validate a Snakemake sweep config (circuits, variants, seeds, scale)")
    p.add_argument("config", type=Path)
    p.set_defaults(func=cmd_sweep_validate)

    p = sub.add_parser(
        "normalization-summary", help="the inhibitory-normalization experiment over run folders -> normalization.nc"
    )
    p.add_argument("run_dirs", nargs="+", type=Path, help="run folders (train.nc + waking.nc)")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_normalization_summary)

    p = sub.add_parser("report-times", help="per-rule wall times from Snakemake benchmark files")
    p.add_argument("benchmarks", type=Path, nargs="?", default=Path("results/benchmarks"))
    p.set_defaults(func=cmd_report_times)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_large_allocations()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except (UsageError, FileNotFoundError, ValueError) as exc:
        print(f"recircuit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # TrainingDiverged and other failed runs
        print(f"recircuit {args.command}: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

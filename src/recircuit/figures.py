"""Figures from summary datasets only (never from models): PNG and PDF under results/figures/."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from recircuit.results import open_dataset  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False, "font.size": 9})

ERROR_VARIABLES = {"path_integration": ("position_error", "cm"), "head_direction": ("heading_error", "deg")}


def save_figure(fig: plt.Figure, out_dir: str | Path, name: str, dpi: int = 150) -> list[Path]:
    """Save ``name``.png and ``name``.pdf into out_dir (pyplot or bare matplotlib Figure); return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return paths


def _task_kind(ds: xr.Dataset, circuit: str) -> str:
    sub = ds.sel(circuit=circuit)
    if "position_error" in sub and np.isfinite(sub["position_error"].values).any():
        return "path_integration"
    return "head_direction"


def _present(da: xr.DataArray, dim: str) -> list:
    """Coordinate values along ``dim`` where ``da`` has any finite data (outer joins pad with NaN)."""
    other = [d for d in da.dims if d != dim]
    finite = np.isfinite(da).any(dim=other) if other else np.isfinite(da)
    return [v for v, ok in zip(da[dim].values, finite.values) if ok]


def _mean_and_spread(da: xr.DataArray, dim: str = "seed") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and the min-max band (a single seed gives a zero-width band)."""
    return da.mean(dim).values, da.min(dim).values, da.max(dim).values


def training_curves(training: xr.Dataset, out_dir: Path) -> list[Path]:
    circuits = list(training.circuit.values)
    fig, axes = plt.subplots(2, len(circuits), figsize=(4.2 * len(circuits), 6), squeeze=False, layout="constrained")
    for col, circuit in enumerate(circuits):
        kind = _task_kind(training, circuit)
        error_name, units = ERROR_VARIABLES[kind]
        sub = training.sel(circuit=circuit)
        for variant in _present(sub["loss"], "variant"):
            run = sub.sel(variant=variant)
            seeds = _present(run["loss"], "seed")
            loss = run["loss"].sel(seed=seeds).dropna("step", how="all")
            mean, low, high = _mean_and_spread(loss)
            (line,) = axes[0, col].plot(loss.step, mean, lw=1, label=f"{variant} (n={len(seeds)})")
            axes[0, col].fill_between(loss.step, low, high, color=line.get_color(), alpha=0.25, lw=0)
            error = run[error_name].sel(seed=seeds).dropna("logged_step", how="all")
            mean, low, high = _mean_and_spread(error)
            axes[1, col].plot(error.logged_step, mean, color=line.get_color(), marker="o", ms=2, lw=1, label=variant)
            axes[1, col].fill_between(error.logged_step, low, high, color=line.get_color(), alpha=0.25, lw=0)
        axes[0, col].set(title=circuit.replace("_", " "), yscale="log", ylabel="training loss", xlabel="optimizer step")
        axes[1, col].set(ylabel=f"decoding error on training batch ({units})", xlabel="optimizer step", ylim=(0, None))
        axes[0, col].legend(frameon=False, fontsize=7)
    fig.suptitle("Training curves (mean over seeds, band = min-max)")
    return save_figure(fig, out_dir, "training_curves")


def _break_wraps(degrees: np.ndarray) -> np.ndarray:
    """NaN where a heading trace wraps around +-180 deg, so the line is not drawn across the plot."""
    out = degrees.astype(float).copy()
    out[1:][np.abs(np.diff(degrees)) > 180] = np.nan
    return out


def decoded_trajectories(waking: xr.Dataset, out_dir: Path, n_examples: int = 3) -> list[Path]:
    circuits = list(waking.circuit.values)
    variants = list(waking.variant.values)
    fig, axes = plt.subplots(
        len(circuits), len(variants), figsize=(3.4 * len(variants), 3.4 * len(circuits)), squeeze=False,
        layout="constrained",
    )
    for row, circuit in enumerate(circuits):
        kind = _task_kind(waking, circuit)
        sub = waking.sel(circuit=circuit)
        for col, variant in enumerate(variants):
            ax = axes[row, col]
            error_name, _ = ERROR_VARIABLES[kind]
            seeds = _present(sub[error_name].sel(variant=variant), "seed")
            if not seeds:
                ax.set_axis_off()
                continue
            run = sub.sel(variant=variant, seed=seeds[0])
            colors = plt.cm.tab10(np.arange(n_examples))
            for trial, color in zip(range(n_examples), colors):
                if kind == "path_integration":
                    true = run["true_position"].isel(trial=trial).values
                    decoded = run["decoded_position"].isel(trial=trial).values
                    ax.plot(true[:, 0], true[:, 1], color=color, lw=1.2)
                    ax.plot(decoded[:, 0], decoded[:, 1], color=color, lw=0.8, ls="--")
                else:
                    time = run.time.values
                    ax.plot(time, _break_wraps(np.rad2deg(run["true_heading"].isel(trial=trial).values)),
                            color=color, lw=1.2)
                    ax.plot(time, np.rad2deg(run["decoded_heading"].isel(trial=trial)), ".", color=color, ms=2)
            if kind == "path_integration":
                spec_arena = 2.2
                ax.set(xlim=(-spec_arena / 2 - 0.1, spec_arena / 2 + 0.1), ylim=(-spec_arena / 2 - 0.1, spec_arena / 2 + 0.1))
                ax.set(xlabel="x (m)", ylabel="y (m)", aspect="equal")
            else:
                ax.set(xlabel="time (s)", ylabel="heading (deg)", ylim=(-180, 180))
            ax.set_title(f"{circuit.replace('_', ' ')}: {variant} (seed {seeds[0]})", fontsize=8)
    fig.suptitle("Held-out trajectories: true (solid) vs decoded (dashed / dots)")
    return save_figure(fig, out_dir, "decoded_trajectories")


def error_over_time(waking: xr.Dataset, out_dir: Path) -> list[Path]:
    circuits = list(waking.circuit.values)
    fig, axes = plt.subplots(1, len(circuits), figsize=(4.2 * len(circuits), 3.4), squeeze=False, layout="constrained")
    for col, circuit in enumerate(circuits):
        kind = _task_kind(waking, circuit)
        error_name, units = ERROR_VARIABLES[kind]
        sub = waking.sel(circuit=circuit)
        ax = axes[0, col]
        for variant in _present(sub[error_name], "variant"):
            err = sub[error_name].sel(variant=variant)
            seeds = _present(err, "seed")
            per_seed = err.sel(seed=seeds).mean("trial")
            mean, low, high = _mean_and_spread(per_seed)
            (line,) = ax.plot(err.time, mean, lw=1.2, label=f"{variant} (n={len(seeds)})")
            ax.fill_between(err.time, low, high, color=line.get_color(), alpha=0.25, lw=0)
        ax.set(title=circuit.replace("_", " "), xlabel="time since trial start (s)", ylabel=f"decoding error ({units})")
        ax.set_ylim(0, None)
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle("Decoding error over held-out trials (mean over trials and seeds)")
    return save_figure(fig, out_dir, "error_over_time")


def training_figures(summary_dir: Path, out_dir: Path) -> list[Path]:
    paths = training_curves(open_dataset(summary_dir / "training.nc"), out_dir)
    waking = open_dataset(summary_dir / "waking.nc")
    return paths + decoded_trajectories(waking, out_dir) + error_over_time(waking, out_dir)


# group name -> (summary files it needs, "module:function" that draws it)
FIGURE_GROUPS: dict[str, tuple[tuple[str, ...], str]] = {
    "training": (("training.nc", "waking.nc"), "recircuit.figures:training_figures"),
    "normalization": (("normalization.nc",), "recircuit.analysis.normalization:make_normalization_figures"),
    "curvature": (("curvature.nc",), "recircuit.analysis.curvature_figures:make_curvature_figures"),
    "reactivation": (("reactivation.nc",), "recircuit.analysis.reactivation_figures:make_reactivation_figures"),
    "spiking": (("spiking.nc",), "recircuit.spiking.figures:make_spiking_figures"),
}


def _resolve(target: str) -> Callable[[Path, Path], list[Path]]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def make_figures(summary_dir: str | Path, out_dir: str | Path, only: Iterable[str] | None = None) -> list[Path]:
    """Draw every figure group whose summary files exist (or the groups in ``only``, which must exist)."""
    summary_dir, out_dir = Path(summary_dir), Path(out_dir)
    wanted = list(only) if only else list(FIGURE_GROUPS)
    unknown = [g for g in wanted if g not in FIGURE_GROUPS]
    if unknown:
        raise ValueError(f"unknown figure group(s) {', '.join(unknown)}; known: {', '.join(FIGURE_GROUPS)}")
    paths: list[Path] = []
    for group in wanted:
        needs, target = FIGURE_GROUPS[group]
        missing = [n for n in needs if not (summary_dir / n).is_file()]
        if missing:
            if only:
                raise FileNotFoundError(f"figure group {group} needs {', '.join(str(summary_dir / n) for n in missing)}")
            continue
        paths += _resolve(target)(summary_dir, out_dir)
    if not paths:
        raise FileNotFoundError(f"no summary datasets in {summary_dir} (run the collect rules first)")
    return paths

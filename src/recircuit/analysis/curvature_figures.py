"""Curvature figures from the collected summary (results/summary/curvature.nc) only, never from models.

- curvature_vs_gap: top Hessian eigenvalue vs generalization gap, one panel per (circuit, shift), points coloured
  by rule (one point per run), Spearman rank correlation over all runs of the panel (rules x seeds) in the title;
- curvature_by_rule: top eigenvalue and training-set loss per rule (one point per seed), per circuit.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from recircuit.analysis.curvature_comparison import RULE_ORDER, run_rules  # noqa: E402
from recircuit.figures import save_figure  # noqa: E402
from recircuit.results import open_dataset  # noqa: E402

CURVATURE_SUMMARY = "curvature.nc"
RULE_COLORS = {"bptt": "tab:blue", "tbptt": "tab:orange", "eprop": "tab:green", "rflo": "tab:red"}


def points(ds: xr.Dataset, circuit: str, y: str, shift: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top eigenvalue, y, rule) over the runs of ``circuit`` where both are finite."""
    sub = ds.sel(circuit=circuit)
    x = sub["top_eigenvalue"].values.ravel()
    yy = (sub[y].sel(shift=shift) if shift is not None else sub[y]).values.ravel()
    rules = run_rules(ds).sel(circuit=circuit).values.ravel().astype(str)
    ok = np.isfinite(x) & np.isfinite(yy) & (rules != "")
    return x[ok], yy[ok], rules[ok]


def spearman_title(x: np.ndarray, y: np.ndarray) -> str:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return f"n = {len(x)}: too few for Spearman"
    rho, p = spearmanr(x, y)
    return f"Spearman rho = {rho:+.2f}, p = {p:.2g} (n = {len(x)})"




def _scatter_by_rule(ax, x, y, rules) -> None:
    present = [r for r in RULE_ORDER if r in set(rules)] + sorted(set(rules) - set(RULE_ORDER))
    for rule in present:
        sel = rules == rule
        ax.scatter(x[sel], y[sel], s=22, color=RULE_COLORS.get(rule), label=rule, alpha=0.85, edgecolor="none")


def curvature_vs_gap(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    circuits = [str(c) for c in ds["circuit"].values]
    shifts = [str(s) for s in ds["shift"].values if np.isfinite(ds["generalization_gap"].sel(shift=s)).any()]
    fig, axes = plt.subplots(
        len(circuits), len(shifts), figsize=(3.4 * len(shifts), 3.3 * len(circuits) + 0.4), squeeze=False
    )
    for row, circuit in enumerate(circuits):
        for col, shift in enumerate(shifts):
            ax = axes[row, col]
            x, y, rules = points(ds, circuit, "generalization_gap", shift)
            if len(x) == 0:
                ax.set_axis_off()
                continue
            _scatter_by_rule(ax, x, y, rules)
            ax.axhline(0, color="0.7", lw=0.6)
            ax.set_title(f"{circuit.replace('_', ' ')}, shift: {shift}\n{spearman_title(x, y)}", fontsize=7)
            ax.set_xlabel(r"top Hessian eigenvalue $\lambda_{max}$ (1)", fontsize=8)
            if col == 0:
                ax.set_ylabel("gap: test - training-set loss (1)", fontsize=8)
            if row == 0 and col == 0:
                ax.legend(frameon=False, fontsize=7, title="rule", title_fontsize=7)
    fig.suptitle("Curvature of the exact loss vs generalization gap (one point per trained circuit; (1) = dimensionless)")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, out_dir, "curvature_vs_gap")


def curvature_by_rule(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    circuits = [str(c) for c in ds["circuit"].values]
    fig, axes = plt.subplots(2, len(circuits), figsize=(4.0 * len(circuits), 6.0), squeeze=False)
    for col, circuit in enumerate(circuits):
        for row, (var, ylabel) in enumerate(
            [("top_eigenvalue", r"top Hessian eigenvalue $\lambda_{max}$ (1)"),
             ("train_loss", "training-set loss (1)")]
        ):
            ax = axes[row, col]
            x, y, rules = points(ds, circuit, var)
            present = [r for r in RULE_ORDER if r in set(rules)] + sorted(set(rules) - set(RULE_ORDER))
            for i, rule in enumerate(present):
                values = y[rules == rule]
                jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
                ax.scatter(i + jitter, values, s=22, color=RULE_COLORS.get(rule), edgecolor="none")
                ax.plot([i - 0.25, i + 0.25], [np.median(values)] * 2, color="k", lw=1)
            ax.set_xticks(range(len(present)), present)
            ax.set(ylabel=ylabel, xlabel="credit-assignment rule")
            ax.set_title(circuit.replace("_", " "), fontsize=8)
    fig.suptitle("Top Hessian eigenvalue and training loss per rule (points = seeds, bar = median)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, out_dir, "curvature_by_rule")


def make_curvature_figures(summary_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Draw the curvature figures (PNG + PDF) from ``summary_dir/curvature.nc``; return the written paths."""
    path = Path(summary_dir) / CURVATURE_SUMMARY
    ds = open_dataset(path)  # FileNotFoundError when missing
    if "top_eigenvalue" not in ds or "generalization_gap" not in ds:
        raise ValueError(f"{path}: not a curvature summary (needs top_eigenvalue and generalization_gap)")
    out_dir = Path(out_dir)
    return curvature_vs_gap(ds, out_dir) + curvature_by_rule(ds, out_dir)

"""The inhibitory-normalization experiment: conditions x input-gain levels x seeds -> normalization.nc.

Each trained run is labelled by its own spec: the condition is the normalization kind and the error
normalization (``no_normalization``, ``divisive/none`` = forward only, ``divisive/center``, ...), the level is
``task.input_gain.epsilon``. For every circuit and level the error-normalized conditions are compared with
forward-only normalization by a two-sided Mann-Whitney U test on the final held-out decoding error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import stats

from recircuit.results import label, open_dataset, provenance, save_dataset
from recircuit.spec import spec_from_json

FORWARD_ONLY = "divisive/none"
EXACT_SPEARMAN_MAX_POINTS = 8  # up to 8! = 40320 orderings


def spearman_with_exact_p(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho of ``x`` and ``y`` and its two-sided p-value.

    For up to EXACT_SPEARMAN_MAX_POINTS points the p-value is exact, from every ordering of ``y`` against ``x``:
    scipy's t approximation is far off there (it gives p = 0 for 4 points in perfect rank order, whose exact p is
    2/24 = 0.083).
    """
    result = stats.spearmanr(x, y)
    if len(x) > EXACT_SPEARMAN_MAX_POINTS:
        return float(result.statistic), float(result.pvalue)
    mean_rank = (len(x) + 1) / 2  # ranks 1..n average (n + 1) / 2, ties included
    x_centred = stats.rankdata(x) - mean_rank
    y_centred = stats.rankdata(y) - mean_rank  # reordering y reorders its ranks: rank once, permute the ranks
    scale = np.linalg.norm(x_centred) * np.linalg.norm(y_centred)

    def rho(reordered: np.ndarray, axis: int = -1) -> np.ndarray:  # Pearson of the ranks, over many orderings at once
        return (reordered @ x_centred) / scale

    exact = stats.permutation_test(
        (y_centred,),
        rho,
        permutation_type="pairings",  # one sample: every ordering of y against x
        n_resamples=np.inf,  # all of them: exact
        vectorized=True,
        alternative="two-sided",
    )
    return float(result.statistic), float(exact.pvalue)


def condition_label(kind: str, errors: str) -> str:
    return "no_normalization" if kind == "none" else f"{kind}/{errors}"


def _true_speed(waking: xr.Dataset, dt_s: float) -> tuple[np.ndarray, str]:
    """Speed (trial, time-1) from the true states: m/s for positions, rad/s for headings."""
    if "true_position" in waking:
        step = np.diff(waking["true_position"].values, axis=1)
        return np.linalg.norm(step, axis=-1) / dt_s, "m/s"
    heading = waking["true_heading"].values
    step = np.angle(np.exp(1j * np.diff(heading, axis=1)))
    return np.abs(step) / dt_s, "rad/s"


def speed_decodability(waking: xr.Dataset, dt_s: float, ridge: float = 1e-3) -> float:
    """Cross-validated R^2 (two folds over trials) of a ridge-regression readout of speed from the hidden rates."""
    rates = waking["rates"].values[:, 1:, :]  # (rate_trial, time-1, unit)
    speed, _ = _true_speed(waking, dt_s)
    speed = speed[: rates.shape[0]]
    n_trials = rates.shape[0]
    if n_trials < 2:
        return float("nan")
    folds = [np.arange(n_trials) % 2 == k for k in (0, 1)]
    residual, total = 0.0, 0.0
    for test in folds:
        train = ~test
        x_train = rates[train].reshape(-1, rates.shape[-1])
        y_train = speed[train].ravel()
        x_mean, y_mean = x_train.mean(0), y_train.mean()
        xc = x_train - x_mean
        weights = np.linalg.solve(xc.T @ xc + ridge * len(y_train) * np.eye(xc.shape[1]), xc.T @ (y_train - y_mean))
        x_test = rates[test].reshape(-1, rates.shape[-1])
        y_test = speed[test].ravel()
        prediction = (x_test - x_mean) @ weights + y_mean
        residual += float(((y_test - prediction) ** 2).sum())
        total += float(((y_test - y_test.mean()) ** 2).sum())
    return 1.0 - residual / total


def read_run(run_dir: Path) -> dict:
    """The facts of one run the experiment needs (from train.nc, waking.nc and the spec they carry)."""
    train = open_dataset(run_dir / "train.nc").squeeze(["circuit", "variant", "seed"], drop=True)
    waking = open_dataset(run_dir / "waking.nc").squeeze(["circuit", "variant", "seed"], drop=True)
    spec = spec_from_json(train.attrs["spec_json"])
    norm = spec.network.normalization
    error_name = "position_error" if "position_error" in waking else "heading_error"
    diverged = int(train.attrs.get("diverged", 0))
    return {
        "circuit": str(train.attrs["circuit"]),
        "condition": condition_label(norm.kind, norm.errors),
        "epsilon": float(spec.task.input_gain.epsilon),
        "seed": int(train.attrs["seed"]),
        "loss": train["loss"].values,
        "final_error": float("nan") if diverged else float(waking[error_name].mean()),
        "error_units": waking[error_name].attrs["units"],
        "diverged": diverged,
        "speed_r2": float("nan") if diverged else speed_decodability(waking, spec.task.dt_s),
        "spec_json": train.attrs["spec_json"],
    }


def summarize(run_dirs: Iterable[str | Path], out: str | Path) -> Path:
    """Write normalization.nc: learning curves, final error, divergence, speed decodability, and the statistics."""
    records = [read_run(Path(d)) for d in run_dirs]
    if not records:
        raise ValueError("no runs to summarize")
    circuits = sorted({r["circuit"] for r in records})
    conditions = sorted({r["condition"] for r in records})
    epsilons = sorted({r["epsilon"] for r in records})
    seeds = sorted({r["seed"] for r in records})
    steps = max(len(r["loss"]) for r in records)
    shape = (len(circuits), len(conditions), len(epsilons), len(seeds))
    final_error = np.full(shape, np.nan)
    diverged = np.full(shape, np.nan)
    speed_r2 = np.full(shape, np.nan)
    loss = np.full((*shape, steps), np.nan)
    units = {}
    for r in records:
        i = (circuits.index(r["circuit"]), conditions.index(r["condition"]), epsilons.index(r["epsilon"]),
             seeds.index(r["seed"]))
        final_error[i], diverged[i], speed_r2[i] = r["final_error"], r["diverged"], r["speed_r2"]
        loss[i][: len(r["loss"])] = r["loss"]
        units[r["circuit"]] = r["error_units"]
    area = np.nanmean(loss, axis=-1)

    dims = ("circuit", "condition", "epsilon", "seed")
    stat_dims = ("circuit", "condition", "epsilon")
    p_value = np.full(shape[:3], np.nan)
    median_gain = np.full(shape[:3], np.nan)
    if FORWARD_ONLY in conditions:
        forward = conditions.index(FORWARD_ONLY)
        for c in range(len(circuits)):
            for k, condition in enumerate(conditions):
                for e in range(len(epsilons)):
                    a = final_error[c, k, e][np.isfinite(final_error[c, k, e])]
                    b = final_error[c, forward, e][np.isfinite(final_error[c, forward, e])]
                    if k == forward or len(a) < 2 or len(b) < 2:
                        continue
                    p_value[c, k, e] = stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
                    median_gain[c, k, e] = np.median(b) - np.median(a)
    spearman_rho = np.full(shape[:2], np.nan)
    spearman_p = np.full(shape[:2], np.nan)
    if len(epsilons) > 2:
        for c in range(len(circuits)):
            for k in range(len(conditions)):
                finite = np.isfinite(median_gain[c, k])
                if finite.sum() > 2:
                    spearman_rho[c, k], spearman_p[c, k] = spearman_with_exact_p(
                        np.asarray(epsilons)[finite], median_gain[c, k][finite]
                    )

    error_units = ", ".join(f"{c}: {u}" for c, u in sorted(units.items()))
    ds = xr.Dataset(
        {
            "final_error": label(xr.DataArray(final_error, dims=dims), "held-out decoding error (mean)", error_units),
            "diverged": label(xr.DataArray(diverged, dims=dims), "run diverged (1) or not (0)", "1"),
            "speed_r2": label(xr.DataArray(speed_r2, dims=dims), "cross-validated R^2 of speed from rates", "1"),
            "loss": label(xr.DataArray(loss, dims=(*dims, "step")), "training loss", "1"),
            "loss_area": label(xr.DataArray(area, dims=dims), "mean training loss over steps (learning-curve area)", "1"),
            "p_vs_forward_only": label(
                xr.DataArray(p_value, dims=stat_dims),
                "two-sided Mann-Whitney p, final error vs forward-only normalization", "1"),
            "gain_vs_forward_only": label(
                xr.DataArray(median_gain, dims=stat_dims),
                "median final error of forward-only minus this condition (positive = better)", error_units),
            "diverged_fraction": label(xr.DataArray(np.nanmean(diverged, axis=-1), dims=stat_dims),
                                       "fraction of seeds that diverged", "1"),
            "gap_vs_epsilon_spearman": label(xr.DataArray(spearman_rho, dims=("circuit", "condition")),
                                             "Spearman rho of the gain over forward-only vs epsilon", "1"),
            "gap_vs_epsilon_p": label(xr.DataArray(spearman_p, dims=("circuit", "condition")),
                                      "p-value of that Spearman correlation", "1"),
        },
        coords={
            "circuit": label(xr.DataArray(circuits, dims="circuit"), "circuit", "1"),
            "condition": label(xr.DataArray(conditions, dims="condition"),
                               "inhibitory normalization / error normalization", "1"),
            "epsilon": label(xr.DataArray(epsilons, dims="epsilon"), "input-gain spread: g ~ U(1-eps, 1+eps)", "1"),
            "seed": label(xr.DataArray(seeds, dims="seed"), "seed", "1"),
            "step": label(xr.DataArray(np.arange(1, steps + 1), dims="step"), "optimizer step", "1"),
        },
        attrs={
            **provenance(None, circuit=",".join(circuits), variant="normalization", seed=-1, device="cpu"),
            "specs_json": json.dumps([json.loads(r["spec_json"]) for r in records]),
            "comparison": f"each condition vs {FORWARD_ONLY} (forward-only inhibitory normalization)",
        },
    )
    return save_dataset(ds, out)


def table(ds: xr.Dataset) -> str:
    """A plain-text table of median final error, p-value vs forward-only and divergences, per circuit and epsilon,
    and the Spearman correlation of each condition's gain over forward-only with epsilon."""
    lines = []
    for circuit in ds.circuit.values:
        sub = ds.sel(circuit=circuit)
        lines.append(f"{circuit} (final error, {sub.final_error.attrs['units']})")
        lines.append(
            f"  {'condition':<22}" + "".join(f"  eps={e:<20.2f}" for e in ds.epsilon.values) + "  gain vs eps"
        )
        for condition in ds.condition.values:
            cells = []
            for e in ds.epsilon.values:
                values = sub.final_error.sel(condition=condition, epsilon=e).values
                p = float(sub.p_vs_forward_only.sel(condition=condition, epsilon=e))
                n_div = int(np.nansum(sub.diverged.sel(condition=condition, epsilon=e)))
                median = np.nanmedian(values) if np.isfinite(values).any() else math.nan
                p_text = "   --   " if math.isnan(p) else "p<0.001" if p < 0.001 else f"p={p:.3f}"
                cells.append(f"  {median:7.2f} {p_text} div={n_div:<2}")
            rho = float(sub.gap_vs_epsilon_spearman.sel(condition=condition))
            if math.isfinite(rho):
                cells.append(f"  rho {rho:+.2f} (p {float(sub.gap_vs_epsilon_p.sel(condition=condition)):.2g})")
            lines.append(f"  {condition:<22}" + "".join(cells))
    return "\n".join(lines)


def make_normalization_figures(summary_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Learning curves (largest epsilon) and final error vs epsilon per condition, with p-values vs forward-only."""
    import matplotlib.pyplot as plt

    from recircuit.figures import save_figure

    ds = open_dataset(Path(summary_dir) / "normalization.nc")
    circuits = list(ds.circuit.values)
    fig, axes = plt.subplots(2, len(circuits), figsize=(4.6 * len(circuits), 7), squeeze=False)
    largest = float(ds.epsilon.max())
    for col, circuit in enumerate(circuits):
        sub = ds.sel(circuit=circuit)
        for condition in sub.condition.values:
            curve = sub.loss.sel(condition=condition, epsilon=largest)
            if not np.isfinite(curve).any():
                continue
            median = curve.median("seed", skipna=True)
            (line,) = axes[0, col].plot(sub.step, median, lw=1, label=condition)
            axes[0, col].fill_between(sub.step, curve.quantile(0.25, "seed", skipna=True),
                                      curve.quantile(0.75, "seed", skipna=True), color=line.get_color(), alpha=0.2, lw=0)
            errors = sub.final_error.sel(condition=condition)
            med = errors.median("seed", skipna=True)
            low, high = errors.quantile(0.25, "seed", skipna=True), errors.quantile(0.75, "seed", skipna=True)
            diverged = int(np.nansum(sub.diverged.sel(condition=condition)))
            axes[1, col].errorbar(sub.epsilon, med, yerr=[med - low, high - med], marker="o", ms=3, capsize=2,
                                  color=line.get_color(), label=f"{condition} (diverged {diverged})")
            for e, p, m in zip(sub.epsilon.values, sub.p_vs_forward_only.sel(condition=condition).values, med.values):
                if np.isfinite(p):
                    axes[1, col].annotate(f"p={p:.2g}", (e, m), fontsize=6, xytext=(3, 3), textcoords="offset points")
        axes[0, col].set(title=f"{circuit.replace('_', ' ')}: epsilon = {largest:g}", yscale="log",
                         xlabel="optimizer step", ylabel="training loss (median, IQR over seeds)")
        axes[1, col].set(xlabel="input-gain spread epsilon", ylabel=f"final decoding error ({sub.final_error.attrs['units']})")
        axes[0, col].legend(frameon=False, fontsize=7)
        axes[1, col].legend(frameon=False, fontsize=6)
    fig.suptitle("Inhibitory normalization of activity and errors (p: Mann-Whitney vs forward only)")
    return save_figure(fig, Path(out_dir), "normalization")

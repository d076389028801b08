"""Figures of offline reactivation, from the collected summary datasets only (never from models).

Inputs are reactivation.nc files combined over seeds (and circuits) with xr.combine_by_coords, dims
(circuit, variant, seed, quiescent, waking, ...), and optionally quiescence.nc combined the same way. Every
function writes PNG and PDF with matplotlib's Agg canvas (no pyplot state) and returns the paths it wrote.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from recircuit.analysis.reactivation import NETWORK_CONDITIONS, row_own_waking
from recircuit.analysis.reactivation_report import SIGNIFICANCE
from recircuit.analysis.scaled_input import SIGNED_PART, TAIL_FRACTION, tail_mean
from recircuit.analysis.scaled_input import variable_names as scaled_input_names
from recircuit.figures import save_figure
from recircuit.results import open_dataset
from recircuit.spec_sections.reactivation import ReactivationSpec

QUIESCENT_COLOUR = "tab:blue"
WAKING_COLOUR = "tab:orange"




def _selections(ds: xr.Dataset, required: str) -> Iterator[tuple[str, xr.Dataset]]:
    """(name, dataset with dims seed, quiescent, waking, ...) per circuit and variant that has ``required`` data."""
    if required not in ds:
        return
    circuits = ds["circuit"].values if "circuit" in ds.dims else [None]
    variants = ds["variant"].values if "variant" in ds.dims else [None]
    for circuit in circuits:
        for variant in variants:
            sel = {k: v for k, v in (("circuit", circuit), ("variant", variant)) if v is not None}
            sub = ds.sel(sel)
            if "seed" not in sub.dims:
                sub = sub.expand_dims(seed=[0])
            if not np.isfinite(sub[required].values).any():
                continue
            sub = _drop_empty(sub)
            name = "_".join(str(v) for v in (circuit, variant) if v is not None and str(v) != "all")
            yield name or "reactivation", sub


def _drop_empty(sub: xr.Dataset) -> xr.Dataset:
    """Drop quiescent rows and waking columns without any KL value (labels another circuit had)."""
    kl = sub["kl"]
    keep_q = np.isfinite(kl.values).any(axis=tuple(i for i, d in enumerate(kl.dims) if d != "quiescent"))
    keep_w = np.isfinite(kl.values).any(axis=tuple(i for i, d in enumerate(kl.dims) if d != "waking"))
    return sub.isel(quiescent=np.flatnonzero(keep_q), waking=np.flatnonzero(keep_w))


def _mean_sd(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD (ddof 1) over seeds, ignoring NaN; SD 0 where fewer than two seeds have a value."""
    values = da.transpose("seed", ...).values.astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        mean = np.nanmean(values, axis=0)
        sd = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    return mean, np.nan_to_num(sd)


# ---------------------------------------------------------------------------------------------------- occupancy
def occupancy_figures(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Waking occupancy (top row) beside quiescent decoded positions per condition (bottom row), mean over seeds."""
    paths: list[Path] = []
    for name, sub in _selections(ds, "occupancy"):
        waking, quiescent = list(sub["waking"].values), list(sub["quiescent"].values)
        cols = max(len(waking), len(quiescent))
        fig = Figure(figsize=(2.6 * cols, 5.4), layout="constrained")
        axes = fig.subplots(2, cols, squeeze=False)
        x, y = sub["x_bin"].values, sub["y_bin"].values
        step = x[1] - x[0] if len(x) > 1 else 1.0
        extent = (x[0] - step / 2, x[-1] + step / 2, y[0] - step / 2, y[-1] + step / 2)
        wake = sub["waking_occupancy"].mean("seed")
        quiet = sub["occupancy"].mean("seed")
        vmax = float(max(np.nanmax(wake.values), np.nanmax(quiet.values)))
        norm = PowerNorm(0.5, vmin=0.0, vmax=vmax)  # square-root scale: sparse occupancy stays visible
        image = None
        for j, ax in enumerate(axes[0]):
            if j >= len(waking):
                ax.set_axis_off()
                continue
            image = ax.imshow(
                wake.sel(waking=waking[j]).transpose("y_bin", "x_bin").values,
                origin="lower", extent=extent, norm=norm, cmap="viridis",
            )
            ax.set_title(f"awake: {waking[j]}", fontsize=9)
        kl = sub["kl"].mean("seed")
        for j, ax in enumerate(axes[1]):
            if j >= len(quiescent):
                ax.set_axis_off()
                continue
            q = quiescent[j]
            own = row_own_waking(sub, q)
            ax.imshow(
                quiet.sel(quiescent=q).transpose("y_bin", "x_bin").values,
                origin="lower", extent=extent, norm=norm, cmap="viridis",
            )
            ax.set_title(f"offline: {q}\nKL vs {own}: {float(kl.sel(quiescent=q, waking=own)):.2f} nat", fontsize=9)
        for ax in axes.flat:
            if ax.axison:
                ax.set_xlabel("x (m)")
                ax.set_ylabel("y (m)")
                ax.set_aspect("equal")
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of samples per bin (square-root scale)")
        fig.suptitle(f"{name}: decoded position, awake vs offline (mean over {sub.sizes['seed']} seeds)")
        paths += save_figure(fig, out_dir, f"reactivation_{name}_occupancy")
    return paths


# ------------------------------------------------------------------------------------------------------- KL matrix
def kl_matrix_figures(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Heatmap of KL(quiescent || waking), mean over seeds, annotated with mean (and SD over seeds)."""
    paths: list[Path] = []
    for name, sub in _selections(ds, "kl"):
        mean, sd = _mean_sd(sub["kl"].transpose("seed", "quiescent", "waking"))
        quiescent, waking = list(sub["quiescent"].values), list(sub["waking"].values)
        fig = Figure(figsize=(1.4 * len(waking) + 2.8, 0.55 * len(quiescent) + 1.8), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(mean, cmap="magma_r", aspect="auto")
        finite = mean[np.isfinite(mean)]
        threshold = 0.5 * (finite.min() + finite.max()) if finite.size else 0.0
        for i in range(len(quiescent)):
            for j in range(len(waking)):
                if not np.isfinite(mean[i, j]):
                    continue
                text = f"{mean[i, j]:.2f}" + (f"\n±{sd[i, j]:.2f}" if sub.sizes["seed"] > 1 else "")
                colour = "white" if mean[i, j] > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(len(waking)), waking, rotation=30, ha="right")
        ax.set_yticks(range(len(quiescent)), quiescent)
        ax.set_xlabel("waking distribution P (run)")
        ax.set_ylabel("quiescent distribution Q")
        fig.colorbar(image, ax=ax, label="KL(Q || P) (nat)")
        ax.set_title(f"{name}: KL(quiescent || waking), mean over {sub.sizes['seed']} seeds", fontsize=10)
        paths += save_figure(fig, out_dir, f"reactivation_{name}_kl")
    return paths


# -------------------------------------------------------------------------------------------- variance, step size
def _bars(ax, labels: list[str], values: np.ndarray, colours: list[str]) -> None:
    """Bars of the seed mean with SD error bars and one dot per seed; values (seed, bar)."""
    mean, sd = _mean_sd(xr.DataArray(values, dims=("seed", "bar")))
    positions = np.arange(len(labels))
    ax.bar(positions, mean, yerr=sd, color=colours, alpha=0.7, capsize=3)
    for s in range(values.shape[0]):
        ax.plot(positions, values[s], "k.", markersize=4)
    ax.set_xticks(positions, labels, rotation=35, ha="right")


def dynamics_figures(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Output variance after burn-in and mean step size per condition (bars: mean and SD over seeds), and where the
    summary has it the distance from the start over time against the distance between independent waking outputs."""
    paths: list[Path] = []
    for what, space_units, var_units in (("position", "m", "m²"), ("heading", "rad", "rad²")):
        paths += _dynamics(ds, out_dir, what, space_units, var_units)
    return paths


def _dynamics(ds: xr.Dataset, out_dir: Path, what: str, space_units: str, var_units: str) -> list[Path]:
    paths: list[Path] = []
    for name, sub in _selections(ds, f"{what}_variance"):
        quiescent, waking = list(sub["quiescent"].values), list(sub["waking"].values)
        with_distance = f"{what}_displacement_time_course" in sub and f"waking_{what}_pair_distance" in sub
        n_panels = 3 if with_distance else 2
        fig = Figure(figsize=(4 + 0.6 * (len(quiescent) + len(waking)) + 3.5 * (n_panels - 2), 3.8),
                     layout="constrained")
        ax_var, ax_step, *ax_distance = fig.subplots(1, n_panels)
        q_labels = [f"offline: {q}" for q in quiescent]
        w_labels = [f"awake: {w}" for w in waking]
        variance = sub[f"{what}_variance"].transpose("seed", "quiescent").values
        _bars(ax_var, q_labels, variance, [QUIESCENT_COLOUR] * len(q_labels))
        ax_var.set_ylabel(f"decoded {what} variance ({var_units})")
        ax_var.set_title("spread of each offline trajectory after burn-in", fontsize=9)
        steps = np.concatenate(
            [
                sub[f"{what}_step"].transpose("seed", "quiescent").values,
                sub[f"waking_{what}_step"].transpose("seed", "waking").values,
            ],
            axis=1,
        )
        _bars(ax_step, q_labels + w_labels, steps, [QUIESCENT_COLOUR] * len(q_labels) + [WAKING_COLOUR] * len(w_labels))
        ax_step.set_ylabel(f"mean step ({space_units} per time step)")
        ax_step.set_title("step of the decoded output, offline vs awake", fontsize=9)
        if with_distance:
            _distance_panel(ax_distance[0], sub, what, space_units)
        fig.suptitle(f"{name}: offline dynamics ({sub.sizes['seed']} seeds)")
        paths += save_figure(fig, out_dir, f"reactivation_{name}_dynamics")
    return paths


def _distance_panel(ax, sub: xr.Dataset, what: str, space_units: str) -> None:
    """Distance from the first offline step over time per condition (mean over seeds), and dashed, the distance
    between two independent outputs of each waking run: while a line stays well below the dashed ones, the offline
    trajectories have not forgotten their starts."""
    course = sub[f"{what}_displacement_time_course"]
    time_s = sub["offline_window"].values
    step_s = time_s[1] - time_s[0] if len(time_s) > 1 else 0.0
    colours = iter(["tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                    "tab:cyan"])  # not the waking colour
    for q in sub["quiescent"].values:
        mean = course.sel(quiescent=q).mean("seed").values
        if np.isfinite(mean).any():
            ax.plot(np.r_[0.0, time_s + step_s], np.r_[0.0, mean], color=next(colours, "k"), label=f"offline: {q}")
    pairs = sub[f"waking_{what}_pair_distance"].mean("seed")
    for style, w in zip(("--", ":", "-.") * len(pairs), pairs["waking"].values):
        ax.axhline(float(pairs.sel(waking=w)), color=WAKING_COLOUR, linestyle=style, linewidth=1,
                   label=f"two independent awake outputs: {w}")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time since input removal (s)")
    ax.set_ylabel(f"RMS distance from the first offline step ({space_units})")
    ax.set_title("how far offline trajectories get from their starts", fontsize=9)
    ax.legend(fontsize=6)


# ------------------------------------------------------------------------------------------------------- headings
def heading_figures(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Polar histograms of offline headings (bars) against the waking headings (line), mean over seeds."""
    paths: list[Path] = []
    for name, sub in _selections(ds, "heading_occupancy"):
        quiescent = list(sub["quiescent"].values)
        cols = min(len(quiescent), 3)
        rows = math.ceil(len(quiescent) / cols)
        fig = Figure(figsize=(3.3 * cols, 3.5 * rows), layout="constrained")
        centres = sub["heading_bin"].values
        width = centres[1] - centres[0] if len(centres) > 1 else 2 * math.pi
        quiet = sub["heading_occupancy"].mean("seed")
        wake = sub["waking_heading_occupancy"].mean("seed")
        velocity = sub["angular_velocity"].transpose("seed", "quiescent").values
        # seeds settle on different headings, so the mean histogram can look flat where no single seed is
        uniform_p = sub["heading_uniformity_p"].transpose("seed", "quiescent").values if (
            "heading_uniformity_p" in sub) else None
        for i, q in enumerate(quiescent):
            ax = fig.add_subplot(rows, cols, i + 1, projection="polar")
            own = row_own_waking(sub, q)
            offline = quiet.sel(quiescent=q).values
            ax.bar(centres, offline, width=width, color=QUIESCENT_COLOUR, alpha=0.6, label="offline")
            closed = np.append(centres, centres[0])
            ax.plot(closed, np.append(wake.sel(waking=own).values, wake.sel(waking=own).values[0]),
                    color=WAKING_COLOUR, label=f"awake ({own})")
            omega = velocity[:, i]
            spread = f" ± {np.nanstd(omega, ddof=1):.2f}" if np.isfinite(omega).sum() > 1 else ""
            title = f"offline: {q}\nmean angular velocity {np.nanmean(omega):+.2f}{spread} rad/s"
            if uniform_p is not None and np.isfinite(uniform_p[:, i]).any():
                p_q = uniform_p[:, i][np.isfinite(uniform_p[:, i])]
                uniform_seeds = int((p_q > SIGNIFICANCE).sum())
                title += f"\nuniform (Rayleigh p > {SIGNIFICANCE:g}) in {uniform_seeds}/{len(p_q)} seeds"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("heading (deg); radius: fraction of samples per bin", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.yaxis.set_major_locator(MaxNLocator(3))
            ax.set_rlabel_position(200)
            if i == 0:
                fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
        fig.suptitle(f"{name}: decoded heading, offline vs awake ({sub.sizes['seed']} seeds)")
        paths += save_figure(fig, out_dir, f"reactivation_{name}_headings")
    return paths


def drift_figures(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """The ring's offline drift field (mean angular velocity by heading), one panel per network condition, one line
    per seed: a flat ring drifts at zero everywhere; attracting headings are downward zero crossings."""
    paths: list[Path] = []
    for name, sub in _selections(ds, "heading_drift"):
        panels = _seed_lines_per_condition(sub, "heading_drift", "heading_bin", np.degrees(sub["heading_bin"].values))
        if panels is None:
            continue
        fig, axes = panels
        for ax in axes:
            _label_axes(ax, "heading (deg)", "drift (rad/s)")
        axes[0].legend(fontsize=6)
        fig.suptitle(f"{name}: drift field of the ring offline (mean angular velocity by heading)")
        paths += save_figure(fig, out_dir, f"reactivation_{name}_drift")
    return paths


def radial_figures(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Where the offline flow of a path integrator goes, by where it starts: mean outward displacement from the
    first offline step to the end of the distribution window, by the start's distance from the centre, one panel
    per network condition, one line per seed; 0 (stayed) and minus the distance (forgot the start) are drawn."""
    paths: list[Path] = []
    for name, sub in _selections(ds, "radial_displacement"):
        radius = sub["radius_bin"].values
        panels = _seed_lines_per_condition(sub, "radial_displacement", "radius_bin", radius, marker=".")
        if panels is None:
            continue
        fig, axes = panels
        for ax in axes:
            ax.plot(radius, -radius, color="0.5", linewidth=0.8, linestyle="--", label="forgot the start")
            _label_axes(ax, "start's distance from centre (m)", "outward displacement (m)")
        axes[0].legend(fontsize=6)
        end = str(sub.attrs.get("distribution_window_steps", "")).rpartition("-")[2] or "the window's end"
        fig.suptitle(f"{name}: where the offline flow goes: displacement from the first offline step to step {end}")
        paths += save_figure(fig, out_dir, f"reactivation_{name}_radial_displacement")
    return paths


def _seed_lines_per_condition(
    sub: xr.Dataset, variable: str, dim: str, x: np.ndarray, marker: str | None = None
) -> tuple[Figure, np.ndarray] | None:
    """One panel per quiescent condition with any finite ``variable`` (dims seed, quiescent, ``dim``), one line per
    seed against x, and the zero line; None when no condition has a value."""
    values = sub[variable].transpose("seed", "quiescent", dim)
    quiescent = [q for q in sub["quiescent"].values if np.isfinite(values.sel(quiescent=q).values).any()]
    if not quiescent:
        return None
    fig, axes = _condition_panels(len(quiescent))
    for ax, q in zip(axes, quiescent):
        for seed in values["seed"].values:
            ax.plot(x, values.sel(quiescent=q, seed=seed).values, linewidth=1, marker=marker, label=f"seed {seed}")
        ax.axhline(0.0, color="k", linewidth=0.6)
        ax.set_title(f"offline: {q}", fontsize=9)
    return fig, axes


def _condition_panels(n: int) -> tuple[Figure, np.ndarray]:
    """A figure with n panels, at most 3 per row, sharing x; the unused ones hidden."""
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, squeeze=False)).reshape(-1)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _label_axes(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def scaled_input_figures(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """The scaled-input test: decoding error (top) and its signed part (bottom: outward, or counter-clockwise) at
    the end of awake trials whose self-motion input is scaled by each factor, one panel per run, one line per seed.
    A circuit that integrates slow motion as well as waking motion draws flat lines; one that drifts when its input
    stops draws a rising error toward factor 0."""
    paths: list[Path] = []
    for kind in ("path_integration", "head_direction"):
        paths += _scaled_input_figures(ds, out_dir, kind)
    return paths


def _scaled_input_figures(ds: xr.Dataset, out_dir: Path, kind: str) -> list[Path]:
    error_name, bias_name = scaled_input_names(kind)
    signed = SIGNED_PART[kind]
    paths: list[Path] = []
    for name, sub in _selections(ds, error_name):
        error = tail_mean(sub[error_name]).transpose("seed", "waking", "input_scale")
        bias = tail_mean(sub[bias_name]).transpose("seed", "waking", "input_scale")
        runs = [w for w in sub["waking"].values if np.isfinite(error.sel(waking=w).values).any()]
        scales = sub["input_scale"].values.astype(float)
        keep = np.isfinite(error.values).any(axis=(0, 1))  # factors of this circuit (a summary joins every circuit's)
        error, bias, scales = error.isel(input_scale=keep), bias.isel(input_scale=keep), scales[keep]
        positive = scales[scales > 0]
        units = sub[error_name].attrs.get("units", "")
        fig = Figure(figsize=(3.4 * len(runs), 5.0), layout="constrained")
        axes = np.atleast_2d(fig.subplots(2, len(runs), sharex=True, squeeze=False))
        for column, run in enumerate(runs):
            for row, (values, ylabel) in enumerate(((error, f"error ({units})"), (bias, f"{signed} error ({units})"))):
                ax = axes[row, column]
                for seed in values["seed"].values:
                    ax.plot(scales, values.sel(waking=run, seed=seed).values, marker=".", linewidth=1,
                            label=f"seed {seed}")
                ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
                ax.set_xticks(scales, [f"{f:g}" for f in scales])
                ax.xaxis.set_minor_locator(NullLocator())
                if row == 1:
                    ax.axhline(0.0, color="k", linewidth=0.6)
                _label_axes(ax, "factor on the self-motion input" if row == 1 else "", ylabel)
            axes[0, column].set_title(f"awake: {run}", fontsize=9)
        axes[0, 0].legend(fontsize=6)
        seconds = float(sub[error_name].dropna("scaled_input_time", how="all")["scaled_input_time"].values[-1])
        fig.suptitle(f"{name}: self-motion input scaled toward zero, training noise on "
                     f"(mean over the last {TAIL_FRACTION:.0%} of {seconds:g} s)")
        paths += save_figure(fig, out_dir, f"reactivation_{name}_scaled_input")
    return paths


# ------------------------------------------------------------------------------------------------- time course
def time_course_figures(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Coverage of waking-visited bins (and for headings the mean resultant length) in windows of offline time from
    input removal, one line per quiescent condition (mean over seeds, band: SD), the distribution metrics' window
    shaded and the start of the output variance's window dotted."""
    paths: list[Path] = []
    for name, sub in _selections(ds, "coverage_time_course"):
        panels = [("coverage_time_course", "coverage of waking-visited bins")]
        if "mean_resultant_length_time_course" in sub:
            panels.append(("mean_resultant_length_time_course", "mean resultant length (0: uniform ring)"))
        fig = Figure(figsize=(5.2 * len(panels), 3.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        window_s = float(np.diff(sub["offline_window"].values[:2])[0]) if sub.sizes["offline_window"] > 1 else 0.0
        time = sub["offline_window"].values + window_s / 2
        windows = _window_seconds(sub)
        for ax, (var, ylabel) in zip(axes, panels):
            for q in sub["quiescent"].values:
                mean, sd = _mean_sd(sub[var].sel(quiescent=q))
                if not np.isfinite(mean).any():
                    continue
                (line,) = ax.plot(time, mean, marker=".", label=str(q))
                band = np.clip([mean - sd, mean + sd], 0, 1)  # both measures lie in [0, 1]
                ax.fill_between(time, *band, color=line.get_color(), alpha=0.2, linewidth=0)
            if windows is not None:
                (start_s, end_s), variance_s = windows
                ax.axvspan(start_s, end_s, color="0.85", zorder=0, label="KL, coverage window")
                ax.axvline(variance_s, color="k", linestyle=":", linewidth=0.8, label="variance from here")
            ax.set_xlabel("time since input removal (s), window centre")
            ax.set_ylabel(ylabel)
            ax.set_ylim(0, 1.02)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{name}: offline time course ({sub.sizes['seed']} seeds)")
        paths += save_figure(fig, out_dir, f"reactivation_{name}_time_course")
    return paths


def _window_seconds(sub: xr.Dataset) -> tuple[tuple[float, float], float] | None:
    """((start, end) of the distribution metrics' window, start of the variance's window), s since input removal,
    from the dataset's reactivation settings and dt, if it records them."""
    settings, dt = sub.attrs.get("reactivation_json"), sub.attrs.get("dt_s")
    if settings is None or dt is None:
        return None
    rs = ReactivationSpec.model_validate_json(settings)
    distribution, variance = rs.distribution_window(), rs.variance_window()
    end = rs.duration_steps if distribution.stop is None else distribution.stop
    return (distribution.start * float(dt), end * float(dt)), variance.start * float(dt)


# -------------------------------------------------------------------------------------------------- trajectories
def trajectory_figures(quiescence: xr.Dataset, out_dir: Path, n_trials: int = 3, n_steps: int = 300) -> list[Path]:
    """A few offline decoded trajectories (first seed) per variant and network condition, from quiescence.nc."""
    paths: list[Path] = []
    circuits = quiescence["circuit"].values if "circuit" in quiescence.dims else [None]
    for circuit in circuits:
        sub = quiescence.sel(circuit=circuit) if circuit is not None else quiescence
        if "seed" in sub.dims:
            sub = sub.isel(seed=0)
        present = [v for v in ("decoded_position", "decoded_heading") if v in sub and np.isfinite(sub[v].values).any()]
        if not present:
            continue
        var = present[0]
        circular = var == "decoded_heading"
        variants = list(sub["variant"].values) if "variant" in sub.dims else [None]
        conditions = [c for c in NETWORK_CONDITIONS if c in sub["condition"].values]
        fig = Figure(figsize=(3 * len(conditions), 3 * len(variants)), layout="constrained")
        axes = fig.subplots(len(variants), len(conditions), squeeze=False)
        drew = False
        for i, variant in enumerate(variants):
            v = sub.sel(variant=variant) if variant is not None else sub
            for j, condition in enumerate(conditions):
                ax = axes[i, j]
                data = v[var].sel(condition=condition).isel(trial=slice(0, n_trials), time=slice(0, n_steps))
                if not np.isfinite(data.values).any():
                    ax.set_axis_off()
                    continue
                drew = True
                for t in range(data.sizes["trial"]):
                    if circular:
                        ax.plot(data["time"].values, data.isel(trial=t).values, ".", markersize=1.5)
                    else:
                        path = data.isel(trial=t)  # markers show a path that stopped at a fixed point
                        ax.plot(path.sel(space="x"), path.sel(space="y"), lw=0.7, marker=".", markersize=2)
                if circular:
                    ax.set_xlabel("time since input removal (s)")
                    ax.set_ylabel("decoded heading (rad)")
                    ax.set_ylim(-math.pi, math.pi)
                else:
                    half = float(quiescence.attrs.get("arena_m", 2.2)) / 2
                    ax.set_xlim(-half, half)
                    ax.set_ylim(-half, half)
                    ax.set_aspect("equal")
                    ax.set_xlabel("x (m)")
                    ax.set_ylabel("y (m)")
                ax.set_title(f"{variant}: {condition}", fontsize=9)
        if not drew:
            continue
        fig.suptitle(f"{circuit}: offline decoded trajectories (first {n_steps} steps after burn-in, seed 0 of sweep)")
        paths += save_figure(fig, out_dir, f"reactivation_{circuit}_trajectories")
    return paths


def make_reactivation_figures(summary_dir: Path, out_dir: Path) -> list[Path]:
    """Every reactivation figure from ``summary_dir/*reactivation*.nc`` (and ``*quiescence*.nc`` if present)."""
    summary_dir, out_dir = Path(summary_dir), Path(out_dir)
    files = sorted(summary_dir.glob("*reactivation*.nc"))
    if not files:
        raise FileNotFoundError(f"no reactivation summary (*reactivation*.nc) in {summary_dir}")
    paths: list[Path] = []
    for path in files:
        ds = open_dataset(path)
        for make in (occupancy_figures, kl_matrix_figures, dynamics_figures, heading_figures, drift_figures,
                     radial_figures, scaled_input_figures, time_course_figures):
            paths += make(ds, out_dir)
    for path in sorted(summary_dir.glob("*quiescence*.nc")):
        paths += trajectory_figures(open_dataset(path), out_dir)
    return paths

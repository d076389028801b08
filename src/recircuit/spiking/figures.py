"""Figures of the spiking twin, from collected spiking.nc datasets only (never from models or Brian2).

Input: ``summary_dir/spiking.nc``, the per-job spiking.nc files combined over circuit/variant/seed
(`recircuit collect` / xr.combine_by_coords). Per circuit and variant (first seed present): a raster (E, I and the
normalization interneurons I_norm of subtractive normalization coloured), rate vs spiking activity of example
units, the decoded trajectory from spikes vs the true one, and the offline decoded states from spikes. Across the
sweep: the agreement summary and the f-I calibration. Every figure is written as PNG and PDF with matplotlib's Agg
canvas (no pyplot state).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from recircuit.figures import save_figure
from recircuit.results import open_dataset

SPIKING_SUMMARY = "spiking.nc"
E_COLOUR, I_COLOUR, NORM_COLOUR = "tab:blue", "tab:red", "tab:orange"
POPULATION_COLOURS = {"E": E_COLOUR, "I": I_COLOUR, "I_norm": NORM_COLOUR}  # 'unconstrained' units: E_COLOUR
POPULATION_LEGEND = {"E": "E", "I": "I", "I_norm": "I_norm (normalization interneurons)"}
SPIKE_COLOUR, RATE_COLOUR, TRUE_COLOUR = "tab:purple", "black", "tab:green"
N_EXAMPLE_UNITS = 4


def _runs(ds: xr.Dataset) -> Iterator[tuple[str, xr.Dataset]]:
    """(name, one run) per circuit and variant with data: the first seed whose spiking error is finite."""
    for circuit in ds["circuit"].values:
        for variant in ds["variant"].values:
            sub = ds.sel(circuit=circuit, variant=variant)
            for seed in sub["seed"].values:
                run = sub.sel(seed=seed)
                finite = [
                    np.isfinite(run[v].values).any()
                    for v in ("spiking_position_error", "spiking_heading_error")
                    if v in run
                ]
                if any(finite):
                    yield f"{circuit}_{variant}_seed{seed}", _trim(run)
                    break


def _kind(run: xr.Dataset) -> str:
    if "spiking_position_error" in run and np.isfinite(run["spiking_position_error"].values).any():
        return "path_integration"
    return "head_direction"


def _trim(run: xr.Dataset) -> xr.Dataset:
    """Drop the NaN padding a combine over circuits of other sizes added (units, times, spikes)."""
    keep = {}
    if "unit_rate" in run:
        keep["unit"] = np.flatnonzero(np.isfinite(run["unit_rate"].isel(protocol=0).values))
    for dim, var in (("task_spike", "task_spike_time"), ("quiet_spike", "quiet_spike_time")):
        if var in run:
            keep[dim] = np.flatnonzero(np.isfinite(run[var].values))
    if "spiking_rate" in run:
        keep["time"] = np.flatnonzero(np.isfinite(run["spiking_rate"].isel(trial=0, unit=0).values))
    return run.isel(keep)


def _population_colour(run: xr.Dataset, units: np.ndarray) -> list[str]:
    population = run["population"].values
    return [POPULATION_COLOURS.get(str(population[int(u)]), E_COLOUR) for u in units]


def raster(run: xr.Dataset, name: str, out_dir: Path) -> list[Path]:
    """Task trial 0 and the first quiescent seconds: one dot per spike, E blue, I red, I_norm orange."""
    has_quiet = "quiet_spike_time" in run and run["quiet_spike_time"].size > 0
    fig = Figure(figsize=(9, 3.2 * (2 if has_quiet else 1)))
    axes = fig.subplots(2 if has_quiet else 1, 1, squeeze=False)[:, 0]
    panels = [("task", "task trial 0")] + ([("quiet", "quiescence (no input), trial 0")] if has_quiet else [])
    for ax, (prefix, title) in zip(axes, panels):
        trial = run[f"{prefix}_spike_trial"].values
        keep = trial == 0
        times = run[f"{prefix}_spike_time"].values[keep]
        units = run[f"{prefix}_spike_unit"].values[keep].astype(int)
        if prefix == "quiet":
            window = float(run["time"].values[-1])  # as long as a task trial
            keep = times <= window
            times, units = times[keep], units[keep]
        # rasterized: tens of thousands of ticks drawn as vectors make a slow, heavy PDF
        ax.scatter(times, units, s=0.6, c=_population_colour(run, units), marker="|", linewidths=0.5, rasterized=True)
        ax.set(xlabel="time (s)", ylabel="neuron", title=title, ylim=(-1, run.sizes["unit"]))
    present = {str(p) for p in run["population"].values}
    for population, text in POPULATION_LEGEND.items():
        if population in present or population == "E":  # E also stands for 'unconstrained' units
            axes[0].plot([], [], "|", color=POPULATION_COLOURS[population], label=text)
    axes[0].legend(loc="upper right", fontsize=7, frameon=False)
    fig.suptitle(f"Spiking twin raster: {name.replace('_', ' ')}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, f"spiking_raster_{name}")


def example_units(run: xr.Dataset, name: str, out_dir: Path) -> list[Path]:
    """lambda r (spiking) vs h (rate circuit, no recurrent noise) of the units with the most rate variance."""
    lam = float(run["lambda_s"])
    spiking = lam * run["spiking_rate"].isel(trial=0).values
    rate = run["rate_activity"].sel(rate_noise="none").isel(trial=0).values
    variance = run["rate_activity"].sel(rate_noise="none").var(("trial", "time")).values
    units = np.argsort(np.nan_to_num(variance, nan=-1.0))[::-1][:N_EXAMPLE_UNITS]
    time = run["time"].values
    fig = Figure(figsize=(9, 1.8 * len(units)))
    axes = fig.subplots(len(units), 1, sharex=True, squeeze=False)[:, 0]
    correlation = run["unit_correlation"].sel(rate_noise="none").values
    for ax, unit in zip(axes, units):
        ax.plot(time, rate[:, unit], color=RATE_COLOUR, lw=1.2, label="rate unit h")
        ax.plot(time, spiking[:, unit], color=SPIKE_COLOUR, lw=1.0, label="spiking lambda r")
        population = run["population"].values[unit]
        ax.set(ylabel="activity (1)", title=f"unit {unit} ({population}), r = {correlation[unit]:.2f}")
        ax.title.set_fontsize(8)
    axes[-1].set_xlabel("time since trial start (s)")
    axes[0].legend(loc="upper right", fontsize=7, frameon=False)
    fig.suptitle(f"Rate vs spiking activity, trial 0: {name.replace('_', ' ')}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, f"spiking_units_{name}")


def decoded_trajectory(run: xr.Dataset, name: str, out_dir: Path) -> list[Path]:
    """Trial 0: true path, decoded from spikes, decoded from the rate circuit."""
    kind = _kind(run)
    fig = Figure(figsize=(4.6, 4.4) if kind == "path_integration" else (8, 3.2))
    ax = fig.subplots()
    if kind == "path_integration":
        true = run["true_position"].isel(trial=0).values
        spk = run["spiking_decoded_position"].isel(trial=0).values
        rate = run["rate_decoded_position"].sel(rate_noise="evaluation").isel(trial=0).values
        ax.plot(true[:, 0], true[:, 1], color=TRUE_COLOUR, lw=1.5, label="true")
        ax.plot(rate[:, 0], rate[:, 1], color=RATE_COLOUR, lw=0.9, ls="--", label="rate circuit")
        ax.plot(spk[:, 0], spk[:, 1], color=SPIKE_COLOUR, lw=0.9, label="spiking twin")
        ax.set(xlabel="x (m)", ylabel="y (m)", aspect="equal")
    else:
        time = run["time"].values
        ax.plot(time, np.rad2deg(run["true_heading"].isel(trial=0)), color=TRUE_COLOUR, lw=1.5, label="true")
        ax.plot(
            time,
            np.rad2deg(run["rate_decoded_heading"].sel(rate_noise="evaluation").isel(trial=0)),
            ".",
            color=RATE_COLOUR,
            ms=3,
            label="rate circuit",
        )
        spk = np.rad2deg(run["spiking_decoded_heading"].isel(trial=0))
        ax.plot(time, spk, ".", color=SPIKE_COLOUR, ms=3, label="spiking twin")
        ax.set(xlabel="time since trial start (s)", ylabel="heading (deg)", ylim=(-180, 180))
    ratio = float(run["error_ratio"].sel(rate_noise="evaluation"))
    ax.set_title(f"{name.replace('_', ' ')}\nerror spiking / rate = {ratio:.2f} (all trials)", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_dir, f"spiking_decoded_{name}")


def offline_states(run: xr.Dataset, name: str, out_dir: Path) -> list[Path]:
    """Offline decoded states from spikes during quiescence (after the burn-in) against the rate circuit's own, and
    (when stored) the rate circuit's with the twin's noise level."""
    kind = _kind(run)
    burn_in = int(run.attrs.get("quiet_burn_in_steps", 0))
    what = "position" if kind == "path_integration" else "heading"
    sources = [
        (run[f"quiet_decoded_{what}"].isel(quiet_time=slice(burn_in, None)), "spiking twin", run["kl_offline"]),
        (run[f"quiet_rate_decoded_{what}"], "rate circuit", run["kl_offline_rate"]),
    ]
    if f"quiet_matched_decoded_{what}" in run:
        matched, kl = run[f"quiet_matched_decoded_{what}"], run["kl_offline_rate_matched"]
        sources += [
            (matched.sel(rate_map="own"), "rate circuit, twin's noise", kl.sel(rate_map="own")),
            (matched.sel(rate_map="twin_fi"), "twin's f-I curve, twin's noise", kl.sel(rate_map="twin_fi")),
        ]
    fig = Figure(figsize=(4.0 * len(sources), 4.2))
    axes = fig.subplots(1, len(sources))
    bins = np.linspace(-180, 180, 37)
    for i, (ax, (states, title, kl_value)) in enumerate(zip(axes, sources)):
        title = f"offline, {title}\nKL {float(kl_value):.2f} nat"
        if kind == "path_integration":
            values = states.values
            for trial in range(values.shape[0]):
                ax.plot(values[trial, :, 0], values[trial, :, 1], lw=0.5, alpha=0.7)
            ax.set(xlabel="x (m)", ylabel="y (m)", aspect="equal")
        else:
            values = np.rad2deg(states.values.ravel())
            colour = SPIKE_COLOUR if i == 0 else RATE_COLOUR
            ax.hist(values[np.isfinite(values)], bins=bins, density=True, color=colour)
            ax.set(xlabel="heading (deg)", ylabel="density (1/deg)")
        ax.set_title(title, fontsize=9)
    noise = ""
    if "median_twin_noise_sd" in run:
        noise = f"; the twin's own noise {float(run['median_twin_noise_sd']):.3g} per sqrt(tau)"
    fig.suptitle(f"{name.replace('_', ' ')}: KL(offline || rate waking){noise}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, f"spiking_offline_{name}")


def agreement_summary(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Error ratio, median unit correlation and offline KL of every run (one dot per seed)."""
    rows = [(c, v) for c in ds["circuit"].values for v in ds["variant"].values]
    rows = [(c, v) for c, v in rows if np.isfinite(ds["error_ratio"].sel(circuit=c, variant=v).values).any()]
    fig = Figure(figsize=(11, 0.5 * len(rows) + 2.0))
    axes = fig.subplots(1, 3, sharey=True)
    y = np.arange(len(rows))
    for i, (circuit, variant) in enumerate(rows):
        run = ds.sel(circuit=circuit, variant=variant)
        ratio = run["error_ratio"].sel(rate_noise="evaluation").values
        corr = run["median_unit_correlation"].sel(rate_noise="evaluation").values
        axes[0].plot(ratio, np.full(ratio.shape, i), "o", color=SPIKE_COLOUR, ms=4)
        axes[1].plot(corr, np.full(corr.shape, i), "o", color=SPIKE_COLOUR, ms=4)
        if "kl_offline" in run:
            axes[2].plot(run["kl_offline"].values, np.full(ratio.shape, i), "o", color=SPIKE_COLOUR, ms=4)
            kl_rate = run["kl_offline_rate"].values
            axes[2].plot(kl_rate, np.full(ratio.shape, i), "s", color=RATE_COLOUR, ms=4, mfc="none")
            if "kl_offline_rate_matched" in run:
                lif = run["kl_offline_rate_matched"].sel(rate_map="twin_fi").values
                axes[2].plot(lif, np.full(ratio.shape, i), "^", color=SPIKE_COLOUR, ms=4, mfc="none")
    axes[0].axvline(1.0, color="grey", lw=0.8)
    axes[0].axvline(1.5, color="grey", lw=0.8, ls=":")
    axes[1].axvline(0.8, color="grey", lw=0.8, ls=":")
    axes[0].set(xlabel="decoding error spiking / rate (1)", yticks=y, yticklabels=[f"{c} / {v}" for c, v in rows])
    axes[1].set(xlabel="median unit correlation (1)")
    axes[2].set(xlabel="KL(offline || rate waking) (nat)")
    axes[2].plot([], [], "o", color=SPIKE_COLOUR, label="spiking twin")
    axes[2].plot([], [], "s", color=RATE_COLOUR, mfc="none", label="rate circuit")
    if "kl_offline_rate_matched" in ds:
        axes[2].plot([], [], "^", color=SPIKE_COLOUR, mfc="none", label="LIF f-I curve + twin's noise (no spikes)")
    axes[2].legend(fontsize=7, frameon=False)
    fig.suptitle("Spiking twin vs rate circuit (held-out trials; quiescence from the same starts)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, "spiking_agreement")


def fi_curves(ds: xr.Dataset, out_dir: Path) -> list[Path]:
    """Lone-neuron rate vs constant current per run: simulated, target phi/lambda, predicted for the calibrated
    neuron (top); below, simulated and predicted minus target in % of the max rate, where a time-step bias shows."""
    runs = list(_runs(ds))
    fig = Figure(figsize=(3.6 * len(runs), 5.4))
    axes = fig.subplots(2, len(runs), squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 2]})
    for (ax, low), (name, run) in zip(axes.T, runs):
        current = run["fi_current"].values
        keep = np.isfinite(run["fi_rate_measured"].values)
        order = np.argsort(current[keep])
        x = current[keep][order]
        target, predicted, measured = (
            run[var].values[keep][order] for var in ("fi_rate_target", "fi_rate_predicted", "fi_rate_measured")
        )
        ax.plot(x, target, color=RATE_COLOUR, lw=1.2, label="phi / lambda")
        ax.plot(x, predicted, color="grey", lw=1.0, ls="--", label="predicted")
        ax.plot(x, measured, ".", color=SPIKE_COLOUR, ms=3, label="simulated")
        ax.set(ylabel="firing rate (Hz)")
        ax.set_title(f"{name.replace('_', ' ')}\nRMS {100 * float(run['fi_rms']):.1f}% of max", fontsize=8)
        percent = 100.0 * float(run["lambda_s"])
        low.axhline(0.0, color=RATE_COLOUR, lw=0.8)
        low.plot(x, percent * (predicted - target), color="grey", lw=1.0, ls="--")
        low.plot(x, percent * (measured - target), ".", color=SPIKE_COLOUR, ms=3)
        low.set(xlabel="rate-model current x (1)", ylabel="minus target (% of max)")
    axes[0, 0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_dir, "spiking_fi_curves")


def make_spiking_figures(summary_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Every spiking figure from ``summary_dir``/spiking.nc; returns the files written (PNG and PDF)."""
    summary_dir, out_dir = Path(summary_dir), Path(out_dir)
    ds = open_dataset(summary_dir / SPIKING_SUMMARY)
    for dim in ("circuit", "variant", "seed"):
        if dim not in ds.dims:
            raise ValueError(f"{summary_dir / SPIKING_SUMMARY}: no {dim!r} dimension (not a collected spiking.nc?)")
    paths: list[Path] = []
    for name, run in _runs(ds):
        paths += raster(run, name, out_dir)
        paths += example_units(run, name, out_dir)
        paths += decoded_trajectory(run, name, out_dir)
        if "kl_offline" in run and np.isfinite(float(run["kl_offline"])):
            paths += offline_states(run, name, out_dir)
    paths += agreement_summary(ds, out_dir)
    paths += fi_curves(ds, out_dir)
    return paths

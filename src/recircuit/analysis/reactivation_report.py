"""The reactivation issue's claims, checked seed by seed on a reactivation summary (results/summary/reactivation.nc).

Each check is an ordering or a threshold evaluated per circuit and seed; the report gives the values compared
(median over seeds) and in how many seeds the claim holds. Quiescent rows and waking columns are the variants of
the sweep (`noisy`, `noise_free`, `biased`, `biased_noise_free`, `unconstrained`, `unconstrained_noise_free`) plus
the controls `untrained`, `uniform`, `<variant>+offline_noise` and `<variant>+noise_off`; a check whose rows the
summary lacks is skipped. One check is the reactivation account's rather than the paper's: that the noisy circuit
offline is closer to its waking occupancy with its offline noise than without it (`noisy+noise_off`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from recircuit.analysis.reactivation import row_own_waking
from recircuit.analysis.scaled_input import tail_mean
from recircuit.analysis.scaled_input import variable_names as scaled_input_names
from recircuit.claims import claim_row, claims_table

MAX_RESULTANT_LENGTH = 0.1  # "near-uniform offline headings"
MIN_COVERAGE = 0.5  # "visit at least half of the bins visited awake"
MAX_NOISE_FREE_VARIANCE = {"path_integration": 1e-3, "head_direction": 1e-3}  # m^2 / rad^2: "near zero"
SIGNIFICANCE = 0.05  # sign test of the counter-clockwise drift, Rayleigh test of uniform headings, over trials


@dataclass(frozen=True)
class Check:
    """One claim per seed: ``value`` < ``reference`` (> when ``greater``); ``reference`` is per seed or a number."""

    claim: str
    variables: tuple[str, ...]  # dataset variables the claim reads
    quiescent: tuple[str, ...]  # quiescent rows the claim reads
    waking: tuple[str, ...]  # waking columns it reads
    value: Callable[[xr.Dataset], xr.DataArray]
    reference: Callable[[xr.Dataset], xr.DataArray] | float
    greater: bool = False


def _kl(quiescent: str, waking: str) -> Callable[[xr.Dataset], xr.DataArray]:
    return lambda ds: ds["kl"].sel(quiescent=quiescent, waking=waking)


def _offline(variable: str, quiescent: str) -> Callable[[xr.Dataset], xr.DataArray]:
    return lambda ds: ds[variable].sel(quiescent=quiescent)


def _kl_order(better: str, worse: str, waking: str) -> Check:
    return Check(
        f"KL({better} || {waking} awake) < KL({worse} || {waking} awake)", ("kl",), (better, worse), (waking,),
        _kl(better, waking), _kl(worse, waking),
    )


def _coverage(variant: str) -> Check:
    return Check(
        f"coverage of {variant} awake bins by {variant} offline >= {MIN_COVERAGE}", ("coverage",), (variant,),
        (variant,), lambda ds: ds["coverage"].sel(quiescent=variant, waking=variant), MIN_COVERAGE, greater=True,
    )


def _noise_free_still(task: str, noise_free: str, label: str) -> Check:
    variance = "position_variance" if task == "path_integration" else "heading_variance"
    bound = MAX_NOISE_FREE_VARIANCE[task]
    return Check(f"{label} offline output variance < {bound:g}", (variance,), (noise_free,), (),
                 _offline(variance, noise_free), bound)


def checks(task: str) -> list[Check]:
    """The claims that apply to ``task`` (path_integration or head_direction)."""
    found = [
        _kl_order("noisy", "noise_free", "noisy"),
        _kl_order("noisy", "untrained", "noisy"),
        # not a claim of the paper but of its account: the noise, not the circuit's own flow, does the revisiting
        _kl_order("noisy", "noisy+noise_off", "noisy"),
        _coverage("noisy"),
        _noise_free_still(task, "noise_free", "noise-free"),
        Check("KL(biased || biased awake) < KL(biased || noisy awake)", ("kl",), ("biased",), ("biased", "noisy"),
              _kl("biased", "biased"), _kl("biased", "noisy")),
        # the biased pair: what training noise adds to following the biased occupancy (without noise the circuit
        # can follow it through a prior learned from the task alone)
        _kl_order("biased", "biased_noise_free", "biased"),
        _noise_free_still(task, "biased_noise_free", "biased noise-free"),
        _kl_order("unconstrained", "unconstrained_noise_free", "unconstrained"),
        _kl_order("unconstrained", "untrained", "unconstrained"),
        _coverage("unconstrained"),
        _noise_free_still(task, "unconstrained_noise_free", "unconstrained noise-free"),
    ]
    if task == "head_direction":
        found += [
            Check(f"{variant} offline mean resultant length < {MAX_RESULTANT_LENGTH}", ("mean_resultant_length",),
                  (variant,), (), _offline("mean_resultant_length", variant), MAX_RESULTANT_LENGTH)
            for variant in ("noisy", "unconstrained")
        ]
        found += [
            Check(f"{variant} offline headings uniform over trials (Rayleigh test p > {SIGNIFICANCE:g})",
                  ("heading_uniformity_p",), (variant,), (), _offline("heading_uniformity_p", variant), SIGNIFICANCE,
                  greater=True)
            for variant in ("noisy", "unconstrained")
        ]
        found.append(
            Check("noisy offline mean resultant length < noisy awake's (as uniform as awake)",
                  ("mean_resultant_length", "waking_mean_resultant_length"), ("noisy",), ("noisy",),
                  _offline("mean_resultant_length", "noisy"),
                  lambda ds: ds["waking_mean_resultant_length"].sel(waking="noisy"))
        )
        found.append(
            Check("biased (counter-clockwise) offline angular velocity > 0 rad/s", ("angular_velocity",),
                  ("biased",), (), _offline("angular_velocity", "biased"), 0.0, greater=True)
        )
        found.append(
            Check(f"biased drift counter-clockwise and significant (sign test p < {SIGNIFICANCE:g})",
                  ("angular_velocity", "angular_velocity_sign_p"), ("biased",), (), _counter_clockwise_p, SIGNIFICANCE)
        )
    return found


def _counter_clockwise_p(ds: xr.Dataset) -> xr.DataArray:
    """The sign test's p-value of the biased circuit's offline drift; 1 where the drift is clockwise or zero (a
    collapsed circuit that barely moves, or drifts the wrong way, does not hold however small p is)."""
    omega = ds["angular_velocity"].sel(quiescent="biased")
    return ds["angular_velocity_sign_p"].sel(quiescent="biased").where(~(omega <= 0), 1.0)


def _applies(ds: xr.Dataset, check: Check) -> bool:
    return (
        all(variable in ds for variable in check.variables)
        and set(check.quiescent) <= set(ds["quiescent"].values.tolist())
        and set(check.waking) <= set(ds["waking"].values.tolist())
    )


def _task(ds: xr.Dataset) -> str:
    """head_direction when the circuit has heading results, else path_integration."""
    return "head_direction" if "heading_variance" in ds and bool(ds["heading_variance"].notnull().any()) else (
        "path_integration"
    )


def report_rows(ds: xr.Dataset) -> list[dict[str, object]]:
    """One row per circuit and applicable check: claim, median value / reference over seeds, seeds holding / seeds."""
    rows = []
    for circuit in ds["circuit"].values:
        one = _one_circuit(ds, circuit)
        for check in checks(_task(one)):
            if not _applies(one, check):
                continue
            reference = check.reference if isinstance(check.reference, float) else check.reference(one).values
            row = claim_row(str(circuit), check.claim, check.value(one).values, reference, check.greater)
            if row is not None:
                rows.append(row)
    return rows


def _one_circuit(ds: xr.Dataset, circuit) -> xr.Dataset:
    one = ds.sel(circuit=circuit)
    return one.squeeze("variant", drop=True) if "variant" in one.dims else one


def mixing_rows(ds: xr.Dataset) -> list[tuple[str, str, float]]:
    """(circuit, quiescent row, median over seeds of its offline distance from the start at the end of the KL window
    over the distance between two independent outputs of its own run's waking trials): near 1 the trajectories have
    forgotten their starts, near 0 the offline distribution is mostly that of the starts. Rows of summaries written
    before these variables existed, and the uniform baseline (no trajectory: NaN distance), are left out."""
    rows = []
    for circuit in ds["circuit"].values:
        one = _one_circuit(ds, circuit)
        what = "heading" if _task(one) == "head_direction" else "position"
        if f"{what}_displacement" not in one or f"waking_{what}_pair_distance" not in one:
            continue
        for quiescent in one["quiescent"].values:
            waking = row_own_waking(one, str(quiescent))
            distance = one[f"{what}_displacement"].sel(quiescent=quiescent)
            ratio = (distance / one[f"waking_{what}_pair_distance"].sel(waking=waking)).values
            ratio = ratio[np.isfinite(ratio)]
            if ratio.size:
                rows.append((str(circuit), str(quiescent), float(np.median(ratio))))
    return rows


def scaled_input_rows(ds: xr.Dataset) -> list[tuple[str, str, str, list[tuple[float, float, float]]]]:
    """(circuit, waking run, units, [(factor, error, signed error)]) of the scaled-input test: medians over seeds of
    the mean over the last tenth of the trials. Runs without the test are left out."""
    rows = []
    for circuit in ds["circuit"].values:
        one = _one_circuit(ds, circuit)
        error_name, bias_name = scaled_input_names(_task(one))
        if error_name not in one or not np.isfinite(one[error_name].values).any():
            continue
        error, bias = tail_mean(one[error_name]), tail_mean(one[bias_name])
        for waking in one["waking"].values:
            values = []
            for scale in sorted(one["input_scale"].values, reverse=True):  # from waking speed down to standing still
                e = error.sel(waking=waking, input_scale=scale).values.reshape(-1)
                b = bias.sel(waking=waking, input_scale=scale).values.reshape(-1)
                if np.isfinite(e).any():
                    values.append((float(scale), float(np.nanmedian(e)), float(np.nanmedian(b))))
            if values:
                rows.append((str(circuit), str(waking), str(one[error_name].attrs.get("units", "")), values))
    return rows


def report(ds: xr.Dataset) -> str:
    """The rows of `report_rows` as a text table, then the windows measured and the rows of `mixing_rows`."""
    rows = report_rows(ds)
    if not rows:
        return "no reactivation checks apply (the summary lacks the noisy / noise_free / biased variants)"
    lines = claims_table(rows)
    if "distribution_window_steps" in ds.attrs and "variance_window_steps" in ds.attrs:
        lines.append(
            f"quiescent steps since input removal: KL, coverage and the other distribution metrics "
            f"{ds.attrs['distribution_window_steps']}, output variance {ds.attrs['variance_window_steps']}"
        )
    mixing = mixing_rows(ds)
    if mixing:
        lines.append(
            "offline distance from the start at the end of the KL window / distance between two independent waking "
            "outputs (median over seeds; near 1: the start is forgotten, near 0: the offline distribution is mostly "
            "that of the starts, which the quiescence takes from the waking trials):"
        )
        for circuit in dict.fromkeys(c for c, _, _ in mixing):
            lines.append(f"  {circuit}: " + ", ".join(f"{q} {r:.2f}" for c, q, r in mixing if c == circuit))
    scaled = scaled_input_rows(ds)
    if scaled:
        lines.append(
            "awake with the self-motion input scaled by each factor (training noise on; decoding error over the last "
            "tenth of the trials, median over seeds; in brackets its signed part: outward, or counter-clockwise):"
        )
        for circuit, waking, units, values in scaled:
            lines.append(f"  {circuit} {waking}: " + ", ".join(f"x{f:g} {e:.1f} ({b:+.1f})" for f, e, b in values)
                         + f" {units}")
    return "\n".join(lines)

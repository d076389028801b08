"""The spiking-twin issue's claims, checked seed by seed on a spiking summary (results/summary/spiking.nc).

Per circuit and variant: the twin's decoding error over the rate circuit's on the same held-out trials (the rate
circuit run with its evaluation noise) and the median per-unit correlation of smoothed spike rates with rate-unit
activity. Per circuit, for each noisy / noise-free pair of variants the sweep has: the twin of the noisy circuit is
closer to waking occupancy offline than the twin of the noise-free one, and, beside it, the same ordering for the
two rate circuits from the same quiescent starts (`kl_offline_rate`), which the twins are expected to follow. Each
twin's KL is to its own rate circuit's waking occupancy.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from recircuit.claims import claim_row, claims_table

MAX_ERROR_RATIO = 1.5  # "spiking decoding error <= 1.5 x the rate circuit's"
MIN_UNIT_CORRELATION = 0.8  # "median per-unit correlation >= 0.8"
NOISY_PAIRS = (("noisy", "noise_free"), ("unconstrained", "unconstrained_noise_free"))
REQUIRED = ("circuit", "variant", "seed", "error_ratio", "median_unit_correlation", "kl_offline")


def _with_evaluation_noise(values: xr.DataArray) -> xr.DataArray:
    """The values against the rate circuit run with its evaluation noise (the task bound's reference)."""
    return values.sel(rate_noise="evaluation") if "rate_noise" in values.dims else values


def report_rows(ds: xr.Dataset) -> list[dict[str, object]]:
    """One row per circuit and claim: claim, median value / reference over seeds, seeds holding / seeds."""
    rows = []
    for circuit in ds["circuit"].values:
        one = ds.sel(circuit=circuit)
        found = []
        for variant in one["variant"].values:
            ratio = _with_evaluation_noise(one["error_ratio"].sel(variant=variant)).values
            correlation = _with_evaluation_noise(one["median_unit_correlation"].sel(variant=variant)).values
            found.append(claim_row(str(circuit), f"{variant}: error ratio spiking / rate <= {MAX_ERROR_RATIO:g}",
                                   ratio, MAX_ERROR_RATIO))
            found.append(claim_row(str(circuit), f"{variant}: median unit correlation >= {MIN_UNIT_CORRELATION:g}",
                                   correlation, MIN_UNIT_CORRELATION, greater=True))
        variants = set(one["variant"].values.tolist())
        for noisy, noise_free in NOISY_PAIRS:
            if not {noisy, noise_free} <= variants:
                continue
            found.append(claim_row(
                str(circuit), f"KL(twin of {noisy} offline || awake) < KL(twin of {noise_free} offline || awake)",
                one["kl_offline"].sel(variant=noisy).values, one["kl_offline"].sel(variant=noise_free).values,
            ))
            if "kl_offline_rate" in one:
                found.append(claim_row(
                    str(circuit), f"  the rate circuits from the same starts: {noisy} < {noise_free}",
                    one["kl_offline_rate"].sel(variant=noisy).values,
                    one["kl_offline_rate"].sel(variant=noise_free).values,
                ))
        rows += [row for row in found if row is not None]
    return rows


ERROR_SOURCES = ("fi_only_error_ratio", "mean_field_error_ratio", "noise_only_error_ratio")


def error_source_rows(ds: xr.Dataset) -> list[dict[str, object]]:
    """Per circuit and variant, medians over seeds of the twin's error over the noise-free rate circuit's and of
    what its f-I curve, its continuous-time dynamics without spikes and its noise cost the rate circuit
    (`ERROR_SOURCES`), with the trained circuit's dt/tau (NaN in summaries older than it); empty when the summary
    predates any of the ratios."""
    if not all(name in ds for name in ERROR_SOURCES) or "rate_noise" not in ds["error_ratio"].dims:
        return []
    rows = []
    for circuit in ds["circuit"].values:
        for variant in ds["variant"].values:
            one = ds.sel(circuit=circuit, variant=variant)
            twin = one["error_ratio"].sel(rate_noise="none")
            if not np.isfinite(twin.values).any():
                continue
            rows.append({
                "circuit": str(circuit),
                "variant": str(variant),
                "twin": float(np.nanmedian(twin.values)),
                **{name: float(np.nanmedian(one[name].values)) for name in ERROR_SOURCES},
                "dt_over_tau": float(np.nanmax(one["dt_over_tau"].values)) if "dt_over_tau" in one else np.nan,
            })
    return rows


def report(ds: xr.Dataset) -> str:
    """The rows of `report_rows` as a text table, with the quiescent window the offline KL used, then where the
    twins' error comes from (`error_source_rows`)."""
    rows = report_rows(ds)
    if not rows:
        return "no spiking checks apply (the summary has no finite error ratios, correlations or offline KLs)"
    lines = claims_table(rows)
    if "quiet_distribution_window_steps" in ds.attrs:
        lines.append(f"offline KL on quiescent steps {ds.attrs['quiet_distribution_window_steps']} since input removal")
    sources = error_source_rows(ds)
    if sources:
        lines += [
            "",
            "decoding error / the noise-free rate circuit's (median over seeds): the twin; the rate circuit with the",
            "twin's f-I curve; the twin without spikes (continuous time); the rate circuit with the twin's noise;",
            "and the trained circuit's Euler step over its time constant (where 'no spikes' is well above 1, that",
            "step costs the twin its accuracy, not the spikes; workflows/config/continuous_time.yaml trains at 0.125)",
            (
                f"{'circuit':<18} {'variant':<26} {'twin':>6} {'f-I only':>9} {'no spikes':>10} {'noise only':>11} "
                f"{'dt/tau':>7}"
            ),
        ]
        lines += [
            f"{row['circuit']:<18} {row['variant']:<26} {row['twin']:>6.2f} {row['fi_only_error_ratio']:>9.2f} "
            f"{row['mean_field_error_ratio']:>10.2f} {row['noise_only_error_ratio']:>11.2f} "
            f"{row['dt_over_tau']:>7.3g}"
            for row in sources
        ]
    return "\n".join(lines)

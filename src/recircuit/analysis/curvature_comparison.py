"""The curvature experiment's comparison table, from the collected results/summary/curvature.nc only.

Per circuit (task) and rule, against BPTT over seeds:
- the median top Hessian eigenvalue and training-set loss, their ratio to BPTT's medians, and a two-sided
  Mann-Whitney p-value of the rule's top eigenvalues against BPTT's;
- the same ratio **at matched training loss**: approximate rules usually end at a higher training loss than BPTT and
  curvature changes with loss, so the rule effect is estimated with the training loss held fixed, by least squares
  on all runs of the circuit: log(top eigenvalue) = a + b_rule + c * log(training-set loss). exp(b_rule) is the
  ratio to BPTT at equal loss; its p-value is the two-sided t-test of b_rule. Needs positive top eigenvalues and
  more runs than coefficients, else NaN.
Per circuit and test shift: Spearman rank correlation between the top eigenvalue and the generalization gap over
all rules x seeds, with its p-value.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import stats

from recircuit.results import label, save_dataset

RULE_ORDER = ("bptt", "tbptt", "eprop", "rflo")
COMPARISON_FILE = "curvature_comparison.nc"


def run_rules(ds: xr.Dataset) -> xr.DataArray:
    """The rule of every (circuit, variant, seed): the ``rule`` coordinate, else the specs_json attr."""
    if "rule" in ds.coords:
        rule = ds["rule"].astype(str)
        return rule.where(rule != "nan", "")
    specs = json.loads(ds.attrs.get("specs_json", "{}"))
    values = np.full((ds.sizes["circuit"], ds.sizes["variant"], ds.sizes["seed"]), "", dtype=object)
    for i, c in enumerate(ds["circuit"].values):
        for j, v in enumerate(ds["variant"].values):
            for k, s in enumerate(ds["seed"].values):
                spec = specs.get(f"{c}/{v}/{s}")
                if spec is not None:
                    values[i, j, k] = spec["training"]["rule"]
    dims = ("circuit", "variant", "seed")
    return xr.DataArray(values, dims=dims, coords={d: ds[d] for d in dims})


def matched_loss_effects(
    log_top: np.ndarray, log_loss: np.ndarray, rules: np.ndarray, others: list[str]
) -> dict[str, tuple[float, float]]:
    """rule -> (ratio to BPTT at equal training loss, p-value), from OLS log_top ~ 1 + rule dummies + log_loss."""
    columns = [np.ones_like(log_top), log_loss] + [(rules == r).astype(float) for r in others]
    design = np.stack(columns, axis=1)
    n, p = design.shape
    if n <= p or np.linalg.matrix_rank(design) < p:
        return {r: (np.nan, np.nan) for r in others}
    coef, *_ = np.linalg.lstsq(design, log_top, rcond=None)
    residual = log_top - design @ coef
    sigma2 = residual @ residual / (n - p)
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(design.T @ design)))
    out = {}
    for k, rule in enumerate(others, start=2):
        t = coef[k] / se[k] if se[k] > 0 else np.inf * np.sign(coef[k])
        out[rule] = (float(np.exp(coef[k])), float(2 * stats.t.sf(abs(t), n - p)))
    return out


def compare_rules(ds: xr.Dataset) -> xr.Dataset:
    """The comparison dataset (layout in the module docstring) from a collected curvature summary."""
    rules_of_runs = run_rules(ds)
    present = set(rules_of_runs.values.ravel().astype(str)) - {""}
    rules = [r for r in RULE_ORDER if r in present] + sorted(present - set(RULE_ORDER))
    circuits = [str(c) for c in ds["circuit"].values]
    shifts = [str(s) for s in ds["shift"].values]
    shape = (len(circuits), len(rules))
    table = {name: np.full(shape, np.nan) for name in (
        "n_runs", "top_eigenvalue_median", "train_loss_median", "top_eigenvalue_ratio_to_bptt",
        "train_loss_ratio_to_bptt", "mannwhitney_p", "matched_loss_ratio_to_bptt", "matched_loss_p")}
    rho = np.full((len(circuits), len(shifts)), np.nan)
    rho_p = np.full_like(rho, np.nan)
    for i, circuit in enumerate(circuits):
        sub = ds.sel(circuit=circuit)
        top = sub["top_eigenvalue"].values.ravel()
        loss = sub["train_loss"].values.ravel()
        run_rule = rules_of_runs.sel(circuit=circuit).values.ravel().astype(str)
        ok = np.isfinite(top) & np.isfinite(loss) & (run_rule != "")
        by_rule = {r: (top[ok & (run_rule == r)], loss[ok & (run_rule == r)]) for r in rules}
        base_top, base_loss = by_rule.get("bptt", (np.array([]), np.array([])))
        for j, rule in enumerate(rules):
            tops, losses = by_rule[rule]
            table["n_runs"][i, j] = len(tops)
            if not len(tops):
                continue
            table["top_eigenvalue_median"][i, j] = np.median(tops)
            table["train_loss_median"][i, j] = np.median(losses)
            if len(base_top):
                table["top_eigenvalue_ratio_to_bptt"][i, j] = np.median(tops) / np.median(base_top)
                table["train_loss_ratio_to_bptt"][i, j] = np.median(losses) / np.median(base_loss)
                if rule != "bptt":
                    table["mannwhitney_p"][i, j] = stats.mannwhitneyu(tops, base_top, alternative="two-sided").pvalue
        positive = ok & (top > 0) & (loss > 0)
        others = [r for r in rules if r != "bptt" and np.any(positive & (run_rule == r))]
        if len(base_top) and others:
            effects = matched_loss_effects(np.log(top[positive]), np.log(loss[positive]), run_rule[positive], others)
            for rule, (ratio, p) in effects.items():
                j = rules.index(rule)
                table["matched_loss_ratio_to_bptt"][i, j], table["matched_loss_p"][i, j] = ratio, p
        for k, shift in enumerate(shifts):
            gap = sub["generalization_gap"].sel(shift=shift).values.ravel()
            use = ok & np.isfinite(gap)
            if use.sum() >= 3 and np.ptp(top[use]) > 0 and np.ptp(gap[use]) > 0:
                result = stats.spearmanr(top[use], gap[use])
                rho[i, k], rho_p[i, k] = result.statistic, result.pvalue
    dims = ("circuit", "rule")
    meaning = {
        "n_runs": ("runs (seeds) of the rule", "1"),
        "top_eigenvalue_median": ("median top Hessian eigenvalue over seeds", "1"),
        "train_loss_median": ("median training-set loss over seeds", "1"),
        "top_eigenvalue_ratio_to_bptt": ("median top eigenvalue / BPTT's", "1"),
        "train_loss_ratio_to_bptt": ("median training-set loss / BPTT's", "1"),
        "mannwhitney_p": ("two-sided Mann-Whitney p-value, top eigenvalues of the rule vs BPTT", "1"),
        "matched_loss_ratio_to_bptt": ("top eigenvalue / BPTT's at equal training loss (log-linear fit)", "1"),
        "matched_loss_p": ("two-sided t-test p-value of the matched-loss rule effect", "1"),
    }
    data = {name: label(xr.DataArray(values, dims=dims), *meaning[name]) for name, values in table.items()}
    data["spearman_rho"] = label(xr.DataArray(rho, dims=("circuit", "shift")),
                                 "Spearman rho, top eigenvalue vs generalization gap over rules x seeds", "1")
    data["spearman_p"] = label(xr.DataArray(rho_p, dims=("circuit", "shift")), "p-value of that Spearman rho", "1")
    coords = {
        "circuit": label(xr.DataArray(np.asarray(circuits, dtype=object), dims="circuit"), "circuit", "1"),
        "rule": label(xr.DataArray(np.asarray(rules, dtype=object), dims="rule"), "credit-assignment rule", "1"),
        "shift": label(xr.DataArray(np.asarray(shifts, dtype=object), dims="shift"), "test condition", "1"),
    }
    attrs = {"source": "results/summary/curvature.nc", "method": (__doc__ or "").strip()}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def comparison_table(comparison: xr.Dataset) -> str:
    """The comparison as a plain-text table: one line per (circuit, rule), then the Spearman line per circuit."""
    lines = [f"{'circuit':<18}{'rule':<7}{'n':>3}{'top eig':>10}{'x BPTT':>8}{'MW p':>8}"
             f"{'loss x':>8}{'matched x':>10}{'p':>8}"]
    for circuit in comparison["circuit"].values:
        for rule in comparison["rule"].values:
            row = comparison.sel(circuit=circuit, rule=rule)
            if not row["n_runs"] > 0:
                continue
            lines.append(
                f"{circuit:<18}{rule:<7}{int(row['n_runs']):>3}{float(row['top_eigenvalue_median']):>10.4g}"
                f"{float(row['top_eigenvalue_ratio_to_bptt']):>8.2f}{float(row['mannwhitney_p']):>8.2g}"
                f"{float(row['train_loss_ratio_to_bptt']):>8.2f}{float(row['matched_loss_ratio_to_bptt']):>10.2f}"
                f"{float(row['matched_loss_p']):>8.2g}"
            )
        pairs = [f"{s}: {float(comparison['spearman_rho'].sel(circuit=circuit, shift=s)):+.2f} "
                 f"(p {float(comparison['spearman_p'].sel(circuit=circuit, shift=s)):.2g})"
                 for s in comparison["shift"].values
                 if np.isfinite(comparison["spearman_rho"].sel(circuit=circuit, shift=s))]
        lines.append(f"  {circuit}: Spearman(top eigenvalue, gap) " + ("; ".join(pairs) or "n/a"))
    return "\n".join(lines)


def write_comparison(summary: str | Path, out: str | Path) -> Path:
    """Read the collected curvature summary, write the comparison dataset to ``out``."""
    from recircuit.results import open_dataset

    summary = Path(summary)
    if not summary.is_file():
        raise FileNotFoundError(f"{summary}: curvature summary not found (run the curvature analysis first)")
    return save_dataset(compare_rules(open_dataset(summary)), Path(out))

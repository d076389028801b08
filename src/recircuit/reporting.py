"""Per-rule wall times from the Snakemake benchmark files (results/benchmarks/<rule>/*.tsv)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_benchmarks(folder: str | Path) -> dict[str, list[float]]:
    """Rule name -> wall seconds of each job (the `s` column of Snakemake's benchmark TSV files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no benchmark folder (run the workflow first)")
    times: dict[str, list[float]] = {}
    for path in sorted(folder.rglob("*.tsv")):
        rule = path.parent.name if path.parent != folder else path.stem
        with path.open() as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                times.setdefault(rule, []).append(float(row["s"]))
    if not times:
        raise FileNotFoundError(f"{folder}: no benchmark .tsv files")
    return times


def report_times(folder: str | Path) -> str:
    """A table of jobs, total, mean and max wall seconds per rule, slowest total first."""
    times = read_benchmarks(folder)
    lines = [f"{'rule':<16}{'jobs':>6}{'total s':>10}{'mean s':>9}{'max s':>9}"]
    for rule, seconds in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"{rule:<16}{len(seconds):>6}{sum(seconds):>10.1f}{sum(seconds) / len(seconds):>9.1f}{max(seconds):>9.1f}")
    total = sum(sum(s) for s in times.values())
    lines.append(f"{'all rules':<16}{sum(len(s) for s in times.values()):>6}{total:>10.1f}  (job time, summed over parallel jobs)")
    return "\n".join(lines)

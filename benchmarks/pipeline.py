"""Wall time of the quick reproduction (`snakemake --cores all`) run from scratch, and its per-rule job times.

The checkout's tracked files are copied to a temporary folder, so no existing results/ or Brian2 build is reused,
and `snakemake --cores N` runs there with the default config (the quick reproduction). Target (issue 8): under
10 minutes on the 2-core CPU. Usage: python benchmarks/pipeline.py [--cores N] [--keep]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recircuit.reporting import report_times

REPO = Path(__file__).resolve().parent.parent
LIMIT_S = 600.0


def tracked_files(repo: Path) -> list[str]:
    """Paths (relative to repo) of the files git tracks: the fresh-clone content, without results or caches."""
    listing = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], capture_output=True, text=True, check=True)
    return [name for name in listing.stdout.split("\0") if name]


def fresh_copy(repo: Path, target: Path) -> None:
    """Copy the tracked files of ``repo`` into ``target`` (what a fresh clone would contain, plus local edits)."""
    for name in tracked_files(repo):
        source = repo / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and its results")
    args = parser.parse_args()
    snakemake = shutil.which("snakemake") or sys.exit("snakemake is not on PATH (pip install -e . installs it)")

    folder = Path(tempfile.mkdtemp(prefix="recircuit-pipeline-"))
    try:
        fresh_copy(REPO, folder)
        print(f"running `snakemake --cores {args.cores}` in a fresh copy: {folder}", flush=True)
        start = time.perf_counter()
        result = subprocess.run([snakemake, "--cores", args.cores], cwd=folder, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"snakemake failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        print(report_times(folder / "results" / "benchmarks"))
        print(f"quick reproduction wall time {wall:.0f} s; limit {LIMIT_S:.0f} s; "
              f"ratio wall/limit {wall / LIMIT_S:.2f}")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()

"""xarray conventions for every result recircuit writes.

- One netCDF file per job, written with the h5netcdf engine to a temporary name and renamed (never half-written).
- Sweep coordinates (circuit, variant, seed) are length-1 dimensions, so ``xr.combine_by_coords`` rebuilds a sweep.
- Every variable and coordinate carries ``units`` and ``long_name``; the dataset carries provenance attrs.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import subprocess
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from recircuit import __version__
from recircuit.spec import SCHEMA_VERSION, CircuitSpec

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # HDF5 locks fail on NFS cluster file systems

SWEEP_DIMS = ("circuit", "variant", "seed")


@functools.cache
def git_commit() -> str:
    """The commit of the source tree recircuit runs from, or 'unknown' outside a git checkout."""
    if commit := os.environ.get("RECIRCUIT_GIT_COMMIT"):
        return commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(spec: CircuitSpec | None, *, circuit: str, variant: str, seed: int, device: str) -> dict[str, str | int]:
    """Attributes every dataset carries: schema version, spec JSON, versions, commit, device, sweep labels."""
    attrs: dict[str, str | int] = {
        "schema_version": SCHEMA_VERSION,
        "recircuit_version": __version__,
        "git_commit": git_commit(),
        "device": device,
        "circuit": circuit,
        "variant": variant,
        "seed": int(seed),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "Conventions": "CF-1.11",
    }
    if spec is not None:
        attrs["spec_json"] = spec.model_dump_json()
    return attrs


def with_sweep_dims(ds: xr.Dataset, *, circuit: str, variant: str, seed: int) -> xr.Dataset:
    """Add circuit/variant/seed as length-1 dimensions with labelled coordinates.

    Non-index coordinates (e.g. the E/I `population` of each unit) belong to one run, so they become data
    variables that carry the sweep dimensions; otherwise runs with different E/I splits could not be combined.
    """
    ds = ds.reset_coords([name for name in ds.coords if name not in ds.dims])
    ds = ds.expand_dims(circuit=[circuit], variant=[variant], seed=[int(seed)])
    ds["circuit"].attrs.update(long_name="circuit spec", units="1")
    ds["variant"].attrs.update(long_name="variant (named overrides)", units="1")
    ds["seed"].attrs.update(long_name="seed", units="1")
    return ds


def label(da: xr.DataArray, long_name: str, units: str) -> xr.DataArray:
    da.attrs.update(long_name=long_name, units=units)
    return da


def check_labelled(ds: xr.Dataset) -> None:
    """Raise if a data variable or coordinate lacks ``units`` or ``long_name`` (the convention every file keeps)."""
    missing = [
        name for name, var in {**ds.data_vars, **ds.coords}.items() if not {"units", "long_name"} <= set(var.attrs)
    ]
    if missing:
        raise ValueError(f"variables without units/long_name: {', '.join(map(str, missing))}")


def save_dataset(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` atomically (temporary file + rename) with the h5netcdf engine."""
    check_labelled(ds)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def open_dataset(path: str | Path) -> xr.Dataset:
    """Open and load one result file (closing it, so it can be replaced while the data are in use)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: result file not found")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def open_summary(path: Path, kind: str, required: Iterable[str], made_by: str) -> xr.Dataset:
    """Open a ``kind`` summary (e.g. results/summary/spiking.nc), refusing a missing file (naming ``made_by``, what
    writes it), a file that is not netCDF, and a dataset without the ``required`` variables."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {kind} summary (run {made_by} first)")
    try:
        ds = open_dataset(path)
    except OSError as exc:
        raise ValueError(f"{path}: not a netCDF dataset ({exc})") from exc
    missing = sorted(set(required) - set(ds.variables))
    if missing:
        raise ValueError(f"{path}: not a {kind} summary (lacks {', '.join(missing)})")
    return ds


def combine(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """Combine per-job datasets along their length-1 sweep dimensions.

    Per-job attrs that differ (seed, spec JSON, device, time) are dropped; the specs are kept, one per job,
    in the ``specs_json`` attr, keyed by circuit/variant/seed. Each variable keeps its units (which must agree) and
    the first dataset's long_name.
    """
    if not datasets:
        raise ValueError("nothing to combine")
    specs = {}
    for ds in datasets:
        key = "/".join(str(ds.attrs.get(k, "?")) for k in SWEEP_DIMS)
        if "spec_json" in ds.attrs:
            specs[key] = json.loads(ds.attrs["spec_json"])
    # data_vars="minimal": per-job variables already carry the sweep dims; "all" would broadcast every variable
    # along any dimension whose length differs between runs (e.g. `unit` for circuits of different sizes).
    labels = _variable_labels(datasets)
    combined = xr.combine_by_coords(
        list(datasets), compat="no_conflicts", data_vars="minimal", coords="different", join="outer",
        combine_attrs="drop_conflicts",
    )
    for name, variable in combined.variables.items():
        variable.encoding = {}  # inherited encodings (e.g. a string width) would truncate longer labels on save
        variable.attrs.update(labels.get(name, {}))
    for key in ("circuit", "variant", "seed", "spec_json", "created", "device"):
        combined.attrs.pop(key, None)
    combined.attrs["specs_json"] = json.dumps(specs, sort_keys=True)
    return combined


def _variable_labels(datasets: Sequence[xr.Dataset]) -> dict[Hashable, dict[str, str]]:
    """Each variable's ``units`` (which the datasets must agree on) and ``long_name`` (the first dataset's: files
    written by different versions may word it differently, and combining would drop a wording that differs)."""
    labels: dict[Hashable, dict[str, str]] = {}
    units_by_source: dict[Hashable, dict[str, str]] = {}
    for index, ds in enumerate(datasets):
        source = str(ds.encoding.get("source", f"dataset {index}"))
        for name, variable in ds.variables.items():
            if "units" in variable.attrs:
                units_by_source.setdefault(name, {}).setdefault(str(variable.attrs["units"]), source)
            if "long_name" in variable.attrs:
                labels.setdefault(name, {}).setdefault("long_name", str(variable.attrs["long_name"]))
    for name, units in units_by_source.items():
        if len(units) > 1:
            found = "; ".join(f"{unit!r} in {source}" for unit, source in units.items())
            raise ValueError(f"variable {name!r} has different units in the files combined: {found}")
        labels.setdefault(name, {})["units"] = next(iter(units))
    return labels


def collect(files: Iterable[str | Path], out: str | Path) -> Path:
    """Combine per-job result files into one summary file."""
    datasets = [open_dataset(f) for f in files]
    return save_dataset(combine(datasets), out)


def open_sweep(source: str | Path | Iterable[str | Path], name: str | None = None) -> xr.Dataset:
    """Open a sweep for figure making.

    ``source`` is a summary file, a list of per-job files, or a results folder together with an analysis ``name``
    (e.g. ``open_sweep("results", "train")`` combines every ``results/*/*/seed*/train.nc``).
    """
    if isinstance(source, (str, Path)):
        source = Path(source)
        if source.is_file():
            return open_dataset(source)
        if name is None:
            raise ValueError(f"{source} is a folder: say which analysis to open (e.g. name='train')")
        files = sorted(source.glob(f"*/*/seed*/{name}.nc"))
        if not files:
            raise FileNotFoundError(f"no {name}.nc under {source}/<circuit>/<variant>/seed<k>/")
    else:
        files = list(source)
    return combine([open_dataset(f) for f in files])


def finite_or_raise(ds: xr.Dataset, where: str) -> None:
    """Raise ValueError naming the variables that hold NaN or Inf."""
    bad = [name for name, var in ds.data_vars.items() if var.dtype.kind == "f" and not np.isfinite(var.values).all()]
    if bad:
        raise ValueError(f"{where}: non-finite values in {', '.join(map(str, bad))}")

"""The xarray conventions: atomic labelled saves, sweep dimensions, combining and opening sweeps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from recircuit.results import (
    check_labelled,
    combine,
    finite_or_raise,
    label,
    open_dataset,
    open_sweep,
    save_dataset,
    with_sweep_dims,
)


def job_dataset(seed: int, variant: str = "noisy", circuit: str = "pi") -> xr.Dataset:
    """A per-job result as the pipeline writes it: labelled variables, provenance attrs, length-1 sweep dims."""
    error = label(xr.DataArray(np.arange(3.0) + 10 * seed, dims="trial"), "decoded position error", "cm")
    ds = xr.Dataset(
        {"error": error},
        coords={"trial": label(xr.DataArray(np.arange(3), dims="trial"), "held-out trial", "1")},
        attrs={"circuit": circuit, "variant": variant, "seed": seed, "spec_json": json.dumps({"seed": seed})},
    )
    return with_sweep_dims(ds, circuit=circuit, variant=variant, seed=seed)


def test_save_dataset_writes_only_the_final_file(tmp_path):
    path = save_dataset(job_dataset(0), tmp_path / "sub" / "waking.nc")
    assert path == tmp_path / "sub" / "waking.nc"
    assert [p.name for p in path.parent.iterdir()] == ["waking.nc"]
    loaded = open_dataset(path)
    assert loaded.error.sel(seed=0, circuit="pi", variant="noisy").values.tolist() == [0.0, 1.0, 2.0]
    assert loaded.error.attrs == {"long_name": "decoded position error", "units": "cm"}


def test_save_dataset_refuses_unlabelled_variables(tmp_path):
    ds = job_dataset(0)
    ds["bare"] = xr.DataArray(np.zeros(3), dims="trial")
    with pytest.raises(ValueError, match="bare"):
        save_dataset(ds, tmp_path / "x.nc")
    assert list(tmp_path.iterdir()) == []


def test_check_labelled_also_checks_coordinates():
    ds = job_dataset(0).assign_coords(extra=("trial", np.arange(3)))
    with pytest.raises(ValueError, match="extra"):
        check_labelled(ds)


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = save_dataset(job_dataset(0), tmp_path / "train.nc")
    before = path.read_bytes()

    def half_write(self, target, *args, **kwargs):
        with open(target, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_dataset(job_dataset(1), path)
    assert [p.name for p in tmp_path.iterdir()] == ["train.nc"]
    assert path.read_bytes() == before


def test_with_sweep_dims_adds_labelled_length_one_dims():
    ds = job_dataset(3)
    assert {d: ds.sizes[d] for d in ("circuit", "variant", "seed")} == {"circuit": 1, "variant": 1, "seed": 1}
    assert ds.seed.values.tolist() == [3]
    for name in ("circuit", "variant", "seed"):
        assert {"long_name", "units"} <= set(ds[name].attrs)


def test_combine_rebuilds_a_two_seed_sweep():
    combined = combine([job_dataset(1), job_dataset(0)])
    assert combined.seed.values.tolist() == [0, 1]
    assert combined.error.sel(seed=1, circuit="pi", variant="noisy").values.tolist() == [10.0, 11.0, 12.0]
    plain = xr.combine_by_coords([job_dataset(0), job_dataset(1)], combine_attrs="drop_conflicts")
    xr.testing.assert_equal(combined.error, plain.error)
    specs = json.loads(combined.attrs["specs_json"])
    assert specs == {"pi/noisy/0": {"seed": 0}, "pi/noisy/1": {"seed": 1}}
    assert "seed" not in combined.attrs and "spec_json" not in combined.attrs


def test_combine_spans_variants_and_seeds():
    jobs = [job_dataset(s, v) for s in (0, 1) for v in ("noisy", "noise_free")]
    combined = combine(jobs)
    assert dict(combined.error.sizes) == {"circuit": 1, "variant": 2, "seed": 2, "trial": 3}
    assert not combined.error.isnull().any()


def test_runs_with_different_populations_combine(tmp_path):
    def run(circuit: str, n_exc: int, n_inh: int) -> xr.Dataset:
        n = n_exc + n_inh
        ds = xr.Dataset(
            {"rate": label(xr.DataArray(np.ones(n), dims="unit"), "mean rate", "1")},
            coords={
                "unit": label(xr.DataArray(np.arange(n), dims="unit"), "recurrent unit", "1"),
                "population": label(xr.DataArray(["E"] * n_exc + ["I"] * n_inh, dims="unit"), "population", "1"),
            },
        )
        return with_sweep_dims(ds, circuit=circuit, variant="noisy", seed=0)

    files = [save_dataset(run("a", 3, 1), tmp_path / "a.nc"), save_dataset(run("b", 2, 3), tmp_path / "b.nc")]
    combined = open_sweep(files)
    assert combined.population.sel(circuit="a").squeeze().values.tolist()[:4] == ["E", "E", "E", "I"]
    assert combined.population.sel(circuit="b").squeeze().values.tolist() == ["E", "E", "I", "I", "I"]


def test_string_labels_of_different_lengths_survive_a_saved_sweep(tmp_path):
    for variant in ("noisy", "noise_free_long_name"):
        save_dataset(job_dataset(0, variant), tmp_path / "pi" / variant / "seed0" / "waking.nc")
    sweep = open_sweep(tmp_path, "waking")
    assert sorted(sweep.variant.values.tolist()) == ["noise_free_long_name", "noisy"]


def test_combine_keeps_labels_worded_differently_and_refuses_different_units(tmp_path):
    newer = job_dataset(1)
    newer["error"].attrs["long_name"] = "decoding error, worded anew"
    combined = combine([job_dataset(0), newer])
    assert combined.error.attrs == {"long_name": "decoded position error", "units": "cm"}
    check_labelled(combined)
    files = [save_dataset(job_dataset(0), tmp_path / "a.nc"), save_dataset(job_dataset(1), tmp_path / "b.nc")]
    in_metres = open_dataset(files[1])
    in_metres["error"].attrs["units"] = "m"
    with pytest.raises(ValueError, match=r"'error' has different units.*'cm' in .*a\.nc; 'm' in .*b\.nc"):
        combine([open_dataset(files[0]), in_metres])


def test_combine_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="nothing to combine"):
        combine([])


def test_open_sweep_on_a_results_folder(tmp_path):
    for seed in (0, 1):
        save_dataset(job_dataset(seed), tmp_path / "pi" / "noisy" / f"seed{seed}" / "waking.nc")
    sweep = open_sweep(tmp_path, "waking")
    assert sweep.seed.values.tolist() == [0, 1]
    assert sweep.error.sel(seed=1).squeeze().values.tolist() == [10.0, 11.0, 12.0]
    with pytest.raises(ValueError, match="say which analysis"):
        open_sweep(tmp_path)
    with pytest.raises(FileNotFoundError, match="no train.nc"):
        open_sweep(tmp_path, "train")


def test_open_sweep_on_a_summary_file_and_a_file_list(tmp_path):
    files = [save_dataset(job_dataset(s), tmp_path / f"job{s}.nc") for s in (0, 1)]
    from_list = open_sweep(files)
    summary = save_dataset(from_list, tmp_path / "summary.nc")
    xr.testing.assert_equal(open_sweep(summary).error, from_list.error)


def test_open_dataset_on_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        open_dataset(tmp_path / "missing.nc")


def test_finite_or_raise_names_the_bad_variable():
    ds = job_dataset(0)
    finite_or_raise(ds, "here")
    ds["error"] = ds.error.where(ds.trial != 1)
    with pytest.raises(ValueError, match="here: non-finite values in error"):
        finite_or_raise(ds, "here")

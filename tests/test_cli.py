"""The command line: train then evaluate a tiny circuit, labelled datasets, exit codes for bad input."""

from __future__ import annotations

import pytest
import xarray as xr
from conftest import CIRCUITS_DIR, TINY_OVERRIDES

from recircuit.cli import main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny path-integration run trained and evaluated through the CLI, shared by the dataset checks."""
    run_dir = tmp_path_factory.mktemp("cli") / "pi" / "noisy" / "seed0"
    overrides = [f"{k}={v}" for k, v in {**TINY_OVERRIDES["path_integration"], "training.steps": 6}.items()]
    spec = str(CIRCUITS_DIR / "path_integration.yaml")
    code = main(["train", spec, "--out", str(run_dir), "--variant", "noisy", "--seed", "0", "--set", *overrides])
    assert code == 0
    assert main(["evaluate", str(run_dir)]) == 0
    return run_dir


def open_nc(path) -> xr.Dataset:
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def assert_labelled(ds: xr.Dataset) -> None:
    for name, var in {**ds.data_vars, **ds.coords}.items():
        assert var.attrs.get("units"), f"{name} has no units"
        assert var.attrs.get("long_name"), f"{name} has no long_name"


def test_train_writes_a_labelled_training_record(trained_run):
    assert sorted(p.name for p in trained_run.iterdir()) == ["model.pt", "train.nc", "waking.nc"]
    ds = open_nc(trained_run / "train.nc")
    assert_labelled(ds)
    assert ds.sizes["step"] == 6
    assert ds.circuit.values.tolist() == ["path_integration"]  # default label: the spec file name
    assert ds.variant.values.tolist() == ["noisy"] and ds.seed.values.tolist() == [0]
    assert ds.attrs["schema_version"] == 1 and "spec_json" in ds.attrs


def test_evaluate_writes_waking_dataset_with_trial_time_unit_dims(trained_run):
    ds = open_nc(trained_run / "waking.nc")
    assert_labelled(ds)
    assert {"trial", "time", "unit"} <= set(ds.dims)
    assert ds.sizes["trial"] == 8 and ds.sizes["time"] == 20 and ds.sizes["unit"] == 32
    assert ds.position_error.dims[-2:] == ("trial", "time")
    assert ds.rates.dims[-1] == "unit"
    assert ds.population.squeeze().values.tolist() == ["E"] * 24 + ["I"] * 8
    assert ds.attrs["rmse_position_error_cm"] > 0
    assert ds.attrs["chance_rmse_position_error_cm"] > 0


def test_set_overrides_reach_the_trained_spec(trained_run):
    from recircuit.circuit import load_model

    model = load_model(trained_run)
    assert model.spec.training.steps == 6
    assert model.spec.task.place_cells.n_cells == 32
    assert model.meta["variant"] == "noisy"


def test_missing_spec_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["train", str(missing), "--out", str(tmp_path / "run")]) == 2
    assert f"{missing}: file not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_override_exits_2_without_output(tmp_path, capsys):
    spec = str(CIRCUITS_DIR / "path_integration.yaml")
    assert main(["train", spec, "--out", str(tmp_path / "run"), "--set", "training.steps=zero"]) == 2
    assert "--set training.steps=zero" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_missing_run_dir_exits_2(tmp_path, capsys):
    missing = tmp_path / "never_trained"
    assert main(["evaluate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recircuit evaluate: error: ") and str(missing) in err


def test_init_from_without_a_trained_model_exits_2(tmp_path, capsys):
    spec = str(CIRCUITS_DIR / "path_integration.yaml")
    missing = tmp_path / "never_trained"
    assert main(["train", spec, "--out", str(tmp_path / "run"), "--init-from", str(missing)]) == 2
    assert f"--init-from {missing}: no trained model here" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_diverged_training_exits_1(tmp_path, capsys, tiny_set_args):
    spec = str(CIRCUITS_DIR / "path_integration.yaml")
    overrides = tiny_set_args("path_integration", {"training.learning_rate": 1000.0, "network.activation": "relu"})
    assert main(["train", spec, "--out", str(tmp_path), "--set", *overrides]) == 1
    assert "recircuit train: failed: " in capsys.readouterr().err
    assert not (tmp_path / "model.pt").exists()


def test_train_ensemble_writes_one_run_folder_per_seed_and_refuses_bad_input(tmp_path, capsys):
    spec = str(CIRCUITS_DIR / "path_integration.yaml")
    overrides = [f"{k}={v}" for k, v in {**TINY_OVERRIDES["path_integration"], "training.steps": 3}.items()]
    record = [*overrides, "training.on_divergence=record"]
    pattern = str(tmp_path / "seed{seed}")
    assert main(["train-ensemble", spec, "--seeds", "4", "7", "--out", pattern, "--set", *record]) == 0
    for seed in (4, 7):
        assert open_nc(tmp_path / f"seed{seed}" / "train.nc").attrs["seed"] == seed
    assert main(["evaluate", str(tmp_path / "seed4"), str(tmp_path / "seed7")]) == 0
    assert (tmp_path / "seed7" / "waking.nc").is_file()
    capsys.readouterr()

    assert main(["train-ensemble", spec, "--seeds", "1", "2", "--out", str(tmp_path / "flat"), "--set", *record]) == 2
    assert "must contain {seed}" in capsys.readouterr().err
    assert main(["train-ensemble", spec, "--seeds", "1", "2", "--out", pattern, "--set", *overrides]) == 2
    assert "training.on_divergence=record" in capsys.readouterr().err
    assert not (tmp_path / "seed1").exists()

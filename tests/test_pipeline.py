"""The Snakemake workflow: dry runs of the shipped configs, one tiny real run checked dataset by dataset,
re-run is a no-op, bad config keys are rejected, a killed training job resumes, and the cluster path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from recircuit.sweep import (
    POST_TRAINING_SECTIONS,
    config_schema_json,
    section_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def workflow_copy(tmp_path: Path) -> Path:
    """A private copy of the workflow (Snakefile, workflows/, circuits/) so runs never touch the repo."""
    work = tmp_path / "wf"
    work.mkdir()
    shutil.copy(ROOT / "Snakefile", work)
    shutil.copytree(ROOT / "workflows", work / "workflows")
    shutil.copytree(ROOT / "circuits", work / "circuits")
    return work


def without_head_direction(config: str) -> str:
    """The tiny config with only the path-integration circuit."""
    config = config.replace("  head_direction:\n    spec: circuits/head_direction.yaml\n    variants: [noisy]\n", "")
    return config.replace("  spiking: [head_direction]\n", "")


def snakemake(work: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=work, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_config_schema_is_in_sync_with_the_models():
    committed = (ROOT / "workflows/schemas/config.schema.json").read_text()
    assert committed == config_schema_json(), "run: recircuit schema --write workflows/schemas/config.schema.json"


@pytest.mark.parametrize(
    "config", ["quick", "paper", "tiny", "curvature", "normalization", "reactivation", "reactivation_reference_noise"]
)
def test_dry_run_of_each_shipped_config(tmp_path, config):
    work = workflow_copy(tmp_path)
    args = ["-n", "--cores", "2"] if config == "quick" else ["-n", "--cores", "2", "--configfile", f"workflows/config/{config}.yaml"]
    result = snakemake(work, *args, "--quiet", "rules")
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout + result.stderr


# overlay -> (text every training command of it has, text only its path integrators' commands have, text only its
# head-direction commands have)
OVERLAYS = {
    "sigmoid": ("'network.activation=\"sigmoid\"'", "", ""),
    "mse": ("", "'training.loss=\"mse\"' task.place_cells.code_gain=100.0", ""),
    "cross_entropy": ("", "'training.loss=\"cross_entropy\"' task.place_cells.code_gain=1.0", ""),
    "noisy_neuron": ("spiking.membrane_noise_mV=10.0 spiking.lif_max_rate_hz=200.0", "", ""),
    "continuous_time": ("", "", "network.tau_ms=160.0"),
    "pause": ("", "task.pause_fraction=0.25 task.pause_steps=25", ""),
    "reference_architecture": (
        "'network.activation=\"relu\"' 'network.noise.distribution=\"reference_uniform\"'", "", ""
    ),
    "reference_init": (
        "", "'network.input_init=\"fan_in\"' network.learned_bias=false network.spectral_radius=0.577", ""
    ),
}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_retrains_a_sweep_elsewhere_with_its_change(tmp_path, overlay):
    """workflows/config/<overlay>.yaml after a sweep config keeps the sweep's scale, adds its change, and writes to
    results_<overlay>/; on its own it is refused (it is not a sweep)."""
    every, path_integration_only, head_direction_only = OVERLAYS[overlay]
    work = workflow_copy(tmp_path)
    configs = ["workflows/config/reactivation.yaml", f"workflows/config/{overlay}.yaml"]
    result = snakemake(work, "-n", "-p", "--cores", "2", "--configfile", *configs)
    assert result.returncode == 0, result.stderr
    trains = [line for line in result.stdout.splitlines() if "recircuit train-ensemble" in line]
    assert len(trains) == 12  # 2 tasks x 6 variants, 5 seeds each
    for line in trains:
        assert every in line and "training.steps=4000" in line
        assert f"--out results_{overlay}/" in line
        is_path_integration = "circuits/path_integration.yaml" in line
        assert "network.n_exc=100" in line if is_path_integration else "network.n_exc" not in line
        if path_integration_only:
            assert (path_integration_only in line) == is_path_integration
        if head_direction_only:
            assert (head_direction_only in line) != is_path_integration
    alone = snakemake(work, "-n", "--cores", "2", "--configfile", f"workflows/config/{overlay}.yaml")
    assert alone.returncode != 0 and "circuits" in alone.stderr + alone.stdout


def test_bad_config_key_is_rejected_naming_the_key(tmp_path):
    work = workflow_copy(tmp_path)
    bad = (work / "workflows/config/tiny.yaml").read_text().replace("seeds: [0]", "seeds: [0]\nseedz: [1]")
    (work / "bad.yaml").write_text(bad)
    result = snakemake(work, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert result.returncode != 0
    assert "seedz" in result.stderr + result.stdout


def test_bad_spec_override_in_a_variant_is_rejected_naming_file_and_key(tmp_path):
    work = workflow_copy(tmp_path)
    bad = (work / "workflows/config/tiny.yaml").read_text().replace(
        "network.noise.recurrent_sd: 0.0", "network.noise.recurent_sd: 0.0"
    )
    (work / "bad.yaml").write_text(bad)
    result = snakemake(work, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert result.returncode != 0
    assert "network.noise.recurent_sd" in result.stderr + result.stdout
    assert "circuits/path_integration.yaml" in result.stderr + result.stdout


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = workflow_copy(tmp_path_factory.mktemp("tiny"))
    result = snakemake(work, "--cores", "2", "--configfile", "workflows/config/tiny.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.mark.slow
def test_tiny_run_writes_labelled_finite_datasets(tiny_run):
    results = tiny_run / "results"
    training = xr.open_dataset(results / "summary/training.nc", engine="h5netcdf")
    assert set(training.circuit.values) == {"path_integration", "head_direction"}
    assert set(training.variant.values) == {"noisy", "noise_free"}
    assert list(training.seed.values) == [0]
    assert training.sizes["step"] == 12
    loss = training["loss"].sel(circuit="path_integration", variant="noisy", seed=0)
    assert np.isfinite(loss).all()
    assert training.attrs["schema_version"] == 1 and "specs_json" in training.attrs

    waking = xr.open_dataset(results / "summary/waking.nc", engine="h5netcdf")
    for dim in ("trial", "time", "unit", "circuit", "variant", "seed"):
        assert dim in waking.dims
    for name, var in {**waking.data_vars, **waking.coords}.items():
        assert {"units", "long_name"} <= set(var.attrs), name
    pi = waking["position_error"].sel(circuit="path_integration", variant="noisy", seed=0)
    assert pi.sizes == {"trial": 8, "time": 10} and np.isfinite(pi).all()
    hd = waking["heading_error"].sel(circuit="head_direction", variant="noisy", seed=0)
    assert np.isfinite(hd).all() and float(hd.max()) <= 180.0

    run = xr.open_dataset(results / "path_integration/noisy/seed0/waking.nc", engine="h5netcdf")
    assert run.attrs["circuit"] == "path_integration" and run.attrs["variant"] == "noisy" and run.attrs["seed"] == 0
    for key in ("spec_json", "recircuit_version", "git_commit", "device"):
        assert run.attrs[key]
    reactivation = xr.open_dataset(results / "summary/reactivation.nc", engine="h5netcdf")
    assert {"quiescent", "waking"} <= set(reactivation.dims)
    kl = reactivation["kl"].sel(circuit="path_integration", seed=0).squeeze()
    assert "noisy" in kl.quiescent.values and "noise_free" in kl.waking.values
    assert np.isfinite(kl.sel(quiescent="noisy", waking="noisy"))
    spiking = xr.open_dataset(results / "summary/spiking.nc", engine="h5netcdf")
    ratio = spiking["error_ratio"].sel(circuit="head_direction", variant="noisy", seed=0)
    assert np.isfinite(ratio).all() and float(ratio.max()) > 0
    reactivation_report = (results / "summary/reactivation_report.txt").read_text()
    assert "KL(noisy || noisy awake) < KL(noise_free || noisy awake)" in reactivation_report
    # the noisy circuit offline without its noise: what the offline flow owes to the noise
    assert np.isfinite(kl.sel(quiescent="noisy+noise_off", waking="noisy"))
    assert "KL(noisy || noisy awake) < KL(noisy+noise_off || noisy awake)" in reactivation_report
    assert "1/1 seeds" in reactivation_report or "0/1 seeds" in reactivation_report
    assert "  path_integration: noisy " in reactivation_report  # how far offline trajectories get from their starts
    assert float(reactivation["position_displacement"].sel(circuit="path_integration", seed=0, quiescent="noisy")) > 0
    radial = reactivation["radial_displacement"].sel(circuit="path_integration", seed=0, quiescent="noisy")
    assert "radius_bin" in radial.dims  # with 8 quiescent trials no distance bin holds the 5 a mean needs: all NaN
    assert not np.isfinite(radial.values).any()
    scaled = reactivation["scaled_input_position_error"].sel(circuit="path_integration", seed=0, waking="noisy")
    assert sorted(scaled["input_scale"].values.tolist()) == [0.0, 1.0] and scaled.sizes["scaled_input_time"] == 20
    assert np.isfinite(scaled.values).all() and (scaled.values >= 0).all()
    assert "path_integration noisy: x1 " in reactivation_report  # the scaled-input test's line
    spiking_report = (results / "summary/spiking_report.txt").read_text()
    assert spiking_report.splitlines()[1].startswith("head_direction") and "noisy: error ratio" in spiking_report
    assert float(spiking["noise_only_error_ratio"].sel(circuit="head_direction", variant="noisy", seed=0)) > 0
    lines = spiking_report.splitlines()  # then the table of error sources, one row per spiked circuit and variant
    header = next(k for k, line in enumerate(lines) if line.split()[-3:] == ["noise", "only", "dt/tau"])
    assert [line.split()[:2] for line in lines[header + 1 :]] == [["head_direction", "noisy"]]
    dt_over_tau = float(spiking["dt_over_tau"].sel(circuit="head_direction", variant="noisy", seed=0))
    spec = json.loads(spiking.attrs["specs_json"])["head_direction/noisy/0"]
    assert dt_over_tau == pytest.approx(spec["task"]["dt_s"] / (spec["network"]["tau_ms"] / 1000))
    assert float(lines[header + 1].split()[-1]) == pytest.approx(dt_over_tau, rel=1e-2)
    for name in ("training/training_curves", "training/decoded_trajectories", "training/error_over_time",
                 "reactivation/reactivation_path_integration_kl", "reactivation/reactivation_path_integration_scaled_input",
                 "spiking/spiking_agreement"):
        for ext in ("png", "pdf"):
            assert (results / "figures" / f"{name}.{ext}").stat().st_size > 1000


def test_twins_overlay_adds_a_twin_per_circuit_and_trains_nothing_new(tmp_path):
    """workflows/config/twins.yaml after reactivation.yaml adds a spike job per trained circuit with its settings,
    in the same results folder, and leaves every training command as reactivation.yaml alone has it."""
    work = workflow_copy(tmp_path)
    sweep = "workflows/config/reactivation.yaml"
    alone = snakemake(work, "-n", "-p", "--cores", "2", "--configfile", sweep)
    both = snakemake(work, "-n", "-p", "--cores", "2", "--configfile", sweep, "workflows/config/twins.yaml")
    assert alone.returncode == 0 and both.returncode == 0, both.stderr
    trains = [{line for line in run.stdout.splitlines() if "recircuit train-ensemble" in line} for run in (alone, both)]
    assert len(trains[0]) == 12 and trains[0] == trains[1]
    spikes = [line for line in both.stdout.splitlines() if "recircuit spike " in line]
    assert len(spikes) == 60  # 2 tasks x 6 variants x 5 seeds
    for line in spikes:
        assert "spiking.n_quiescent_trials=40" in line and "spiking.quiescent_steps=1000" in line
        assert "reactivation.distribution_steps=900" in line and " results/" in line
    assert not any("recircuit spike " in line for line in alone.stdout.splitlines())


def test_the_twins_neuron_goes_to_training_and_the_other_twin_settings_do_not():
    """spiking.membrane_noise_mV, tau_m_ms and threshold_gap_mV are a lif circuit's activation, so the sweep passes
    them to the training jobs (a change retrains); every other spiking.* and reactivation.* key goes only to the
    analysis jobs."""
    overrides = {"spiking.membrane_noise_mV": 3.0, "spiking.tau_m_ms": 12.0, "spiking.n_trials": 5,
                 "reactivation.n_trials": 3, "training.steps": 10}  # fmt: skip
    training = section_overrides(overrides, POST_TRAINING_SECTIONS, include=False)
    assert training == {"spiking.membrane_noise_mV": 3.0, "spiking.tau_m_ms": 12.0, "training.steps": 10}
    assert section_overrides(overrides, ("spiking",), include=True) == {"spiking.n_trials": 5}
    assert section_overrides(overrides, ("reactivation",), include=True) == {"reactivation.n_trials": 3}


@pytest.mark.slow
def test_rerun_is_a_no_op(tiny_run):
    result = snakemake(tiny_run, "-n", "--cores", "2", "--configfile", "workflows/config/tiny.yaml")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_changed_analysis_settings_rerun_the_analyses_not_the_training(tiny_run):
    """reactivation.* and spiking.* overrides go to the quiesce and spike jobs, not to training: after a change to
    the reactivation windows the sweep quiesces again and recomputes the metrics (and the twins' offline KL), and
    trains nothing."""
    config = (tiny_run / "workflows/config/tiny.yaml").read_text()
    changed = config.replace("reactivation.burn_in_steps: 10", "reactivation.burn_in_steps: 5\n"
                             "    reactivation.distribution_steps: 20")  # fmt: skip
    assert changed != config
    (tiny_run / "windows.yaml").write_text(changed)
    result = snakemake(tiny_run, "-n", "-p", "--cores", "2", "--configfile", "windows.yaml")
    assert result.returncode == 0, result.stderr
    jobs = result.stdout + result.stderr
    assert "recircuit quiesce" in jobs and "reactivation.distribution_steps=20" in jobs
    assert "recircuit reactivation " in jobs
    for command in ("recircuit train", "recircuit evaluate"):
        assert command not in jobs, command


@pytest.mark.slow
def test_killed_training_leaves_no_complete_result_and_rerun_resumes(tmp_path):
    work = workflow_copy(tmp_path)
    config = (work / "workflows/config/tiny.yaml").read_text()
    config = config.replace("training.steps: 12", "training.steps: 400").replace(
        "training.checkpoint_every_steps: 6", "training.checkpoint_every_steps: 20"
    )
    config = without_head_direction(config.replace("variants: [noisy, noise_free]", "variants: [noisy]"))
    (work / "slow.yaml").write_text(config)
    run_dir = work / "results/path_integration/noisy/seed0"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*SNAKEMAKE, "--cores", "1", "--configfile", "slow.yaml"], cwd=work, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (run_dir / "checkpoint.pt").exists():
        assert time.time() < deadline, "no checkpoint appeared"
        assert proc.poll() is None, "workflow ended before it could be interrupted"
        time.sleep(0.2)
    candidates = subprocess.run(
        ["pgrep", "-f", "recircuit train .*--out results/path_integration/noisy/seed0"], capture_output=True, text=True
    ).stdout.split()
    pids = [pid for pid in candidates if Path(f"/proc/{pid}/cwd").resolve() == work.resolve()]  # this test's jobs only
    assert pids, "training process not found"
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode != 0
    assert not (run_dir / "model.pt").exists() and not (run_dir / "train.nc").exists()
    assert (run_dir / "checkpoint.pt").exists()

    result = snakemake(work, "--cores", "1", "--configfile", "slow.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "model.pt").exists() and (run_dir / "waking.nc").exists()
    assert not (run_dir / "checkpoint.pt").exists()
    log = (work / "results/logs/train/path_integration_noisy_seed0.log").read_text()
    assert "resuming" in log


@pytest.mark.slow
def test_many_seed_sweep_trains_and_evaluates_each_variant_as_one_ensemble_job(tmp_path):
    work = workflow_copy(tmp_path)
    config = without_head_direction((work / "workflows/config/tiny.yaml").read_text())
    config = config.replace("seeds: [0]", "seeds: [0, 1, 2, 3]\nensemble_min_seeds: 4")
    config = config.replace("    training.steps: 12\n", "    training.steps: 12\n    training.on_divergence: record\n")
    config = config.replace("analyses:\n  reactivation: [path_integration]\n", "analyses: {}\n")
    (work / "seeds.yaml").write_text(config)
    result = snakemake(work, "--cores", "2", "--configfile", "seeds.yaml")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    benchmarks = work / "results/benchmarks"
    assert sorted(p.name for p in (benchmarks / "train_ensemble").iterdir()) == [
        "path_integration_noise_free.tsv", "path_integration_noisy.tsv"
    ]
    assert not (benchmarks / "train").exists() and not (benchmarks / "evaluate").exists()
    assert len(list((benchmarks / "evaluate_ensemble").iterdir())) == 2
    training = xr.open_dataset(work / "results/summary/training.nc", engine="h5netcdf")
    assert list(training.seed.values) == [0, 1, 2, 3]
    losses = training["loss"].sel(circuit="path_integration", variant="noisy").values
    assert np.isfinite(losses).all() and len({tuple(row) for row in losses}) == 4  # four different members
    run = xr.open_dataset(work / "results/path_integration/noisy/seed3/train.nc", engine="h5netcdf")
    assert run.attrs["ensemble_size"] == 4 and run.attrs["seed"] == 3
    assert (work / "results/path_integration/noise_free/seed3/waking.nc").is_file()
    rerun = snakemake(work, "-n", "--cores", "2", "--configfile", "seeds.yaml")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr


def test_cluster_executor_runs_the_workflow(tmp_path):
    work = workflow_copy(tmp_path)
    shutil.copy(ROOT / "tests/cluster/submit.sh", work / "submit.sh")
    config = without_head_direction((work / "workflows/config/tiny.yaml").read_text())
    (work / "cluster.yaml").write_text(config)
    result = snakemake(
        work, "--executor", "cluster-generic", "--cluster-generic-submit-cmd", "bash submit.sh",
        "--jobs", "2", "--latency-wait", "30", "--configfile", "cluster.yaml",
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (work / "results/summary/waking.nc").exists()
    assert (work / "results/figures/training/training_curves.png").exists()

# Helpers shared by the rules: the checked sweep, paths, and the --set arguments of each run.
import os
import sys
from recircuit.spec import load_spec
from recircuit.sweep import (
    POST_TRAINING_SECTIONS,
    SweepError,
    check_sweep,
    ensembled_runs,
    section_overrides,
    set_arguments,
)

try:
    SWEEP = check_sweep(config, "sweep config", workdir=workflow.basedir)
except SweepError as error:
    raise WorkflowError("invalid sweep config:\n" + str(error)) from None

RESULTS = SWEEP.results_dir
TASK_KIND = {name: load_spec(entry.spec).task.kind for name, entry in SWEEP.circuits.items()}
# One thread per job: snakemake --cores N runs N jobs side by side, faster than N threads in one job.
THREADS_ENV = "OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"
# Jobs call the `recircuit` installed next to the Python running Snakemake (it imports recircuit above), also
# when that environment is not activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

# Seeds of these (circuit, variant) pairs train together in one `train_ensemble` job; every other run in its own
# `train` job. The circuit wildcard's constraint looks ahead at "<circuit>/<variant>/" to send each run folder to
# exactly one of the two rules.
ENSEMBLED = ensembled_runs(SWEEP, workflow.basedir)
_ENSEMBLED_PATHS = "|".join(f"{c}/{v}" for c, v in ENSEMBLED) or "(?!)"
SINGLE_RUN_CIRCUIT = rf"(?!(?:{_ENSEMBLED_PATHS})/)[A-Za-z0-9_]+"
ENSEMBLE_CIRCUIT = rf"(?=(?:{_ENSEMBLED_PATHS})/)[A-Za-z0-9_]+"

wildcard_constraints:
    circuit=r"[A-Za-z0-9_]+",
    variant=r"[A-Za-z0-9_]+",
    seed=r"\d+",


def run_dir(circuit, variant, seed):
    return f"{RESULTS}/{circuit}/{variant}/seed{seed}"


def spec_of(wildcards):
    return SWEEP.circuits[wildcards.circuit].spec


def _sweep_overrides(wildcards, sections, include):
    overrides = SWEEP.overrides(wildcards.circuit, wildcards.variant, TASK_KIND[wildcards.circuit])
    return set_arguments(section_overrides(overrides, sections, include=include))


def run_overrides(wildcards):
    """`--set` of a training job: the sweep's overrides except those of the sections only analyses read, which go to
    the analysis jobs (`analysis_overrides`), so that changing them reruns the analyses and not the training."""
    return _sweep_overrides(wildcards, POST_TRAINING_SECTIONS, include=False)


def analysis_overrides(*sections):
    """`--set` of an analysis job: the sweep's overrides of ``sections``."""
    return lambda wildcards: _sweep_overrides(wildcards, sections, include=True)


def run_files(name, jobs=None):
    return [f"{run_dir(c, v, s)}/{name}" for c, v, s in (jobs if jobs is not None else SWEEP.jobs())]


def uses_gpu():
    return 0 if SWEEP.device == "cpu" else 1

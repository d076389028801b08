"""The Snakemake sweep config: which circuits, which variants, which seeds, at which scale.

The pydantic model here is the single source of truth: the JSON schema Snakemake validates against
(workflows/schemas/config.schema.json) is generated from it, and a test keeps the two in sync.

A *variant* is a named set of dotted spec overrides, for every circuit (``set``) and per task kind (``by_task``).
The *scale* block has the same shape and is applied first (training steps, batch, sizes), then the variant.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from recircuit.spec import SpecError, load_spec
from recircuit.spec_sections.base import NonNegativeInt, StrictModel

TaskKind = Literal["path_integration", "head_direction"]
NAME_PATTERN = r"^[A-Za-z0-9_]+$"


class Overrides(StrictModel):
    """Dotted spec overrides: for every circuit (set) and per task kind (by_task, applied after set)."""

    set: dict[str, Any] = Field(default_factory=dict, description="overrides for every circuit, e.g. training.steps")
    by_task: dict[TaskKind, dict[str, Any]] = Field(default_factory=dict, description="overrides per task kind")

    def for_task(self, kind: str) -> dict[str, Any]:
        return {**self.set, **self.by_task.get(kind, {})}


class CircuitEntry(StrictModel):
    spec: str = Field(description="path of the circuit spec YAML, relative to the workflow folder")
    variants: list[str] = Field(min_length=1, description="names from `variants` to run for this circuit")


class Analyses(StrictModel):
    """Which circuits each analysis runs on (training and held-out evaluation always run on every circuit)."""

    reactivation: list[str] = Field(
        default_factory=list,
        description="circuits whose runs get quiescence + reactivation metrics (variants noisy, noise_free, biased...)",
    )
    spiking: list[str] = Field(default_factory=list, description="circuits whose runs get a Brian2 spiking twin")
    curvature: list[str] = Field(
        default_factory=list, description="circuits whose runs get the Hessian spectrum and generalization gap"
    )
    normalization: list[str] = Field(
        default_factory=list, description="circuits whose runs form the inhibitory-normalization experiment"
    )


class SweepConfig(StrictModel):
    """A whole sweep: circuits x their variants x seeds, at one scale."""

    description: str = ""
    circuits: dict[str, CircuitEntry] = Field(min_length=1, description="circuit name -> spec and variants")
    variants: dict[str, Overrides] = Field(min_length=1, description="variant name -> dotted overrides")
    seeds: list[NonNegativeInt] = Field(min_length=1, description="training seeds")
    scale: Overrides = Field(default_factory=Overrides, description="overrides applied to every run before variants")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="training device; cuda rules request a GPU")
    analyses: Analyses = Field(default_factory=Analyses)
    results_dir: str = Field("results", description="where results are written")
    ensemble_min_seeds: NonNegativeInt = Field(
        4,
        description="train all seeds of a circuit x variant as one batched network (one job) when the sweep has at "
        "least this many seeds and the run can be ensembled (rule bptt, training.on_divergence record); 0: never",
    )

    @field_validator("circuits", "variants")
    @classmethod
    def _names_are_path_safe(cls, value: dict[str, Any]) -> dict[str, Any]:
        import re

        bad = [name for name in value if not re.match(NAME_PATTERN, name)]
        if bad:
            raise ValueError(f"names may use letters, digits and _ only: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _variants_exist(self) -> SweepConfig:
        for analysis, circuits in self.analyses.model_dump().items():
            unknown_circuits = [c for c in circuits if c not in self.circuits]
            if unknown_circuits:
                raise ValueError(f"analyses.{analysis}: unknown circuit(s) {', '.join(unknown_circuits)}")
        for name, entry in self.circuits.items():
            unknown = [v for v in entry.variants if v not in self.variants]
            if unknown:
                raise ValueError(f"circuits.{name}.variants: unknown variant(s) {', '.join(unknown)}")
        return self

    def jobs(self) -> list[tuple[str, str, int]]:
        """Every (circuit, variant, seed) that gets trained."""
        return [(c, v, s) for c, entry in self.circuits.items() for v in entry.variants for s in self.seeds]

    def jobs_for(self, analysis: str) -> list[tuple[str, str, int]]:
        """The (circuit, variant, seed) runs an analysis covers."""
        circuits = getattr(self.analyses, analysis)
        return [job for job in self.jobs() if job[0] in circuits]

    def overrides(self, circuit: str, variant: str, task_kind: str) -> dict[str, Any]:
        """Scale overrides, then the variant's, then the device, for one circuit and variant."""
        return {
            **self.scale.for_task(task_kind),
            **self.variants[variant].for_task(task_kind),
            "training.device": self.device,
        }


def ensembled_runs(sweep: SweepConfig, workdir: str | Path = ".") -> list[tuple[str, str]]:
    """The (circuit, variant) pairs whose seeds the workflow trains as one ensemble job (see ensemble_min_seeds)."""
    if sweep.ensemble_min_seeds == 0 or len(sweep.seeds) < sweep.ensemble_min_seeds:
        return []
    pairs = []
    for circuit, entry in sweep.circuits.items():
        path = Path(workdir) / entry.spec
        kind = load_spec(path).task.kind
        for variant in entry.variants:
            training = load_spec(path, sweep.overrides(circuit, variant, kind)).training
            if training.rule == "bptt" and training.on_divergence == "record":
                pairs.append((circuit, variant))
    return pairs


class SweepError(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def config_schema() -> dict[str, Any]:
    """JSON schema of the sweep config, with the `$schema` key Snakemake's validator needs."""
    schema = SweepConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def config_schema_json() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"


def check_sweep(raw: Mapping[str, Any], source: str, workdir: str | Path = ".") -> SweepConfig:
    """Validate a sweep config and every circuit spec it would run (with its overrides); raise SweepError."""
    try:
        sweep = SweepConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = [
            f"{source}: {'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        ]
        raise SweepError(problems) from None
    problems = []
    for circuit, entry in sweep.circuits.items():
        path = Path(workdir) / entry.spec
        try:
            kind = load_spec(path).task.kind
        except SpecError as exc:
            problems += [f"{source}: circuits.{circuit}.spec: {p}" for p in exc.problems]
            continue
        for variant in entry.variants:
            try:
                load_spec(path, sweep.overrides(circuit, variant, kind))
            except SpecError as exc:
                problems += [f"{source}: variants.{variant} (or scale) on {circuit}: {p}" for p in exc.problems]
    if problems:
        raise SweepError(problems)
    return sweep


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and fully check a sweep config YAML file."""
    path = Path(path)
    if not path.is_file():
        raise SweepError([f"{path}: file not found"])
    try:
        raw = YAML(typ="safe").load(path.read_text()) or {}
    except YAMLError as exc:
        raise SweepError([f"{path}: not valid YAML: {exc}"]) from None
    return check_sweep(raw, str(path))


POST_TRAINING_SECTIONS = ("reactivation", "spiking")  # spec sections that only the analyses of a trained circuit read
# ... but for these keys: the twin's neuron is also a lif circuit's activation (recircuit.circuit.lif_curve), so
# training reads it
TRAINED_NEURON_KEYS = tuple(
    f"spiking.{name}" for name in ("membrane_noise_mV", "tau_m_ms", "threshold_gap_mV", "lif_max_rate_hz")
)


def section_overrides(overrides: Mapping[str, Any], sections: Sequence[str], *, include: bool) -> dict[str, Any]:
    """The overrides whose dotted key lies in one of ``sections`` (``include``), or in none of them; the neuron keys
    (`TRAINED_NEURON_KEYS`) count as lying in none, so they reach training."""

    def in_sections(key: str) -> bool:
        return key not in TRAINED_NEURON_KEYS and key.split(".", 1)[0] in sections

    return {key: value for key, value in overrides.items() if in_sections(key) == include}


def set_arguments(overrides: Mapping[str, Any]) -> str:
    """`--set k=v ...` for the CLI, shell-quoted; values are written as JSON, which the spec loader reads as YAML."""
    if not overrides:
        return ""
    return "--set " + " ".join(shlex.quote(f"{k}={json.dumps(v)}") for k, v in overrides.items())

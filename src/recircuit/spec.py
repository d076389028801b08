"""The circuit spec: one typed, validated description of a circuit (task, network, training, evaluation).

A spec is a YAML file validated by the pydantic models below (`extra="forbid"`, units in field names).
`load_spec(path, overrides)` applies dotted overrides (a *variant*, or `--set` on the command line) and reports
every problem at once as ``file:line: dotted.key: message``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from recircuit.spec_sections.base import (  # noqa: E402
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StrictModel,
)
from recircuit.spec_sections.curvature import CurvatureSpec  # noqa: E402
from recircuit.spec_sections.reactivation import ReactivationSpec  # noqa: E402
from recircuit.spec_sections.spiking import SpikingSpec  # noqa: E402

SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------------------------------------- task
class PlaceCells(StrictModel):
    """Softmax-Gaussian place-cell code (Sorscher et al. 2019)."""

    n_cells: PositiveInt = Field(512, description="number of place cells (network outputs)")
    width_m: PositiveFloat = Field(0.2, description="Gaussian tuning width sigma of each cell, metres")
    layout_seed: NonNegativeInt = Field(0, description="seed of the uniform random cell centres (fixed per circuit)")
    code_gain: PositiveFloat = Field(
        1.0,
        description="the code (a softmax over cells, summing to 1) times this gain; cross-entropy ignores it. MSE "
        "at gain 1 (the reference's): the code peaks near 0.04 and Adam barely learns it from network.input_init "
        "unit_drive (about 100 learns at 512 cells), but learns it from input_init fan_in, the reference's "
        "initialisation",
    )


class HeadDirectionCells(StrictModel):
    """Von Mises head-direction cell code with peak 1 and kappa = 1/width^2."""

    n_cells: PositiveInt = Field(512, description="number of head-direction cells (network outputs)")
    width_rad: PositiveFloat = Field(math.pi / 6, description="tuning width sigma; kappa = 1/sigma^2, radians")


class InputGain(StrictModel):
    """Input-scale variability: each trial's self-motion input is multiplied by g ~ U(1-eps, 1+eps)."""

    epsilon: Annotated[float, Field(ge=0, lt=1)] = Field(0.0, description="gain spread; 0 = no variability")
    segments: PositiveInt = Field(1, description="independent gains per trial, over equal time segments")


PauseFraction = Annotated[float, Field(ge=0, lt=1)]
PauseSteps = Annotated[float, Field(ge=1)]
PAUSE_STEPS_DESCRIPTION = "mean length of a pause, time steps"


def check_pauses(fraction: float, mean_steps: float) -> None:
    """A two-state chain with pauses of ``mean_steps`` on average can be still at most mean/(mean+1) of the time."""
    if fraction > mean_steps / (mean_steps + 1):
        raise ValueError(
            f"pause_fraction {fraction} needs pauses longer than pause_steps {mean_steps}: "
            "at most pause_steps / (pause_steps + 1)"
        )


class PathIntegrationTask(StrictModel):
    """2-D path integration in a square arena (Sorscher motion model), input = displacement per step."""

    kind: Literal["path_integration"] = "path_integration"
    arena_m: PositiveFloat = Field(2.2, description="side of the square arena centred at 0, metres")
    dt_s: PositiveFloat = Field(0.02, description="time step of the trajectory and of the network, seconds")
    sequence_steps: PositiveInt = Field(100, description="time steps per training trajectory")
    speed_scale_m_per_s: PositiveFloat = Field(
        0.26 * math.pi, description="Rayleigh scale b of the forward speed (mean b*sqrt(pi/2)), m/s"
    )
    turn_sd_rad_per_s: NonNegativeFloat = Field(11.52, description="SD of the random turn rate, rad/s")
    border_region_m: NonNegativeFloat = Field(0.03, description="wall-avoidance distance, metres")
    drift_to_center: Fraction = Field(
        0.0, description="fraction of the offset to the centre added to each step (biased occupancy)"
    )
    pause_fraction: PauseFraction = Field(
        0.0,
        description="fraction of the time the agent stands still (pauses of pause_steps on average, in a two-state "
        "Markov chain; drift_to_center goes on while it stands); 0: it never stops, as in the reference, so "
        "training never shows the circuit zero input",
    )
    pause_steps: PauseSteps = Field(25.0, description=PAUSE_STEPS_DESCRIPTION)
    input_gain: InputGain = InputGain()
    place_cells: PlaceCells = PlaceCells()
    decode_top_k: PositiveInt = Field(3, description="decoder: mean centre of the k most active outputs")

    @model_validator(mode="after")
    def _pauses_possible(self) -> PathIntegrationTask:
        check_pauses(self.pause_fraction, self.pause_steps)
        return self


class HeadDirectionTask(StrictModel):
    """Head-direction integration on the ring, input = heading increment per step."""

    kind: Literal["head_direction"] = "head_direction"
    dt_s: PositiveFloat = Field(0.02, description="time step of the trajectory and of the network, seconds")
    sequence_steps: PositiveInt = Field(100, description="time steps per training trajectory")
    turn_model: Literal["iid", "ar1"] = Field(
        "iid", description="iid: Krishna et al. turns; ar1: Cueva et al. autoregressive angular velocity"
    )
    turn_sd_rad_per_s: NonNegativeFloat = Field(11.52, description="iid model: SD of the turn rate, rad/s")
    ar1_momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.8, description="ar1 model: momentum per step")
    ar1_step_sd_rad: NonNegativeFloat = Field(0.03, description="ar1 model: innovation SD per step, radians")
    turn_bias: Literal["none", "counter_clockwise"] = Field(
        "none", description="counter_clockwise: every turn is |turn| (the biased variant)"
    )
    pause_fraction: PauseFraction = Field(
        0.0,
        description="fraction of the time the head stands still: no turn (pauses of pause_steps on average, in a "
        "two-state Markov chain); 0: it turns at every step, as in the reference",
    )
    pause_steps: PauseSteps = Field(25.0, description=PAUSE_STEPS_DESCRIPTION)
    input_gain: InputGain = InputGain()
    hd_cells: HeadDirectionCells = HeadDirectionCells()
    decode_top_k: PositiveInt = Field(3, description="decoder: circular mean of the k most active outputs")

    @model_validator(mode="after")
    def _pauses_possible(self) -> HeadDirectionTask:
        check_pauses(self.pause_fraction, self.pause_steps)
        return self


TaskSpec = Annotated[PathIntegrationTask | HeadDirectionTask, Field(discriminator="kind")]


# -------------------------------------------------------------------------------------------------------- network
class NoiseSpec(StrictModel):
    """Recurrent and input noise. gaussian (default): zero mean, per-step SD ``sd * sqrt(dt / tau)`` (Brownian
    scaling). reference_uniform: ``sd * U[0, 1)`` per step as the reference code draws it (Krishna et al.,
    models/rnn.py, torch.rand_like): mean sd / 2, SD sd / sqrt(12), not scaled with dt / tau."""

    recurrent_sd: NonNegativeFloat = Field(
        0.01,
        description="recurrent noise SD accumulated over one time constant tau (0 = noise-free); "
        "reference_uniform: the width of the per-step uniform draw",
    )
    input_sd: NonNegativeFloat = Field(
        0.0, description="input noise SD per sqrt(tau), in input units; reference_uniform: per-step width"
    )
    placement: Literal["state", "drive"] = Field(
        "state", description="state: added to the rate after the nonlinearity (Krishna et al.); drive: before it"
    )
    distribution: Literal["gaussian", "reference_uniform"] = Field(
        "gaussian",
        description="gaussian: zero-mean, Brownian-scaled (the paper's equations); reference_uniform: sd * U[0,1) "
        "per step, the reference code's noise (nonzero mean sd/2, per-step SD sd/sqrt(12))",
    )


class NormalizationSpec(StrictModel):
    """Fast inhibitory interneurons that normalize the excitatory drive (and optionally the errors)."""

    kind: Literal["none", "subtractive", "divisive"] = Field(
        "none", description="subtractive: remove the E population mean; divisive: also divide by its SD (LayerNorm)"
    )
    errors: Literal["none", "center", "full", "fa_center"] = Field(
        "none", description="error normalization in the backward pass: none = forward only"
    )
    n_interneurons: PositiveInt | None = Field(None, description="subtractive interneurons; null = n_exc / 10")
    homeostatic_weight: NonNegativeFloat = Field(0.01, description="weight lambda of the local homeostatic loss")

    @model_validator(mode="after")
    def _errors_need_normalization(self) -> NormalizationSpec:
        if self.kind == "none" and self.errors != "none":
            raise ValueError("errors can only be normalized when kind is subtractive or divisive")
        return self


class NetworkSpec(StrictModel):
    """Leaky rate network h <- (1-a) h + a phi(W h + W_in u + b) + noise, with a = dt/tau."""

    n_exc: PositiveInt = Field(410, description="excitatory units")
    n_inh: NonNegativeInt = Field(102, description="inhibitory units")
    dale: bool = Field(True, description="sign-constrained E/I weights; false = unconstrained control RNN")
    activation: Literal["sigmoid", "softplus", "relu", "tanh", "lif"] = Field(
        "sigmoid",
        description="rate nonlinearity phi; lif (the shipped specs' choice) is the spiking twin's own LIF f-I curve "
        "(sigmoid-like, recircuit.circuit.lif_curve; the neuron of spiking.membrane_noise_mV, tau_m_ms and "
        "threshold_gap_mV), so the rate circuit is its twin's mean field; sigmoid and tanh "
        "convert through a fitted LIF curve, with a larger twin error; relu and softplus do not convert",
    )
    tau_ms: PositiveFloat = Field(100.0, description="time constant of the rate units, ms")
    spectral_radius: PositiveFloat = Field(1.5, description="spectral radius of the initial recurrent matrix")
    input_weights: Literal["free", "excitatory"] = Field(
        "free", description="sign of the input weights: free, or non-negative"
    )
    input_init: Literal["unit_drive", "fan_in"] = Field(
        "unit_drive",
        description="initial input weights: unit_drive = N(0, 1 / (n_inputs rms(u)^2)), each unit's input drive W_in u "
        "starting with SD 1 whatever the input's units; fan_in = U(-1/sqrt(n_inputs), 1/sqrt(n_inputs)) on the raw "
        "inputs, PyTorch's nn.Linear default and the reference's (Krishna et al.): a drive near 0.01 on path "
        "integration, whose displacements are about 0.015 m per step",
    )
    zero_self_connections: bool = Field(True, description="no autapses")
    learned_bias: bool = Field(
        True,
        description="a learned bias b on every unit's drive; false: b = 0, as in the reference's ReLU RNN (Krishna "
        "et al.), so that with the input removed a unit is driven by the other units alone",
    )
    initial_state: Literal["learned_encoder", "zeros"] = Field(
        "learned_encoder", description="h0 = phi(W_enc code(s0) + b_enc), or zeros"
    )
    noise: NoiseSpec = NoiseSpec()
    normalization: NormalizationSpec = NormalizationSpec()

    @property
    def n_units(self) -> int:
        return self.n_exc + self.n_inh

    @model_validator(mode="after")
    def _dale_needs_inhibition(self) -> NetworkSpec:
        if self.dale and self.n_inh == 0:
            raise ValueError("n_inh must be > 0 when dale is true (an E-only recurrent circuit cannot balance)")
        return self


# ------------------------------------------------------------------------------------------------------- training
class TrainingSpec(StrictModel):
    steps: PositiveInt = Field(2500, description="optimizer steps (batches)")
    batch_size: PositiveInt = Field(200, description="trajectories per batch")
    rule: Literal["bptt", "tbptt", "eprop", "rflo"] = Field(
        "bptt", description="credit-assignment rule (only the backward pass differs between rules)"
    )
    tbptt_window_steps: PositiveInt = Field(10, description="tbptt: time steps between full-state cuts")
    n_train_trajectories: PositiveInt | None = Field(
        None, description="finite training set of K fixed trajectories; null = fresh trajectories every batch"
    )
    seed: NonNegativeInt = Field(0, description="seed of initialisation, trajectories and noise")
    learning_rate: PositiveFloat = Field(1e-3, description="Adam learning rate")
    weight_decay: NonNegativeFloat = Field(0.0, description="Adam (L2) weight decay")
    grad_clip_norm: NonNegativeFloat = Field(0.0, description="global gradient-norm clip; 0 = off")
    loss: Literal["mse", "cross_entropy"] = Field("mse", description="loss of the outputs against the cell code")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    on_divergence: Literal["stop", "record"] = Field(
        "stop",
        description="NaN/Inf loss or gradient: stop with an error (no model saved), or record it (save the last "
        "finite weights, mark train.nc diverged) for experiments that count divergences",
    )
    log_every_steps: PositiveInt = Field(50, description="progress line every N steps")
    checkpoint_every_steps: PositiveInt = Field(250, description="resumable checkpoint every N steps")


class EvaluationSpec(StrictModel):
    n_trials: PositiveInt = Field(200, description="held-out waking trajectories")
    seed: NonNegativeInt = Field(10_000, description="seed of the held-out trajectories (fixed)")
    sequence_steps: PositiveInt | None = Field(None, description="steps per trajectory; null = as in training")
    n_trials_with_rates: NonNegativeInt = Field(20, description="trials whose hidden rates are saved")


class CircuitSpec(StrictModel):
    """A whole circuit: what it does (task), what it is (network), how it learns, how it is evaluated."""

    schema_version: Literal[1] = SCHEMA_VERSION
    description: str = ""
    task: TaskSpec
    network: NetworkSpec = NetworkSpec()
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    reactivation: ReactivationSpec = ReactivationSpec()
    spiking: SpikingSpec = SpikingSpec()
    curvature: CurvatureSpec = CurvatureSpec()

    @model_validator(mode="after")
    def _time_step_fits(self) -> CircuitSpec:
        alpha = 1000.0 * self.task.dt_s / self.network.tau_ms
        if alpha > 1.0:
            raise ValueError(
                f"task.dt_s ({self.task.dt_s} s) must not exceed network.tau_ms ({self.network.tau_ms} ms): dt/tau > 1"
            )
        return self

    @property
    def alpha(self) -> float:
        """dt / tau of the network (dimensionless)."""
        return 1000.0 * self.task.dt_s / self.network.tau_ms

    @property
    def n_outputs(self) -> int:
        cells = self.task.place_cells if self.task.kind == "path_integration" else self.task.hd_cells
        return cells.n_cells

    @property
    def n_inputs(self) -> int:
        return 2 if self.task.kind == "path_integration" else 1


# --------------------------------------------------------------------------------------------------------- errors
class SpecError(Exception):
    """Every problem found in one spec, formatted one per line as ``file:line: dotted.key: message``."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``a.b.c=value`` into the dotted key and the YAML-typed value."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r} has an empty key")
    try:
        value = YAML(typ="safe").load(raw) if raw.strip() else None
    except YAMLError as exc:
        raise ValueError(f"override {text!r}: value is not valid YAML ({exc.problem})") from exc
    return key, value


def _set_dotted(doc: CommentedMap, key: str, value: Any) -> None:
    node: Any = doc
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, Mapping) else None
        if child is None:
            child = CommentedMap()
            node[part] = child
        elif not isinstance(child, Mapping):
            raise ValueError(f"{'.'.join(parts[: i + 1])} is not a section, so {key} cannot be set")
        node = child
    node[parts[-1]] = value


def _line_of(doc: Any, loc: Sequence[Any]) -> int | None:
    """1-based line of the deepest key of ``loc`` that exists in the ruamel document."""
    node, line = doc, None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            position = node.lc.data.get(part)  # [line, column, ...] of the key; absent for keys set by --set
            if position is not None:
                line = position[0] + 1
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        # else: a discriminator tag (task kind) or a missing key: keep the line of the parent
    return line


def _dotted(loc: Sequence[Any], doc: Any) -> str:
    """Dotted key of a pydantic error location, without discriminator tags."""
    parts, node = [], doc
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            parts.append(str(part))
        elif isinstance(node, Mapping) and part in ("path_integration", "head_direction"):
            continue
        else:
            parts.append(str(part))
            node = None
    return ".".join(parts) or "(root)"


def load_spec(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = ()) -> CircuitSpec:
    """Read a circuit spec from YAML, apply dotted overrides, validate; raise SpecError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"{path}: file not found"])
    try:
        doc = _yaml().load(path.read_text())
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}" if mark is not None else "?"
        raise SpecError([f"{path}:{line}: (yaml): {getattr(exc, 'problem', None) or exc}"]) from exc
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise SpecError([f"{path}:1: (root): a circuit spec must be a mapping of sections (task, network, ...)"])

    problems: list[str] = []
    pairs = list(overrides.items()) if isinstance(overrides, Mapping) else []
    if not isinstance(overrides, Mapping):
        for text in overrides:
            try:
                pairs.append(parse_override(text))
            except ValueError as exc:
                problems.append(f"--set {text}: {exc}")
    overridden: dict[str, Any] = {}
    for key, value in pairs:
        try:
            _set_dotted(doc, key, value)
            overridden[key] = value
        except ValueError as exc:
            problems.append(f"--set {key}={value}: {key}: {exc}")
    if problems:
        raise SpecError(problems)

    try:
        return CircuitSpec.model_validate(_plain(doc))
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            dotted = _dotted(err["loc"], doc)
            message = err["msg"].removeprefix("Value error, ")
            source = next(
                (k for k in overridden if dotted == k or dotted.startswith(k + ".") or k.startswith(dotted + ".")),
                None,
            )
            if source is None and not err["loc"] and overridden:  # a cross-field check: name the overrides too
                named = " ".join(f"--set {k}={v}" for k, v in overridden.items())
                problems.append(f"{path} (with {named}): (root): {message}")
                continue
            if source is not None:
                problems.append(f"{path} (--set {source}={overridden[source]}): {dotted}: {message}")
            else:
                line = _line_of(doc, err["loc"])
                problems.append(f"{path}:{line if line is not None else 1}: {dotted}: {message}")
        raise SpecError(problems) from None


def _plain(node: Any) -> Any:
    """ruamel containers -> plain dicts and lists (pydantic validates those strictly)."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# Fields added after runs were stored, whose default is not what those runs used: a stored spec without the field
# gets the value it was run with. spiking.lif_max_rate_hz (default 400 Hz): every lif circuit before it had 200 Hz.
VALUES_BEFORE_FIELD_EXISTED = {("spiking", "lif_max_rate_hz"): 200.0}


def spec_from_json(text: str) -> CircuitSpec:
    """The spec stored inside a model file or a dataset's attrs; a field it predates (`VALUES_BEFORE_FIELD_EXISTED`)
    gets the value its run was made with, not today's default."""
    data = json.loads(text)
    for (section, field), value in VALUES_BEFORE_FIELD_EXISTED.items():
        if isinstance(data.get(section), dict):
            data[section].setdefault(field, value)
    return CircuitSpec.model_validate(data)


def dump_spec_yaml(spec: CircuitSpec) -> str:
    """The fully resolved spec (defaults filled in) as YAML text."""
    buffer = io.StringIO()
    YAML(typ="safe", pure=True).dump(spec.model_dump(mode="json"), buffer)
    return buffer.getvalue()


def with_section_overrides(spec: CircuitSpec, overrides: Sequence[str], sections: Sequence[str]) -> CircuitSpec:
    """``spec`` with ``<section>.<field>=value`` overrides applied to the named analysis sections only.

    The other sections describe a circuit that is already trained, so overriding them is refused. Raises SpecError
    listing every problem.
    """
    if not overrides:
        return spec
    values = {name: getattr(spec, name).model_dump() for name in sections}
    problems: list[str] = []
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ValueError as exc:
            problems.append(f"--set {text}: {exc}")
            continue
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in values:
            allowed = " or ".join(f"{name}.<field>" for name in sections)
            problems.append(f"--set {text}: {key}: only {allowed} can be set here (the circuit is trained)")
            continue
        values[parts[0]][parts[1]] = value
    if problems:
        raise SpecError(problems)
    update = {}
    for name, section in values.items():
        try:
            update[name] = type(getattr(spec, name)).model_validate(section)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                where = ".".join(map(str, err["loc"])) or "(section)"
                problems.append(f"--set: {name}.{where}: {err['msg'].removeprefix('Value error, ')}")
    if problems:
        raise SpecError(problems)
    return spec.model_copy(update=update)

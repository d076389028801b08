"""The circuit spec: shipped specs validate, bad input is reported as file:line: key: message, overrides are typed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import CIRCUITS_DIR

from recircuit.cli import main
from recircuit.spec import CircuitSpec, SpecError, dump_spec_yaml, load_spec, parse_override, spec_from_json

SHIPPED_SPECS = sorted(CIRCUITS_DIR.glob("*.yaml"))

# Line 4: typo'd key; line 6: negative size; line 8: wrong type.
BAD_SPEC = """\
task:
  kind: path_integration
  arena_m: 2.2
  sequence_stpes: 100
network:
  n_exc: -5
  n_inh: 10
  tau_ms: fast
"""


def write(tmp_path: Path, text: str, name: str = "circuit.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return info.value.problems


def test_circuits_folder_is_not_empty():
    assert len(SHIPPED_SPECS) >= 2, f"expected the shipped specs under {CIRCUITS_DIR}"


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: p.name)
def test_shipped_spec_validates(path: Path, capsys):
    spec = load_spec(path)
    assert isinstance(spec, CircuitSpec)
    assert main(["validate", str(path)]) == 0
    assert f"{path}: ok" in capsys.readouterr().out


def test_validate_reports_every_problem_with_its_line_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, BAD_SPEC)
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3, lines
    pattern = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<key>[\w.]+): (?P<message>.+)$")
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    found = {(m["file"], int(m["line"]), m["key"]) for m in parsed}
    assert found == {
        (str(path), 4, "task.sequence_stpes"),
        (str(path), 6, "network.n_exc"),
        (str(path), 8, "network.tau_ms"),
    }
    messages = {m["key"]: m["message"] for m in parsed}
    assert "not permitted" in messages["task.sequence_stpes"]
    assert "greater than 0" in messages["network.n_exc"]
    assert "number" in messages["network.tau_ms"]


def test_override_values_are_yaml_typed():
    assert parse_override("training.steps=7") == ("training.steps", 7)
    assert parse_override("training.learning_rate=1e-3") == ("training.learning_rate", 0.001)
    assert parse_override("network.dale=false") == ("network.dale", False)
    assert parse_override("description=two words") == ("description", "two words")
    assert type(parse_override("a=7")[1]) is int
    assert type(parse_override("a=0.5")[1]) is float
    assert type(parse_override("a=true")[1]) is bool


def test_overrides_reach_the_spec_typed():
    spec = load_spec(
        CIRCUITS_DIR / "path_integration.yaml",
        ["training.steps=7", "training.learning_rate=0.5", "network.dale=false", "network.n_inh=0"],
    )
    assert spec.training.steps == 7 and type(spec.training.steps) is int
    assert spec.training.learning_rate == 0.5
    assert spec.network.dale is False
    assert spec.network.n_inh == 0


def test_bad_override_value_names_the_set_argument(capsys):
    path = CIRCUITS_DIR / "path_integration.yaml"
    assert main(["validate", str(path), "--set", "training.steps=-3"]) == 2
    err = capsys.readouterr().err
    assert "--set training.steps=-3" in err
    assert "training.steps" in err and "greater than 0" in err


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.steps", "--set training.steps: override 'training.steps' must look like dotted.key=value"),
        ("training.steps.x=1", "--set training.steps.x=1: training.steps.x: training.steps is not a section"),
        ("training..steps=1", "--set training..steps=1: override 'training..steps=1' has an empty key"),
    ],
)
def test_malformed_override_names_the_set_argument(override, expected):
    problems = problems_of(CIRCUITS_DIR / "path_integration.yaml", [override])
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_unknown_override_key_is_an_error():
    problems = problems_of(CIRCUITS_DIR / "path_integration.yaml", ["training.stepz=3"])
    assert len(problems) == 1
    assert "--set training.stepz=3" in problems[0] and "not permitted" in problems[0]


def test_missing_file_is_one_clear_message(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert problems_of(missing) == [f"{missing}: file not found"]
    assert main(["validate", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"{missing}: file not found"


def test_yaml_syntax_error_reports_its_line(tmp_path):
    path = write(tmp_path, "task:\n  kind: path_integration\n  arena_m: [2.2\n")
    (problem,) = problems_of(path)
    assert re.match(rf"^{re.escape(str(path))}:\d+: \(yaml\): ", problem), problem


def test_time_step_longer_than_tau_is_rejected(tmp_path):
    path = write(tmp_path, "task:\n  kind: head_direction\n  dt_s: 0.05\nnetwork:\n  tau_ms: 40.0\n")
    (problem,) = problems_of(path)
    assert "dt/tau > 1" in problem
    assert problem.startswith(f"{path}:")


def test_time_step_equal_to_tau_is_allowed(tmp_path):
    path = write(tmp_path, "task:\n  kind: head_direction\n  dt_s: 0.04\nnetwork:\n  tau_ms: 40.0\n")
    assert load_spec(path).alpha == pytest.approx(1.0)


def test_dale_without_inhibitory_units_is_rejected(tmp_path):
    path = write(tmp_path, "task:\n  kind: head_direction\nnetwork:\n  dale: true\n  n_inh: 0\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:3: network: "), problem
    assert "n_inh must be > 0 when dale is true" in problem


def test_dale_without_inhibitory_units_via_override_is_rejected():
    problems = problems_of(CIRCUITS_DIR / "head_direction.yaml", ["network.n_inh=0"])
    assert len(problems) == 1
    assert "n_inh must be > 0 when dale is true" in problems[0]


def test_unknown_task_kind_is_rejected(tmp_path):
    path = write(tmp_path, "task:\n  kind: grid_cells\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:1: task: "), problem
    assert "grid_cells" in problem


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: p.name)
def test_spec_json_round_trip(path: Path):
    spec = load_spec(path, ["network.noise.recurrent_sd=0.05", "training.seed=3"])
    assert spec_from_json(spec.model_dump_json()) == spec


def test_a_stored_spec_older_than_a_field_gets_the_value_its_run_used():
    """A run stored before spiking.lif_max_rate_hz existed was trained at 200 Hz (and 10 mV, which it stored), so it
    loads with that neuron, not today's default (400 Hz); a run that stored the field keeps its own value."""
    import json

    from recircuit.circuit.lif_curve import LIF_CURVE_10MV_200HZ, lif_curve

    stored = json.loads(load_spec(SHIPPED_SPECS[0], ["spiking.membrane_noise_mV=10"]).model_dump_json())
    assert stored["spiking"]["lif_max_rate_hz"] == 400.0
    del stored["spiking"]["lif_max_rate_hz"]
    old = spec_from_json(json.dumps(stored)).spiking
    assert old.lif_max_rate_hz == 200.0
    neuron = (old.membrane_noise_mV, old.tau_m_ms, old.threshold_gap_mV, old.lif_max_rate_hz)
    assert lif_curve(*neuron) is LIF_CURVE_10MV_200HZ
    stored["spiking"]["lif_max_rate_hz"] = 300.0
    assert spec_from_json(json.dumps(stored)).spiking.lif_max_rate_hz == 300.0


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: p.name)
def test_resolved_yaml_round_trip(path: Path, tmp_path):
    spec = load_spec(path, ["training.steps=11"])
    resolved = write(tmp_path, dump_spec_yaml(spec), "resolved.yaml")
    assert load_spec(resolved) == spec


def test_alpha_and_sizes_follow_the_spec():
    spec = load_spec(CIRCUITS_DIR / "path_integration.yaml")
    assert spec.alpha == pytest.approx(1000 * spec.task.dt_s / spec.network.tau_ms)
    assert spec.n_inputs == 2 and spec.n_outputs == spec.task.place_cells.n_cells
    assert spec.network.n_units == spec.network.n_exc + spec.network.n_inh

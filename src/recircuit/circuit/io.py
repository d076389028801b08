"""Build a circuit from its spec; save and load trained circuits (state dict + spec JSON, never a pickled module)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from recircuit.circuit.network import EICircuit
from recircuit.spec import SCHEMA_VERSION, CircuitSpec, spec_from_json
from recircuit.tasks import Task, make_task

MODEL_FILE = "model.pt"


def build_circuit(spec: CircuitSpec, device: str | torch.device = "cpu") -> tuple[EICircuit, Task]:
    """A freshly initialised circuit (weights drawn from training.seed on the CPU) and its task, on ``device``."""
    task = make_task(spec.task, device)
    generator = torch.Generator().manual_seed(spec.training.seed)
    model = EICircuit(spec, task.n_inputs, task.n_cells, task.input_scale, generator).to(device)
    model.task = task
    return model, task


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary name in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(path: str | Path, model: EICircuit, **meta: Any) -> None:
    """model.pt: schema_version, spec JSON, state dict (CPU tensors) and plain metadata (circuit, variant, seed...)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {"schema_version": SCHEMA_VERSION, "spec_json": model.spec.model_dump_json(), "state_dict": state, **meta},
        path,
    )


def model_path(run_dir: str | Path) -> Path:
    """The model.pt of a run folder; a path that is not a folder is taken as the model file itself."""
    path = Path(run_dir)
    return path / MODEL_FILE if path.is_dir() else path


def load_model(run_dir: str | Path, device: str | torch.device = "cpu") -> EICircuit:
    """The trained circuit of a run folder (or a model.pt path), in eval mode, with ``.task`` and ``.meta``."""
    path = model_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained model here (run `recircuit train` first)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    version = payload.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version} is not supported (this recircuit reads {SCHEMA_VERSION})")
    spec = spec_from_json(payload["spec_json"])
    model, _ = build_circuit(spec, "cpu")
    model.load_state_dict(payload["state_dict"])
    model = model.to(device).eval()
    model.task = make_task(spec.task, device)
    model.meta = {k: v for k, v in payload.items() if k not in ("state_dict", "spec_json")}
    return model

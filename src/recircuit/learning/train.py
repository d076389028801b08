"""Training: Adam with a credit-assignment rule (bptt, tbptt, eprop, rflo), resumable checkpoints, a NaN/Inf guard,
and progress lines; trajectories fresh every batch or drawn from a finite training set (training.n_train_trajectories).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from recircuit.circuit.io import MODEL_FILE, atomic_torch_save, build_circuit, load_model, model_path, save_model
from recircuit.learning.rules import make_rule
from recircuit.results import label, provenance, save_dataset, with_sweep_dims
from recircuit.spec import CircuitSpec
from recircuit.tasks import TrialBatch, TrialChunk, make_task

CHECKPOINT_FILE = "checkpoint.pt"
TRAIN_FILE = "train.nc"
TRAIN_SET_SEED = 1_000_000  # the finite training set is drawn from a CPU generator seeded TRAIN_SET_SEED + seed


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or Inf (at optimizer step ``step``, 1-based)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but torch sees no CUDA device (use 'auto' or 'cpu')")
    return torch.device(name)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def task_loss(outputs: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean squared error against the cell code, or cross-entropy against it as a distribution over cells."""
    if kind == "mse":
        return F.mse_loss(outputs, targets)
    return -(torch.linalg.vecdot(targets, torch.log_softmax(outputs, dim=-1)) / targets.sum(-1)).mean()


def error_variable(task_kind: str) -> tuple[str, str, str]:
    """(variable name, long_name, units) of the decoding error of a task."""
    if task_kind == "path_integration":
        return "position_error", "decoded position error", "cm"
    return "heading_error", "absolute decoded heading error", "deg"


def select_trials(trials: TrialBatch, index: torch.Tensor) -> TrialBatch:
    """The trials of ``trials`` at ``index`` (a 1-D index tensor over the batch)."""
    return TrialBatch(**{name: getattr(trials, name)[index] for name in TrialBatch.__dataclass_fields__})


def draw_from_set(train_set: TrialBatch, batch: int, generator: torch.Generator) -> TrialBatch:
    """A training batch from a finite training set: without replacement within a batch, with replacement when the
    set is smaller than a batch."""
    n, device = train_set.inputs.shape[0], train_set.inputs.device
    index = (
        torch.randperm(n, generator=generator, device=device)[:batch]
        if batch <= n
        else torch.randint(n, (batch,), generator=generator, device=device)
    )
    return select_trials(train_set, index)


TRAJECTORY_CHUNK_AGENTS = 1024  # agents moved per call of the trajectory loop during training


def chunk_stop(step: int, steps: int, checkpoint_every: int, batch: int) -> int:
    """End (exclusive) of the run of training steps whose batches are drawn and moved together from ``step``: about
    TRAJECTORY_CHUNK_AGENTS agents, never past a checkpoint, so a resumed run draws what an uninterrupted one does."""
    size = max(1, -(-TRAJECTORY_CHUNK_AGENTS // batch))
    next_checkpoint = (step // checkpoint_every + 1) * checkpoint_every
    return min(step + size, next_checkpoint, steps)


def training_set(spec: CircuitSpec, n_trials: int | None = None, device: str | torch.device = "cpu") -> TrialBatch:
    """The finite training set: ``n_trials`` (default training.n_train_trajectories) fixed trajectories.

    Drawn once, as one batch of task.sequence_steps steps, on the CPU (so identical on every device) from its own
    generator seeded TRAIN_SET_SEED + training.seed; then moved to ``device``. Training samples its batches from it
    (fresh noise every batch).
    """
    n = n_trials if n_trials is not None else spec.training.n_train_trajectories
    if n is None:
        raise ValueError("training.n_train_trajectories is null: there is no finite training set")
    generator = torch.Generator().manual_seed(TRAIN_SET_SEED + spec.training.seed)
    trials = make_task(spec.task, "cpu").sample(n, spec.task.sequence_steps, generator)
    return TrialBatch(**{name: getattr(trials, name).to(device) for name in TrialBatch.__dataclass_fields__})


def load_initial_weights(model: torch.nn.Module, init_from: str | Path) -> str:
    """Copy the trained weights of the run folder (or model.pt) ``init_from`` into ``model``; return its path.

    The two specs must build the same network (the same parameters with the same shapes, and the same
    ``network.dale``, which decides what the stored weights mean); anything else, task and training included, may
    differ.
    """
    source, path = load_model(init_from, "cpu"), model_path(init_from)
    if source.spec.network.dale != model.spec.network.dale:
        raise ValueError(
            f"{path}: network.dale is {source.spec.network.dale} there and {model.spec.network.dale} in this spec; "
            "--init-from needs the same network"
        )
    theirs, ours = source.state_dict(), model.state_dict()
    shapes = {
        name: tuple(tuple(state[name].shape) if name in state else "absent" for state in (theirs, ours))
        for name in set(theirs) | set(ours)
    }
    mismatched = sorted(f"{name}: {there} there, {here} here" for name, (there, here) in shapes.items()
                        if there != here)
    if mismatched:
        raise ValueError(
            f"{path}: its circuit is not the network this spec builds (--init-from needs the same network.n_exc, "
            f"n_inh, normalization and task cell counts): {'; '.join(mismatched)}"
        )
    with torch.no_grad():
        for name, tensor in ours.items():
            tensor.copy_(theirs[name])
    return str(path)


def train(
    spec: CircuitSpec,
    out_dir: str | Path,
    *,
    circuit: str,
    variant: str = "default",
    init_from: str | Path | None = None,
    log: Callable[[str], None] = print,
    on_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> Path:
    """Train the circuit of ``spec`` into ``out_dir`` (model.pt + train.nc); resume from a checkpoint if present.

    ``init_from`` (a run folder or model.pt) starts from that circuit's trained weights instead of a fresh
    initialisation, with a fresh Adam state: training continues under this spec (its steps, learning rate, task).
    ``on_step(step, model)`` is called after every optimizer step (tests use it to check Dale's signs).
    """
    out_dir = Path(out_dir)
    cfg = spec.training
    device = resolve_device(cfg.device)
    model, task = build_circuit(spec, device)
    initialized_from = load_initial_weights(model, init_from) if init_from is not None else ""
    out_dir.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    steps, batch, seq = cfg.steps, cfg.batch_size, spec.task.sequence_steps
    rule = make_rule(spec, model.n_units, task.n_cells, device)
    train_set = training_set(spec, device=device) if cfg.n_train_trajectories is not None else None
    losses = np.full(steps, np.nan, dtype=np.float64)
    grad_norms = np.full(steps, np.nan, dtype=np.float64)
    logged_steps: list[int] = []
    logged_errors: list[float] = []
    start = 0

    checkpoint = out_dir / CHECKPOINT_FILE
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["spec_json"] != spec.model_dump_json():
            raise ValueError(
                f"{checkpoint}: this checkpoint was made with a different spec; delete it or train into another --out"
            )
        if state.get("initialized_from", "") != initialized_from:
            raise ValueError(
                f"{checkpoint}: this checkpoint started from {state.get('initialized_from') or 'a fresh circuit'}, "
                f"not {initialized_from or 'a fresh circuit'}; delete it or train into another --out"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())
        start = int(state["step"])
        losses[:start] = state["loss"][:start].numpy()
        grad_norms[:start] = state["grad_norm"][:start].numpy()
        logged_steps, logged_errors = list(state["logged_steps"]), list(state["logged_errors"])
        log(f"resuming {out_dir} from step {start}/{steps}")

    error_name, _, error_units = error_variable(task.kind)
    log(
        f"training {circuit}/{variant} seed {cfg.seed}: {model.n_units} units ({model.n_exc} E, {model.n_inh} I), "
        f"{task.kind}, {steps} steps x batch {batch} x {seq} time steps on {device_description(device)}, "
        f"rule {cfg.rule}, activation {spec.network.activation}"
        + (
            f" (membrane noise {spec.spiking.membrane_noise_mV:g} mV, 1/lambda {spec.spiking.lif_max_rate_hz:g} Hz)"
            if spec.network.activation == "lif"
            else ""
        )
        + (f", finite training set of {cfg.n_train_trajectories} trajectories" if train_set is not None else "")
        + (f", starting from the trained circuit {initialized_from}" if initialized_from and start == 0 else "")
    )
    if (
        cfg.loss == "mse"
        and task.kind == "path_integration"
        and spec.task.place_cells.code_gain == 1.0
        and spec.network.input_init == "unit_drive"
    ):
        log(
            "note: MSE on the place-cell code at task.place_cells.code_gain 1 (code peak about 0.04) learns slowly "
            "or not at all with Adam from network.input_init unit_drive; a gain near 100 learns, and so does "
            "gain 1 from input_init fan_in (see the spec's descriptions)"
        )
    loss_buffer = torch.zeros(steps, device=device)
    norm_buffer = torch.zeros(steps, device=device)
    max_norm = cfg.grad_clip_norm if cfg.grad_clip_norm > 0 else float("inf")
    started, last_time, last_step = time.perf_counter(), time.perf_counter(), start

    def check_finite(upto: int) -> None:
        seen = slice(last_step, upto)
        losses[seen] = loss_buffer[seen].double().cpu().numpy()
        grad_norms[seen] = norm_buffer[seen].double().cpu().numpy()
        bad = ~np.isfinite(losses[seen]) | ~np.isfinite(grad_norms[seen])
        if bad.any():
            first = last_step + int(np.argmax(bad))
            raise TrainingDiverged(
                f"{circuit}/{variant} seed {cfg.seed}: loss or gradient became non-finite at step {first + 1} "
                f"(loss {losses[first]}, gradient norm {grad_norms[first]}); lower training.learning_rate or set "
                "training.grad_clip_norm. No model was saved.",
                step=first + 1,
            )

    diverged_at = 0
    chunk, chunk_start, chunk_end = None, start, start
    try:
        for step in range(start, steps):
            if train_set is None:  # the trajectories of several steps are drawn first, then each step's noise
                if step == chunk_end:
                    chunk_start, chunk_end = step, chunk_stop(step, steps, cfg.checkpoint_every_steps, batch)
                    chunk = TrialChunk(task, batch, seq, [generator], chunk_end - step)
                trials = chunk.batches(step - chunk_start)[0]
            else:
                trials = draw_from_set(train_set, batch, generator)
            noise = model.draw_noise(batch, seq, generator)
            outputs, _ = model(trials.inputs, trials.initial_code, noise, rule=rule)
            loss = task_loss(outputs, trials.targets, cfg.loss)
            optimizer.zero_grad(set_to_none=True)
            (loss + model.homeostatic_loss).backward()  # the homeostatic loss reaches only the normalizing interneurons
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            loss_buffer[step] = loss.detach()
            norm_buffer[step] = norm.detach()
            if torch.isfinite(norm):  # a non-finite step is never applied; check_finite reports it
                optimizer.step()
            done = step + 1
            if on_step is not None:
                on_step(done, model)
            if done % cfg.log_every_steps == 0 or done == steps:
                check_finite(done)
                with torch.no_grad():
                    error = task.error(task.decode(outputs), trials.states).mean().item()
                now = time.perf_counter()
                rate = (done - last_step) / max(now - last_time, 1e-9)
                last_time, last_step = now, done
                logged_steps.append(done)
                logged_errors.append(error)
                log(f"step {done:>6}/{steps}  loss {losses[step]:.4e}  error {error:7.2f} {error_units}  {rate:6.1f} steps/s")
            if done % cfg.checkpoint_every_steps == 0 and done < steps:
                check_finite(done)
                last_step = done
                atomic_torch_save(
                    {
                        "spec_json": spec.model_dump_json(),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(),
                        "step": done,
                        "loss": torch.from_numpy(losses),
                        "grad_norm": torch.from_numpy(grad_norms),
                        "logged_steps": logged_steps,
                        "logged_errors": logged_errors,
                        "initialized_from": initialized_from,
                    },
                    checkpoint,
                )
        check_finite(steps)
    except TrainingDiverged as exc:
        if cfg.on_divergence == "stop":
            raise
        diverged_at = exc.step
        losses[diverged_at:] = np.nan
        grad_norms[diverged_at:] = np.nan
        log(f"diverged at step {diverged_at}; recording it (training.on_divergence = record)")
    wall = time.perf_counter() - started

    path = write_run(
        spec, out_dir, model, circuit=circuit, variant=variant, device=device, losses=losses, grad_norms=grad_norms,
        logged_steps=logged_steps, logged_errors=logged_errors, wall_time_s=wall, resumed_from_step=start,
        diverged_at_step=diverged_at, extra_attrs={"initialized_from": initialized_from},
    )
    log(f"saved {path} and {out_dir / TRAIN_FILE} ({wall:.1f} s)")
    return path


def write_run(
    spec: CircuitSpec,
    out_dir: Path,
    model: torch.nn.Module,
    *,
    circuit: str,
    variant: str,
    device: torch.device,
    losses: np.ndarray,
    grad_norms: np.ndarray,
    logged_steps: list[int],
    logged_errors: list[float],
    wall_time_s: float,
    resumed_from_step: int,
    diverged_at_step: int = 0,
    extra_attrs: dict | None = None,
) -> Path:
    """Write train.nc, then model.pt (last: its presence means the run is complete), and drop the checkpoint."""
    cfg = spec.training
    error_name, error_long, error_units = error_variable(spec.task.kind)
    steps = len(losses)
    ds = xr.Dataset(
        {
            "loss": label(xr.DataArray(losses, dims="step", attrs={"loss_function": cfg.loss}), "training loss", "1"),
            "grad_norm": label(xr.DataArray(grad_norms, dims="step"), "gradient norm before clipping", "1"),
            error_name: label(
                xr.DataArray(np.asarray(logged_errors, dtype=np.float64), dims="logged_step"),
                f"{error_long} on the training batch",
                error_units,
            ),
        },
        coords={
            "step": label(xr.DataArray(np.arange(1, steps + 1), dims="step"), "optimizer step", "1"),
            "logged_step": label(
                xr.DataArray(np.asarray(logged_steps, dtype=np.int64), dims="logged_step"), "optimizer step", "1"
            ),
        },
        attrs={
            **provenance(spec, circuit=circuit, variant=variant, seed=cfg.seed, device=device_description(device)),
            "wall_time_s": float(wall_time_s),
            "resumed_from_step": int(resumed_from_step),
            "diverged": int(diverged_at_step > 0),
            "diverged_at_step": int(diverged_at_step),
            **(extra_attrs or {}),
        },
    )
    save_dataset(with_sweep_dims(ds, circuit=circuit, variant=variant, seed=cfg.seed), out_dir / TRAIN_FILE)
    meta = {"circuit": circuit, "variant": variant, "seed": cfg.seed, "steps_trained": steps,
            "diverged_at_step": int(diverged_at_step)}
    save_model(out_dir / MODEL_FILE, model, **meta)
    (out_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    return out_dir / MODEL_FILE

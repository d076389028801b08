"""Train K circuits of one architecture at once, as one batched network over stacked weights.

Members may differ in their seed and in what only changes their data or noise (noise SDs, occupancy bias,
turn bias, input-gain spread); everything that shapes the network or its dynamics must match. Each member draws
its trajectories (or its batches from its own finite training set, training.n_train_trajectories) and noise from
its own generator in the same order as `train` does, keeps its own Adam state (Adam is element-wise, so one
optimizer over stacked parameters is K independent optimizers) and its own gradient-norm clip, and is written to
its own run folder exactly as `train` writes it.

Without inhibitory normalization the circuit's own forward pass runs on the stacked parameters directly (every
matmul a batched matmul over members, the time loop the fused BPTT scan of recircuit.circuit.scan); with it, the
forward pass is torch.func.vmap over members. Members equal training alone: bit for bit where the batched matmuls
round as the single ones do (they do on the CPUs tested), to float32 rounding otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from recircuit.circuit.io import build_circuit
from recircuit.circuit.network import Noise
from recircuit.learning.train import (
    chunk_stop,
    device_description,
    draw_from_set,
    error_variable,
    resolve_device,
    task_loss,
    training_set,
    write_run,
)
from recircuit.spec import CircuitSpec
from recircuit.tasks import TrialChunk

# Spec keys members may differ in: they change the data or the noise, not the network or its dynamics.
PER_MEMBER_KEYS = (
    "training.seed",
    "network.noise.recurrent_sd",
    "network.noise.input_sd",
    "task.drift_to_center",
    "task.turn_bias",
    "task.input_gain",
    "evaluation",
    "description",
)


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not any(name == k for k in PER_MEMBER_KEYS):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _stack_noise(per_member: list, shape: tuple[int, ...], any_on: bool, device) -> torch.Tensor:
    """Members' noise stacked for vmap: zeros for a member without that noise (adding zeros changes nothing); a
    length-K placeholder when no member has it (the batched function then passes None)."""
    if not any_on:
        return torch.zeros(len(per_member), device=device)
    return torch.stack([n if n is not None else torch.zeros(shape, device=device) for n in per_member])


class _StackedMembers(nn.Module):
    """K circuits of the template's architecture, from parameters stacked over members (functional_call with
    ``circuit.<name>`` keys): one forward pass with a leading member dimension (batched matmuls, fused scan), then
    each member's readout and task loss on its own, as `train` computes them. Forward returns (losses (K,), outputs
    per member); keeping members apart after the scan means no (members, batch, time, cells) tensor is formed."""

    def __init__(self, circuit: torch.nn.Module, loss_kind: str):
        super().__init__()
        self.circuit, self.loss_kind = circuit, loss_kind

    def forward(self, inputs, codes, noise, targets) -> tuple[torch.Tensor, list[torch.Tensor]]:
        circuit = self.circuit
        rates = circuit.run(inputs, circuit.initial_rates(codes), noise)
        members = zip(rates.unbind(0), circuit.output_weight().unbind(0), circuit.output_bias.unbind(0))
        outputs = [circuit.readout(member_rates, weights=(weight, bias)) for member_rates, weight, bias in members]
        losses = [task_loss(out, target, self.loss_kind) for out, target in zip(outputs, targets.unbind(0))]
        return torch.stack(losses), outputs


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """torch.stack, without the copy when the tensors already lie one after another in one buffer (the per-member
    slices of one joined batch that `TrialChunk.batches` returns)."""
    first, size = tensors[0], tensors[0].numel()
    adjacent = all(
        t.is_contiguous() and t.shape == first.shape and t.dtype == first.dtype
        and t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        and t.storage_offset() == first.storage_offset() + k * size
        for k, t in enumerate(tensors)
    )
    if not (adjacent and first.is_contiguous()):
        return torch.stack(list(tensors))
    return first.as_strided((len(tensors), *first.shape), (size, *first.stride()), first.storage_offset())


def _draw_chunks(tasks, generators, batch: int, seq: int, n_batches: int, shared_task: bool) -> list[TrialChunk]:
    """The next ``n_batches`` training batches of every member, drawn from its own generator as `train` draws them;
    one trajectory loop over all members' agents when they share the task."""
    if shared_task:
        return [TrialChunk(tasks[0], batch, seq, generators, n_batches)]
    return [TrialChunk(task, batch, seq, [generator], n_batches) for task, generator in zip(tasks, generators)]


def check_compatible(specs: Sequence[CircuitSpec]) -> None:
    """Raise ValueError naming every spec key in which members differ but must not."""
    flats = [_flatten(s.model_dump(mode="json")) for s in specs]
    shared = [k for k in flats[0] if not any(k == p or k.startswith(p + ".") for p in PER_MEMBER_KEYS)]
    differing = sorted({k for k in shared for f in flats[1:] if f.get(k) != flats[0][k]})
    if differing:
        raise ValueError(
            "circuits of one ensemble must share their architecture and training settings; they differ in "
            + ", ".join(differing)
        )
    if specs[0].training.rule != "bptt":
        raise ValueError("ensemble training supports training.rule = bptt only")


def train_ensemble(
    specs: Sequence[CircuitSpec],
    out_dirs: Sequence[str | Path],
    *,
    circuit: str,
    variants: Sequence[str],
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Train every (spec, out_dir, variant) member together; write model.pt + train.nc into each out_dir."""
    if not (len(specs) == len(out_dirs) == len(variants)) or not specs:
        raise ValueError("specs, out_dirs and variants must be non-empty and of equal length")
    check_compatible(specs)
    cfg = specs[0].training
    device = resolve_device(cfg.device)
    members = [build_circuit(spec, device) for spec in specs]
    models, tasks = [m for m, _ in members], [t for _, t in members]
    template = models[0]
    params, buffers = stack_module_state(models)
    optimizer = torch.optim.Adam(params.values(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    generators = [torch.Generator(device).manual_seed(s.training.seed) for s in specs]
    k, steps, batch, seq = len(specs), cfg.steps, cfg.batch_size, specs[0].task.sequence_steps
    max_norm = cfg.grad_clip_norm if cfg.grad_clip_norm > 0 else float("inf")
    shared_task = all(spec.task == specs[0].task for spec in specs)
    any_recurrent = any(s.network.noise.recurrent_sd > 0 for s in specs)
    any_input = any(s.network.noise.input_sd > 0 for s in specs)

    train_sets = (
        [training_set(spec, device=device) for spec in specs] if cfg.n_train_trajectories is not None else None
    )

    def member_loss(p, b, inputs, code, rec_noise, in_noise, targets):
        noise = Noise(rec_noise if any_recurrent else None, in_noise if any_input else None)
        outputs, _ = functional_call(template, (p, b), (inputs, code, noise))
        return task_loss(outputs, targets, cfg.loss), template.homeostatic_loss, outputs

    stacked = _StackedMembers(template, cfg.loss)
    # column signs and mask are the same for every member: they broadcast unstacked against stacked weights
    shared = {f"circuit.{n}": t for n, t in template.named_buffers()}

    def stacked_loss(p, b, inputs, codes, rec_noise, in_noise, targets):
        noise = Noise(rec_noise if any_recurrent else None, in_noise if any_input else None)
        arguments = (inputs, codes, noise, targets)
        loss, outputs = functional_call(stacked, ({f"circuit.{n}": t for n, t in p.items()}, shared), arguments)
        return loss, torch.zeros(k, device=device), outputs

    batched = stacked_loss if template.normalization is None else vmap(member_loss)
    losses = np.full((k, steps), np.nan)
    grad_norms = np.full((k, steps), np.nan)
    logged_steps: list[int] = []
    logged_errors: list[list[float]] = []
    diverged_at = [0] * k
    frozen: dict[int, dict[str, torch.Tensor]] = {}
    log(f"training an ensemble of {k} {circuit} circuits ({template.n_units} units), {steps} steps x batch {batch}"
        f" x {seq} time steps on {device_description(device)}"
        + (f", finite training sets of {cfg.n_train_trajectories} trajectories" if train_sets is not None else ""))
    started, last = time.perf_counter(), time.perf_counter()
    chunks, chunk_start, chunk_end = [], 0, 0
    for step in range(steps):
        if train_sets is None:
            if step == chunk_end:
                chunk_start, chunk_end = step, chunk_stop(step, steps, cfg.checkpoint_every_steps, batch)
                chunks = _draw_chunks(tasks, generators, batch, seq, chunk_end - step, shared_task)
            trials = [trial for chunk in chunks for trial in chunk.batches(step - chunk_start)]
        else:
            trials = [draw_from_set(s, batch, generator) for s, generator in zip(train_sets, generators)]
        noises = [model.draw_noise(batch, seq, generator) for model, generator in zip(models, generators)]
        rec = _stack_noise([n.recurrent for n in noises], (seq, batch, template.n_units), any_recurrent, device)
        inp = _stack_noise([n.input for n in noises], tuple(trials[0].inputs.shape), any_input, device)
        inputs = _stack([t.inputs for t in trials])
        codes = _stack([t.initial_code for t in trials])
        targets = _stack([t.targets for t in trials])
        loss, homeostatic, outputs = batched(params, buffers, inputs, codes, rec, inp, targets)
        optimizer.zero_grad(set_to_none=True)
        (loss + homeostatic).sum().backward()
        with torch.no_grad():
            norms = torch.sqrt(sum((g.grad.flatten(1).double() ** 2).sum(1) for g in params.values())).float()
            scale = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
            finite = torch.isfinite(norms) & torch.isfinite(loss)
            for p in params.values():
                p.grad.mul_(torch.where(finite, scale, 0.0).view(-1, *[1] * (p.dim() - 1)))
                p.grad.nan_to_num_(0.0)
            for member in (~finite).nonzero().flatten().tolist():
                if member not in frozen:  # keep the weights it had before its first non-finite step
                    frozen[member] = {name: p[member].clone() for name, p in params.items()}
                    diverged_at[member] = step + 1
        optimizer.step()
        losses[:, step] = loss.detach().double().cpu().numpy()
        grad_norms[:, step] = norms.double().cpu().numpy()
        if frozen:
            with torch.no_grad():
                for member, saved in frozen.items():
                    for name, p in params.items():
                        p[member].copy_(saved[name])
        done = step + 1
        if done % cfg.log_every_steps == 0 or done == steps:
            with torch.no_grad():
                errors = [tasks[m].error(tasks[m].decode(outputs[m]), trials[m].states).mean().item() for m in range(k)]
            now = time.perf_counter()
            logged_steps.append(done)
            logged_errors.append(errors)
            unit = error_variable(tasks[0].kind)[2]
            log(f"step {done:>6}/{steps}  loss {np.nanmean(losses[:, step]):.4e} (mean of {k})  error "
                f"{np.nanmean(errors):7.2f} {unit}  {k * cfg.log_every_steps / max(now - last, 1e-9):6.1f} member-steps/s")
            last = now
    wall = time.perf_counter() - started
    paths = []
    for member, (spec, out_dir, variant, model) in enumerate(zip(specs, out_dirs, variants, models)):
        with torch.no_grad():
            for name, p in params.items():
                dict(model.named_parameters())[name].copy_(p[member])
        if diverged_at[member]:
            log(f"member {member} ({variant}, seed {spec.training.seed}) diverged at step {diverged_at[member]}")
        paths.append(write_run(
            spec, Path(out_dir), model, circuit=circuit, variant=variant, device=device,
            losses=losses[member], grad_norms=grad_norms[member], logged_steps=logged_steps,
            logged_errors=[e[member] for e in logged_errors], wall_time_s=wall / k, resumed_from_step=0,
            diverged_at_step=diverged_at[member], extra_attrs={"ensemble_size": k, "ensemble": json.dumps(list(variants))},
        ))
    log(f"saved {k} circuits ({wall:.1f} s, {k * steps / wall:.1f} member-steps/s)")
    return paths

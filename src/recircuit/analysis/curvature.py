"""Hessian spectrum of the exact training loss: HVPs (torch.func), Lanczos extremes (scipy eigsh), Hutchinson trace.

The loss is always the *exact* one (plain BPTT forward, ``rule=None``; never a rule's surrogate gradient), the same
``recircuit.learning.train.task_loss`` as training, on a fixed batch with frozen (pre-drawn) noise, so the Hessian is
deterministic. It is taken with respect to a subset of the parameters (``recurrent_raw`` by default, as Liu et al.).

Reparametrisation (Dale's law): the dynamics use W = |raw| * mask * sign. The Hessian here is with respect to the
*free* entries of the raw tensors (masked entries, e.g. the zero diagonal of recurrent_raw, are excluded). On those
entries dW/draw = D = diag(sign(raw) * sign) = +-1 and the second derivative of |.| vanishes away from 0, so
H_raw = D H_W D with D orthogonal: eigenvalues and trace equal those with respect to the effective nonzero weights.

Eigenvalues are signed: Lanczos ``which='LA'`` gives the largest (algebraic) and ``which='SA'`` the smallest
eigenvalue; never |lambda| of the dominant eigenvalue (what power iteration returns).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch.func import functional_call, grad, jvp, vjp

from recircuit.circuit.network import EICircuit, Noise
from recircuit.learning.train import task_loss
from recircuit.tasks import TrialBatch

HVP_MODES = ("forward_over_reverse", "reverse_over_reverse")
REPARAMETRISATION_NOTE = (
    "Hessian w.r.t. the free (unmasked) entries of the raw parameters; under Dale's law W = |raw|*mask*sign, so "
    "H_raw = D H_W D with D = diag(+-1): eigenvalues and trace equal those w.r.t. the effective nonzero weights"
)


@dataclass
class HessianOperator:
    """The Hessian of ``loss(*point)`` restricted to the entries where ``free`` is True, as a matrix-free operator.

    loss: function of the tensors in ``point`` (a tuple) returning a scalar; mode: forward_over_reverse (jvp of
    grad, nothing cached) or reverse_over_reverse (vjp of grad, graph built once and reused). n_hvp counts products.
    """

    loss: Callable[..., torch.Tensor]
    point: tuple[torch.Tensor, ...]
    free: tuple[torch.Tensor, ...]
    mode: str = "forward_over_reverse"
    names: tuple[str, ...] = ()
    n_hvp: int = 0
    _vjp_fn: Callable | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in HVP_MODES:
            raise ValueError(f"unknown HVP mode {self.mode!r}; known: {', '.join(HVP_MODES)}")
        if len(self.point) != len(self.free) or any(p.shape != m.shape for p, m in zip(self.point, self.free)):
            raise ValueError("point and free masks must have the same shapes")
        self.free = tuple(m.to(torch.bool) for m in self.free)

    @property
    def size(self) -> int:
        """Number of free coordinates P (the Hessian is P x P)."""
        return int(sum(int(m.sum()) for m in self.free))

    @property
    def dtype(self) -> torch.dtype:
        return self.point[0].dtype

    def embed(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A flat vector over the free coordinates -> tensors shaped like ``point`` (zeros on masked entries)."""
        out, offset = [], 0
        for p, m in zip(self.point, self.free):
            full = torch.zeros_like(p)
            count = int(m.sum())
            full[m] = flat[offset : offset + count].to(p)
            out.append(full)
            offset += count
        return tuple(out)

    def restrict(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Tensors shaped like ``point`` -> the flat vector of their free entries."""
        return torch.cat([t[m] for t, m in zip(tensors, self.free)])

    def value(self) -> float:
        with torch.no_grad():
            return float(self.loss(*self.point))

    def gradient(self) -> torch.Tensor:
        """Flat gradient over the free coordinates."""
        g = grad(self.loss, argnums=tuple(range(len(self.point))))(*self.point)
        return self.restrict(g)

    def hvp(self, flat: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector v over the free coordinates."""
        tangents = self.embed(flat)
        argnums = tuple(range(len(self.point)))
        if self.mode == "forward_over_reverse":
            try:
                out = jvp(grad(self.loss, argnums=argnums), self.point, tangents)[1]
            except RuntimeError as exc:
                if "ZeroTensor" not in str(exc):
                    raise
                raise RuntimeError(
                    "forward-over-reverse HVP failed inside torch (F.mse_loss has no working forward-mode double "
                    "backward in this torch version); use hvp_mode reverse_over_reverse"
                ) from exc
        else:
            if self._vjp_fn is None:
                _, self._vjp_fn = vjp(grad(self.loss, argnums=argnums), *self.point)
            out = self._vjp_fn(tangents)
        self.n_hvp += 1
        return self.restrict(out)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """numpy float64 in and out (for scipy)."""
        flat = torch.as_tensor(np.ascontiguousarray(v).ravel(), dtype=self.dtype, device=self.point[0].device)
        return self.hvp(flat).detach().cpu().numpy().astype(np.float64)

    def linear_operator(self, shift: float = 0.0) -> LinearOperator:
        """H - shift I as a scipy LinearOperator."""
        matvec = self.matvec if shift == 0.0 else lambda v: self.matvec(v) - shift * np.ravel(v)
        return LinearOperator((self.size, self.size), matvec=matvec, dtype=np.float64)

    def dense(self) -> torch.Tensor:
        """The dense P x P Hessian by torch.func.hessian (small problems and tests only)."""
        argnums = tuple(range(len(self.point)))
        blocks = torch.func.hessian(self.loss, argnums=argnums)(*self.point)
        rows = []
        for i, (pi, mi) in enumerate(zip(self.point, self.free)):
            row = []
            for j, (pj, mj) in enumerate(zip(self.point, self.free)):
                block = blocks[i][j].reshape(pi.numel(), pj.numel())
                row.append(block[mi.flatten()][:, mj.flatten()])
            rows.append(torch.cat(row, 1))
        return torch.cat(rows, 0)


def exact_loss_operator(
    model: EICircuit,
    trials: TrialBatch,
    noise: Noise,
    loss_kind: str,
    parameters: Sequence[str] = ("recurrent_raw",),
    mode: str = "forward_over_reverse",
    dtype: torch.dtype = torch.float64,
) -> HessianOperator:
    """Hessian operator of task_loss(model(trials, frozen noise), targets) w.r.t. ``parameters`` (exact BPTT loss).

    The model is copied and cast to ``dtype``; the batch and noise are cast too. Masked entries (the zero diagonal
    of recurrent_raw) are not coordinates.
    """
    named = dict(model.named_parameters())
    unknown = [p for p in parameters if p not in named]
    if unknown or not parameters:
        raise ValueError(f"unknown Hessian parameter(s) {unknown or '(none)'}; this model has {', '.join(named)}")
    exact = copy.deepcopy(model).to(dtype)
    exact.requires_grad_(False)
    inputs, code, targets = (t.to(dtype) for t in (trials.inputs, trials.initial_code, trials.targets))
    frozen = Noise(
        noise.recurrent.to(dtype) if noise.recurrent is not None else None,
        noise.input.to(dtype) if noise.input is not None else None,
    )
    params = dict(exact.named_parameters())
    rest = {n: p.detach() for n, p in params.items() if n not in parameters}
    names = tuple(parameters)

    def loss(*values: torch.Tensor) -> torch.Tensor:
        outputs, _ = functional_call(exact, {**rest, **dict(zip(names, values))}, (inputs, code, frozen))
        return task_loss(outputs, targets, loss_kind)

    point = tuple(params[n].detach().clone() for n in names)
    free = tuple(
        (exact.recurrent_mask != 0) if n == "recurrent_raw" else torch.ones_like(params[n], dtype=torch.bool)
        for n in names
    )
    return HessianOperator(loss, point, free, mode=mode, names=names)


@dataclass(frozen=True)
class Eigen:
    """A signed extreme eigenvalue, the HVPs it took, and whether ARPACK converged to ``tol``."""

    value: float
    n_hvp: int
    converged: bool


def extreme_eigenvalue(
    op: HessianOperator, which: str, tol: float = 1e-6, ncv: int = 20, seed: int = 0, max_restarts: int = 300,
    shift: float = 0.0,
) -> Eigen:
    """Largest ('LA') or smallest ('SA') algebraic eigenvalue by implicitly restarted Lanczos (scipy eigsh).

    ARPACK's ``tol`` is relative to the eigenvalue it returns. The eigenvalue is computed for H - shift I and
    returned plus ``shift``; with shift = the top eigenvalue, the smallest one is accurate to ``tol`` times the
    spectrum's spread (top - bottom) instead of ``tol`` times its own magnitude. A small negative eigenvalue
    next to a cluster of near-zero ones otherwise needs an absolute accuracy of about tol x |lambda_min| and
    many times more HVPs. (The Krylov space does not depend on the shift, only the stopping rule does.)
    The start vector is a seeded N(0, 1) draw, so repeated calls give the same answer. If ARPACK does not reach
    ``tol`` within ``max_restarts`` restarts a RuntimeError is raised (never a silently wrong value).
    """
    if which not in ("LA", "SA"):
        raise ValueError("which must be 'LA' (largest) or 'SA' (smallest algebraic)")
    n = op.size
    start = op.n_hvp
    v0 = np.random.default_rng(seed).standard_normal(n)
    if n <= 2:  # ARPACK needs k < n; tiny problems are solved densely
        value = float(torch.linalg.eigvalsh(op.dense())[-1 if which == "LA" else 0])
        return Eigen(value, 0, True)
    try:
        values = eigsh(
            op.linear_operator(shift), k=1, which=which, tol=tol, v0=v0, ncv=min(max(ncv, 3), n - 1),
            maxiter=max_restarts, return_eigenvectors=False,
        )
    except ArpackNoConvergence as exc:
        raise RuntimeError(
            f"Lanczos ({which}) did not converge to tol {tol} in {op.n_hvp - start} HVPs; raise "
            "curvature.lanczos_ncv or loosen curvature.lanczos_tol"
        ) from exc
    return Eigen(float(values[0]) + shift, op.n_hvp - start, True)


def hutchinson_trace(op: HessianOperator, n_probes: int, seed: int = 0) -> tuple[float, float, np.ndarray]:
    """tr(H) by Hutchinson with a fixed number of Rademacher probes: (mean, standard error, per-probe v.Hv)."""
    if n_probes < 2:
        raise ValueError("Hutchinson needs at least 2 probes for a standard error")
    generator = torch.Generator().manual_seed(seed)
    samples = np.empty(n_probes)
    for i in range(n_probes):
        v = (torch.randint(0, 2, (op.size,), generator=generator) * 2 - 1).to(op.dtype).to(op.point[0].device)
        samples[i] = float(v @ op.hvp(v))
    return float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(n_probes)), samples


def power_iteration(
    op: HessianOperator, tol: float = 1e-3, max_iter: int = 100, seed: int = 0
) -> tuple[float, int, list[float]]:
    """PyHessian-style power iteration (for comparison only): Rayleigh quotient v.Hv, v <- Hv/|Hv|, stop when the
    relative change < tol. Converges to the eigenvalue of largest *magnitude* (with its sign). Returns
    (value, HVPs, history)."""
    v = torch.as_tensor(np.random.default_rng(seed).standard_normal(op.size), dtype=op.dtype)
    v = v / v.norm()
    value, history = None, []
    for _ in range(max_iter):
        hv = op.hvp(v)
        new = float(v @ hv)
        history.append(new)
        v = hv / hv.norm()
        if value is not None and abs(new - value) / (abs(value) + 1e-6) < tol:
            value = new
            break
        value = new
    return float(value), len(history), history


def time_per_call(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))

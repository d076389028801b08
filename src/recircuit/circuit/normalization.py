"""Inhibitory normalization of the excitatory drive, and of the back-propagated errors (Eyono et al. 2026).

A fast, stateless inhibitory population (DANN style, Cornford et al. 2021) reads the presynaptic activity
x = [h_{t-1}; u_t; 1] and acts on the drive a = W_E x of the excitatory units within the same time step:

    s = W_EI (W_IX sg(x))                           subtractive: W_IX rows = mean row of W_E at init, W_EI row-stochastic
    sigma = sqrt(B_EI (B_IX sg(x))^2 + eps)         divisive: B_IX from the SVD of the centred W_E, B_EI = 1/n_E
    z = ErrNorm((a - sg(s)) / sg(sigma))            ErrNorm: identity forward, normalized errors backward

At initialisation z equals LayerNorm(a) (eps 1e-5). Inhibitory weights never see the task gradient (they act
through stop-gradients) and learn only from the local homeostatic loss
    L_I = lambda * mean_batch[ mean_E(z~)^2 + (var_E(z~) - 1)^2 ],  z~ = (sg(a) - s) / sigma,
which reaches no excitatory weight. W_IX keeps the presynaptic signs (Dale); W_EI >= 0. B_IX has both signs: the
divisive pathway has no Dale-compliant (and no spiking) counterpart, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EPS = 1e-5


# --------------------------------------------------------------------------------------------- error normalization
def center_errors(grad: torch.Tensor) -> torch.Tensor:
    """g - mean over units (last dim): errors that sum to zero over excitatory units."""
    return grad - grad.mean(-1, keepdim=True)


def layer_norm_vjp(grad: torch.Tensor, z: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The LayerNorm Jacobian (no affine, over the last dim) at input z, applied to grad."""
    centred = z - z.mean(-1, keepdim=True)
    inv_sd = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps)  # (torch.var is slower on small rows)
    normalized = centred * inv_sd
    return inv_sd * (grad - grad.mean(-1, keepdim=True) - normalized * (grad * normalized).mean(-1, keepdim=True))


class _ErrorNormalization(torch.autograd.Function):
    """Identity in the forward pass; normalizes the incoming error in the backward pass."""

    generate_vmap_rule = True  # so ensembles (torch.func.vmap over circuits) can use it

    @staticmethod
    def forward(z, mode: str, fa_weights):
        return z.view_as(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        z, mode, fa_weights = inputs
        ctx.mode = mode
        ctx.save_for_backward(z, fa_weights)

    @staticmethod
    def backward(ctx, grad):
        z, fa_weights = ctx.saved_tensors
        if ctx.mode == "center":
            out = center_errors(grad)
        elif ctx.mode == "full":
            out = layer_norm_vjp(grad, z)
        elif ctx.mode == "fa_center":
            out = grad - (grad * fa_weights).sum(-1, keepdim=True)
        else:
            raise ValueError(f"unknown error normalization {ctx.mode!r}")
        return out, None, None


def normalize_errors(z: torch.Tensor, mode: str, fa_weights: torch.Tensor | None = None) -> torch.Tensor:
    """z unchanged; its gradient normalized by ``mode`` (none, center, full, fa_center)."""
    if mode == "none":
        return z
    if fa_weights is None:
        fa_weights = torch.empty(0, device=z.device)
    return _ErrorNormalization.apply(z, mode, fa_weights)


# ------------------------------------------------------------------------------------------ inhibitory population
class InhibitoryNormalization(nn.Module):
    """The fast normalizing interneurons of one E/I circuit (see the module docstring)."""

    def __init__(
        self,
        n_exc: int,
        n_presynaptic: int,
        presynaptic_sign: torch.Tensor,
        n_interneurons: int,
        kind: str,
        error_mode: str,
        homeostatic_weight: float,
        generator: torch.Generator,
    ):
        super().__init__()
        if kind not in ("subtractive", "divisive"):
            raise ValueError(f"unknown inhibitory normalization {kind!r}")
        self.kind, self.error_mode, self.homeostatic_weight = kind, error_mode, homeostatic_weight
        self.n_exc = n_exc
        # presynaptic_sign: +1 / -1 for Dale-constrained presynaptic units, 0 for free (inputs, bias)
        self.register_buffer("presynaptic_sign", presynaptic_sign.float())
        self.ix_raw = nn.Parameter(torch.zeros(n_interneurons, n_presynaptic))
        self.ei_raw = nn.Parameter(torch.rand(n_exc, n_interneurons, generator=generator) + 0.5)
        if kind == "divisive":
            self.bix = nn.Parameter(torch.zeros(n_exc, n_presynaptic))
            self.register_buffer("bei", torch.full((n_exc, n_exc), 1.0 / n_exc))
        fa = torch.rand(n_exc, generator=generator)
        self.register_buffer("fa_weights", fa / fa.sum())

    def ix(self) -> torch.Tensor:
        """W_IX: presynaptic Dale signs kept (|raw| * sign); free columns (inputs, bias) unconstrained."""
        sign = self.presynaptic_sign
        return torch.where(sign == 0, self.ix_raw, self.ix_raw.abs() * sign)

    def ei(self) -> torch.Tensor:
        """W_EI >= 0 (inhibition onto E units is subtracted)."""
        return self.ei_raw.abs()

    @torch.no_grad()
    def initialise_from(self, excitatory_rows: torch.Tensor) -> None:
        """Set W_IX to the mean row of W_E, W_EI row-stochastic, B_IX from the SVD of the centred W_E.

        ``excitatory_rows`` (n_E x n_presynaptic) is the effective W_E = [W_rec, W_in, b] restricted to E rows.
        """
        mean_row = excitatory_rows.mean(0, keepdim=True).expand_as(self.ix_raw)
        self.ix_raw.copy_(torch.where(self.presynaptic_sign == 0, mean_row, mean_row.abs()))
        self.ei_raw.copy_(self.ei_raw.abs() / self.ei_raw.abs().sum(1, keepdim=True))
        if self.kind == "divisive":
            centred = (excitatory_rows.double() - excitatory_rows.double().mean(0, keepdim=True))
            _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
            n = self.n_exc
            self.bix.copy_((singular[:n, None] * vh[:n]).float())

    def forward(
        self, drive: torch.Tensor, presynaptic: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalized E drive z, local homeostatic loss) for E drive a (batch, n_E), presynaptic x (batch, n_pre).

        One step on its own, with the matrices as written in the module docstring; a whole run uses `prepare`,
        `normalize_step` and `homeostatic_loss`, which give the same values."""
        x = presynaptic.detach()
        inhibition = (x @ self.ix().T) @ self.ei().T
        if self.kind == "divisive":
            sigma = torch.sqrt((x @ self.bix.T) ** 2 @ self.bei.T + EPS)
        else:
            sigma = torch.ones_like(drive[..., :1])
        z = (drive - inhibition.detach()) / sigma.detach()
        z = normalize_errors(z, self.error_mode, self.fa_weights)
        local = (drive.detach() - inhibition) / sigma
        return z, self.homeostatic_weight * self._moments(local).mean()

    def _moments(self, local: torch.Tensor) -> torch.Tensor:
        """The homeostatic penalty per sample: mean_E^2 (+ (var_E - 1)^2 when divisive)."""
        mean = local.mean(-1, keepdim=True)
        moments = mean.squeeze(-1) ** 2
        if self.kind == "divisive":
            moments = moments + ((local - mean).pow(2).mean(-1) - 1.0) ** 2
        return moments

    # ------------------------------------------------------------------------------------- a whole run, fast
    @torch.no_grad()
    def prepare(self, inputs: torch.Tensor) -> PreparedNormalization:
        """What every step of a run shares: the weights on h, and the input + bias parts of the interneurons'
        input for all steps at once, for inputs (..., time, n_inputs) (presynaptic x = [h; u; 1])."""
        ix, n_units = self.ix(), self.presynaptic_sign.shape[0] - inputs.shape[-1] - 1
        fixed = inputs @ ix[:, n_units:-1].T + ix[:, -1]
        bix_h = projection_fixed = None
        if self.kind == "divisive":
            bix_h = self.bix[:, :n_units].mT.contiguous()
            projection_fixed = inputs @ self.bix[:, n_units:-1].T + self.bix[:, -1]
        return PreparedNormalization(ix[:, :n_units].mT.contiguous(), fixed, self.ei().mT.contiguous(), bix_h,
                                     projection_fixed)

    def normalize_step(
        self, drive: torch.Tensor, rates: torch.Tensor, prepared: PreparedNormalization, step: int
    ) -> torch.Tensor:
        """z for E drive a (batch, n_E) and the rates h_{t-1} of step ``step``; the inhibition acts as a constant
        (stop-gradient), so only the drive carries the task gradient."""
        with torch.no_grad():
            inhibition, sigma = prepared.inhibition(rates.detach(), step)
        z = (drive - inhibition) / sigma if sigma is not None else drive - inhibition
        return normalize_errors(z, self.error_mode, self.fa_weights)

    def homeostatic_loss(self, drive: torch.Tensor, presynaptic: torch.Tensor) -> torch.Tensor:
        """The local loss averaged over samples and steps, for E drives (..., n_E) and presynaptic x (..., n_pre)
        of every step at once (as one product per matrix; the gradient reaches only the inhibitory weights)."""
        x = presynaptic.detach()
        local = drive.detach() - (x @ self.ix().T) @ self.ei().T
        if self.kind == "divisive":
            local = local / torch.sqrt((x @ self.bix.T).pow(2).mean(-1, keepdim=True) + EPS)  # B_EI = 1/n_E
        return self.homeostatic_weight * self._moments(local).mean()


@dataclass(frozen=True)
class PreparedNormalization:
    """Per-run constants of `InhibitoryNormalization` (no gradient), pre-transposed for ``rates @ W``."""

    ix_h_t: torch.Tensor  # (units, n_I): W_IX on h
    fixed: torch.Tensor  # (..., time, n_I): W_IX on [u; 1] for every step
    ei_t: torch.Tensor  # (n_I, n_E)
    bix_h_t: torch.Tensor | None  # (units, n_E): B_IX on h (divisive)
    projection_fixed: torch.Tensor | None  # (..., time, n_E): B_IX on [u; 1] (divisive)

    def inhibition(self, rates: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(subtracted inhibition W_EI W_IX x, divisor sigma or None) at ``step`` for rates h_{t-1}."""
        inhibition = (rates @ self.ix_h_t + self.fixed[..., step, :]) @ self.ei_t
        if self.bix_h_t is None:
            return inhibition, None
        projection = rates @ self.bix_h_t + self.projection_fixed[..., step, :]
        return inhibition, torch.sqrt(projection.pow(2).mean(-1, keepdim=True) + EPS)  # B_EI = 1/n_E

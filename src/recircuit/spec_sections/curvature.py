"""Spec section `curvature`: Hessian spectrum of the exact loss and the generalization gap."""

from pydantic import Field

from recircuit.spec_sections.base import PositiveInt, StrictModel


class CurvatureSpec(StrictModel):
    n_eval_trials: PositiveInt = Field(64, description="fixed evaluation batch of the Hessian (frozen noise)")
    hutchinson_probes: PositiveInt = Field(30, description="Rademacher probes of the trace estimate")

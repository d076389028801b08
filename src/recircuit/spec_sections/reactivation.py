"""Spec section `reactivation`: the offline (quiescent) protocol of Krishna et al. (ICLR 2024)."""

from typing import Literal

from pydantic import Field

from recircuit.spec_sections.base import NonNegativeInt, PositiveFloat, PositiveInt, StrictModel


class ReactivationSpec(StrictModel):
    duration_steps: PositiveInt = Field(1000, description="quiescent steps per trial (input removed)")
    burn_in_steps: NonNegativeInt = Field(100, description="quiescent steps discarded before metrics")
    n_trials: PositiveInt = Field(200, description="quiescent trials")
    noise_mode: Literal["same", "scaled", "absolute"] = Field(
        "scaled", description="same: training SD; scaled: noise_scale x training SD; absolute: noise_sd"
    )
    noise_scale: PositiveFloat = Field(2**0.5, description="scaled mode: factor on the training SD (sqrt 2 = Langevin)")
    noise_sd: PositiveFloat = Field(0.01, description="absolute mode (and offline-only noise control): SD per sqrt(tau)")

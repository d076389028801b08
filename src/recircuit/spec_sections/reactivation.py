"""Spec section `reactivation`: the offline (quiescent) protocol of Krishna et al. (ICLR 2024) and its metrics."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from recircuit.spec_sections.base import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, StrictModel


class ReactivationSpec(StrictModel):
    duration_steps: PositiveInt = Field(1000, description="quiescent steps per trial (input removed)")
    burn_in_steps: NonNegativeInt = Field(100, description="quiescent steps discarded before metrics")
    distribution_steps: PositiveInt | None = Field(
        None,
        description="steps after the burn-in that the distribution metrics use (KL, coverage, occupancy, step size, "
        "mean radius, heading uniformity, angular velocity); null = to the end of the quiescence",
    )
    variance_burn_in_steps: NonNegativeInt | None = Field(
        None,
        description="quiescent steps discarded before the output variance, at least burn_in_steps; null = "
        "burn_in_steps (the reference: 1000 steps for KL, variance after 1000 of 2000)",
    )
    n_trials: PositiveInt = Field(200, description="quiescent trials")
    noise_mode: Literal["same", "scaled", "absolute"] = Field(
        "scaled", description="same: training SD; scaled: noise_scale x training SD; absolute: noise_sd"
    )
    noise_scale: PositiveFloat = Field(2**0.5, description="scaled mode: factor on the training SD (sqrt 2 = Langevin)")
    noise_sd: PositiveFloat = Field(0.01, description="absolute mode (and offline-only noise control): SD per sqrt(tau)")
    # --- simulation details
    seed: NonNegativeInt = Field(20_000, description="seed of the quiescent noise and of the uniform baseline draws")
    n_trials_with_rates: NonNegativeInt = Field(20, description="quiescent trials whose hidden rates are saved")
    rates_every_steps: PositiveInt = Field(10, description="saved hidden rates: one sample every N steps after burn-in")
    # --- metrics
    analysis_seed: NonNegativeInt = Field(0, description="seed of KDE subsampling and Monte-Carlo KL samples")
    kl_samples: PositiveInt = Field(2500, description="Monte-Carlo samples from Q per KL(Q || P) estimate")
    kde_max_points: PositiveInt | None = Field(
        20_000,
        description="KDEs are fitted on at most this many points (random subsample); null = all points",
    )
    kde_floor_sd: PositiveFloat = Field(
        0.005, description="jitter SD (m or rad) added when a sample is degenerate (singular covariance)"
    )
    coverage_bin_m: PositiveFloat = Field(0.1, description="side of the square spatial bins of coverage/occupancy, m")
    coverage_bin_deg: PositiveFloat = Field(10.0, description="width of the heading bins of coverage/occupancy, deg")
    arena_margin_m: NonNegativeFloat = Field(
        0.1, description="occupancy bins extend this far beyond the arena walls (trajectories overshoot), m"
    )
    pca_components: PositiveInt = Field(10, description="top-k waking principal components of the PCA fraction")
    time_course_window_steps: PositiveInt = Field(
        100,
        description="offline time course: coverage (and for headings the mean resultant length) in consecutive "
        "windows of this many steps (at most duration_steps) from input removal, burn-in included",
    )
    # --- the scaled-input test (awake, not quiescent): how the circuit integrates ever slower self-motion
    input_scales: list[NonNegativeFloat] = Field(
        [1.0, 0.3, 0.1, 0.03, 0.0],
        description="scaled-input test: the trained circuit, with its training noise, integrates held-out self-motion "
        "input multiplied by each factor (1 = waking speeds, 0 = awake and standing still: the input removed, the "
        "training noise kept); empty = no test",
    )
    input_scale_steps: PositiveInt = Field(1000, description="scaled-input test: time steps per trial")
    input_scale_trials: PositiveInt = Field(100, description="scaled-input test: trials (the same for every factor)")

    @model_validator(mode="after")
    def _burn_in_fits(self) -> ReactivationSpec:
        if self.burn_in_steps >= self.duration_steps:
            raise ValueError(
                f"burn_in_steps ({self.burn_in_steps}) must be smaller than duration_steps ({self.duration_steps})"
            )
        if self.distribution_steps is not None and self.burn_in_steps + self.distribution_steps > self.duration_steps:
            raise ValueError(
                f"burn_in_steps + distribution_steps ({self.burn_in_steps} + {self.distribution_steps}) must not "
                f"exceed duration_steps ({self.duration_steps})"
            )
        if self.variance_burn_in_steps is not None and not (
            self.burn_in_steps <= self.variance_burn_in_steps < self.duration_steps
        ):
            raise ValueError(
                f"variance_burn_in_steps ({self.variance_burn_in_steps}) must be at least burn_in_steps "
                f"({self.burn_in_steps}) and smaller than duration_steps ({self.duration_steps})"
            )
        return self

    @field_validator("input_scales")
    @classmethod
    def _distinct_scales(cls, scales: list[float]) -> list[float]:
        if len(set(scales)) != len(scales):
            raise ValueError(f"{scales} repeats a factor")
        return scales

    def distribution_window(self) -> slice:
        """The quiescent steps (0 = the first after input removal) that the distribution metrics use."""
        stop = None if self.distribution_steps is None else self.burn_in_steps + self.distribution_steps
        return slice(self.burn_in_steps, stop)

    def variance_window(self) -> slice:
        """The quiescent steps (0 = the first after input removal) that the output variance uses."""
        return slice(self.burn_in_steps if self.variance_burn_in_steps is None else self.variance_burn_in_steps, None)

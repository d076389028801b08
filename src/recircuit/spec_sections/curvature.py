"""Spec section `curvature`: Hessian spectrum of the exact loss and the generalization gap."""

from typing import Annotated, Literal

from pydantic import Field, field_validator

from recircuit.spec_sections.base import NonNegativeInt, PositiveFloat, PositiveInt, StrictModel

HessianParameter = Literal["recurrent_raw", "input_raw", "bias", "output_raw", "output_bias", "encoder", "encoder_bias"]
ShiftName = Literal["none", "longer", "faster", "larger_arena", "noisier"]
Factor = Annotated[float, Field(ge=1, allow_inf_nan=False)]


class CurvatureSpec(StrictModel):
    n_eval_trials: PositiveInt = Field(64, description="fixed evaluation batch of the Hessian (frozen noise)")
    hutchinson_probes: Annotated[int, Field(ge=2)] = Field(30, description="Rademacher probes of the trace estimate")
    parameters: tuple[HessianParameter, ...] = Field(
        ("recurrent_raw",), min_length=1, description="parameters the Hessian is taken over (free entries only)"
    )
    hessian_data: Literal["training_set", "fresh"] = Field(
        "training_set",
        description="Hessian batch: the first n_eval_trials of the finite training set (fresh trajectories from "
        "eval_seed when training used fresh trajectories), or fresh trajectories",
    )
    eval_seed: NonNegativeInt = Field(20_000, description="seed of fresh Hessian trials, Lanczos start and probes")
    noise_seed: NonNegativeInt = Field(20_001, description="seed of the frozen noise (Hessian batch and gap losses)")
    dtype: Literal["float64", "float32"] = Field("float64", description="precision of the Hessian computation")
    hvp_mode: Literal["forward_over_reverse", "reverse_over_reverse"] = Field(
        "reverse_over_reverse",
        description="HVP: jvp of grad (nothing cached), or vjp of grad with the graph built once and reused",
    )
    lanczos_tol: PositiveFloat = Field(
        1e-6, description="relative accuracy of the Lanczos extreme eigenvalues (the bottom one: relative to top - bottom)"
    )
    lanczos_ncv: Annotated[int, Field(ge=3)] = Field(20, description="Lanczos vectors kept between restarts")
    lanczos_ncv_bottom: Annotated[int, Field(ge=3)] = Field(
        40,
        description="Lanczos vectors for the bottom eigenvalue: it sits next to many near-zero eigenvalues, and more "
        "vectors mean fewer restarts (81 instead of 151 HVPs on a trained 128-unit circuit)",
    )
    n_test_trials: PositiveInt = Field(256, description="fresh test trajectories per shift")
    test_seed: NonNegativeInt = Field(30_000, description="seed of the test trajectories")
    shifts: tuple[ShiftName, ...] = Field(
        ("none", "longer", "faster", "larger_arena", "noisier"),
        min_length=1,
        description="test conditions; larger_arena is skipped for head direction",
    )
    longer_factor: Factor = Field(2.0, description="longer: test sequence length / training length")
    speed_factor: Factor = Field(1.5, description="faster: speed scale (PI) or turn SD (HD) x this")
    arena_factor: Factor = Field(1.5, description="larger_arena: arena side x this (trained place-cell centres kept)")
    noise_factor: Factor = Field(2.0, description="noisier: noise SD x this")

    @field_validator("parameters", "shifts")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("entries must be unique")
        return value

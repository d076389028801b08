"""Spec section `spiking`: the Brian2 leaky integrate-and-fire twin of a trained rate circuit."""

from typing import Literal

from pydantic import Field

from recircuit.spec_sections.base import PositiveFloat, StrictModel


class SpikingSpec(StrictModel):
    target: Literal["cpp_standalone", "numpy"] = Field("cpp_standalone", description="Brian2 code-generation target")
    dt_ms: PositiveFloat = Field(0.1, description="integration step of the spiking network, ms")

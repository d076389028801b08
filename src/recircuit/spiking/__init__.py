"""The spiking twin: rate -> LIF conversion (convert), the Brian2 network (network), the protocol writing spiking.nc
(simulate), the `recircuit spike` command (commands) and its figures (figures). Brian2 is imported lazily."""

from recircuit.spiking.convert import (
    ConversionRefused,
    LIFCalibration,
    RateCircuit,
    calibrate_lif,
    rate_circuit_from_model,
    siegert_rate_hz,
)
from recircuit.spiking.network import (
    LIFConstants,
    NetworkShape,
    NeuronParameters,
    RunInputs,
    RunOutput,
    SpikingNetwork,
    filter_spikes,
)

__all__ = [
    "ConversionRefused",
    "LIFCalibration",
    "LIFConstants",
    "NetworkShape",
    "NeuronParameters",
    "RateCircuit",
    "RunInputs",
    "RunOutput",
    "SpikingNetwork",
    "calibrate_lif",
    "filter_spikes",
    "rate_circuit_from_model",
    "siegert_rate_hz",
]

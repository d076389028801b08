"""The E/I rate circuit: dynamics, initialisation, saving and loading."""

from recircuit.circuit.io import build_circuit, load_model, save_model
from recircuit.circuit.network import ACTIVATIONS, EICircuit, Noise, circuit_step

__all__ = ["ACTIVATIONS", "EICircuit", "Noise", "circuit_step", "build_circuit", "load_model", "save_model"]

"""Spec sections kept in their own modules (one per analysis), assembled into CircuitSpec by recircuit.spec."""

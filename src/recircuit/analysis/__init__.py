"""Analyses of trained circuits: offline reactivation, curvature and generalization."""

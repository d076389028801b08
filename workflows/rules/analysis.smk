# Analyses of trained circuits (reactivation, spiking twin, curvature); filled as they land.

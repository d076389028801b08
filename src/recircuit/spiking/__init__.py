"""The spiking twin of a trained rate circuit (Brian2 LIF network).

Modules (import them directly; this package imports nothing, so `recircuit --help` stays fast):

- ``convert``: rate -> LIF conversion (refusals, tanh rewrite, f-I calibration: `rate_circuit_from_model`,
  `calibrate_lif`, `siegert_rate_hz`);
- ``time_step``: the exact rate of the LIF neuron as integrated at the twin's time step, and the calibration refitted
  for it (`discrete_rate_hz`, `fit_drive`; `convert.correct_for_time_step` applies it to a calibration);
- ``network``: the Brian2 network, built once per size and run many times (`SpikingNetwork`, `RunInputs`,
  `filter_spikes`);
- ``simulate``: the protocol that writes spiking.nc (`spike`);
- ``commands``: the `recircuit spike` command;
- ``figures``: figures from collected spiking.nc files (`make_spiking_figures`).
"""

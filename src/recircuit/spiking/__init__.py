"""The spiking twin: rate -> LIF conversion and the Brian2 network."""

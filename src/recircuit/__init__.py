"""recircuit: noisy E/I recurrent circuits, from a YAML spec to trained rate networks, spiking twins and analyses."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recircuit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

from recircuit.spec import CircuitSpec, SpecError, load_spec  # noqa: E402

__all__ = ["CircuitSpec", "SpecError", "load_spec", "load_model", "__version__"]


def load_model(run_dir, device="cpu"):
    """The trained circuit saved in ``run_dir/model.pt`` (see recircuit.circuit.io.load_model)."""
    from recircuit.circuit.io import load_model as _load

    return _load(run_dir, device=device)

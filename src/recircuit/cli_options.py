"""Command-line options shared by `recircuit.cli` and the command modules it loads (so they never import the CLI)."""

from __future__ import annotations

import argparse


def add_set_argument(
    p: argparse.ArgumentParser,
    metavar: str = "KEY=VALUE",
    help: str = "dotted spec overrides, e.g. --set training.steps=50 network.noise.recurrent_sd=0",
) -> None:
    """The `--set KEY=VALUE ...` option every command that reads a spec shares (command modules use it too)."""
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar=metavar, help=help)

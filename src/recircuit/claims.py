"""Claims checked seed by seed, shared by `recircuit reactivation-report` and `recircuit spiking-report`: a value
against a reference (per seed, or one number), counted over the seeds where both are finite."""

from __future__ import annotations

import numpy as np


def claim_row(
    circuit: str, claim: str, value: object, reference: object, greater: bool = False
) -> dict[str, object] | None:
    """circuit, claim, median value and reference over seeds, and in how many seeds value < reference (> when
    ``greater``); None when no seed has both."""
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    references = np.broadcast_to(np.asarray(reference, dtype=np.float64).reshape(-1), values.shape)
    valid = np.isfinite(values) & np.isfinite(references)
    if not valid.any():
        return None
    holds = values[valid] > references[valid] if greater else values[valid] < references[valid]
    return {
        "circuit": circuit,
        "claim": claim,
        "value": float(np.median(values[valid])),
        "reference": float(np.median(references[valid])),
        "holds": int(holds.sum()),
        "seeds": int(valid.sum()),
    }


def claims_table(rows: list[dict[str, object]]) -> list[str]:
    """The rows of `claim_row` as text lines under a header."""
    width = max(len(str(row["claim"])) for row in rows)
    lines = [f"{'circuit':<18} {'claim':<{width}} {'median':>9} {'vs':>9}  holds"]
    for row in rows:
        lines.append(
            f"{row['circuit']:<18} {row['claim']:<{width}} {row['value']:>9.4g} {row['reference']:>9.4g}  "
            f"{row['holds']}/{row['seeds']} seeds"
        )
    return lines

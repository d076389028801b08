"""Counter-based Gaussian membrane noise: one standard normal per (stream, time step), a pure function of both.

Brian2's own ``xi`` draws from one generator shared by all neurons, so a trial's noise depends on what else runs in
the same simulation. Here each neuron of a trial has its own 64-bit stream key, derived from the trial's seed and the
neuron's index within the trial (`stream_keys`); the sample of step t is

    h_0 = mix(key ^ mix(t + GOLDEN)),  h_(a+1) = mix(h_a + GOLDEN)      (mix: SplitMix64's finaliser)

turned into a normal by the 256-layer ziggurat of Marsaglia & Tsang (2000, J. Stat. Softw. 5(8)); the layer comes
from the low 8 bits of h, the abscissa from its high 32 bits (the original's overlap of the two is avoided), and
the rare (about 1.3 %) wedge and tail cases draw further h_a. So a trial gives the same noise, hence the same spikes,
alone or batched with other trials (`network.NetworkShape.copies`), and costs a few ns per neuron and step
(Brian2 2.9's ``randn``: about 45 ns).

The same algorithm is written twice: in numpy (`standard_normal`, Brian's numpy target) and in C++ (`CPP_CODE`,
cpp_standalone). The integer part is identical bit for bit; the float part can differ in the last bits (the C++
build uses -ffast-math), which changes a sample only in the rare slow cases.
"""

from __future__ import annotations

import math

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
MIX_1 = 0xBF58476D1CE4E5B9
MIX_2 = 0x94D049BB133111EB
LAYERS = 256
TAIL_START = 3.6541528853610088  # r: start of the tail of the 256-layer ziggurat
LAYER_AREA = 4.92867323399e-3  # v: area of each layer (and of the base strip with the tail)
FUNCTION_NAME = "twin_normal"


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k uint32 acceptance thresholds, w abscissa scale per unit of int32, f density at the layer edges)."""
    m1 = 2.0**31
    d = t = TAIL_START
    q = LAYER_AREA / np.exp(-0.5 * d * d)
    k = np.zeros(LAYERS, dtype=np.uint32)
    w = np.zeros(LAYERS)
    f = np.zeros(LAYERS)
    k[0], k[1] = int(d / q * m1), 0
    w[0], w[LAYERS - 1] = q / m1, d / m1
    f[0], f[LAYERS - 1] = 1.0, np.exp(-0.5 * d * d)
    for i in range(LAYERS - 2, 0, -1):
        d = np.sqrt(-2.0 * np.log(LAYER_AREA / d + np.exp(-0.5 * d * d)))
        k[i + 1] = int(d / t * m1)
        t = d
        f[i] = np.exp(-0.5 * d * d)
        w[i] = d / m1
    return k, w, f


K_TABLE, W_TABLE, F_TABLE = _tables()


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX_1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX_2)
    return z ^ (z >> np.uint64(31))


def stream_keys(seed: int, n_units: int) -> np.ndarray:
    """64-bit noise stream key of neurons 0..n_units-1 of a trial with membrane-noise seed ``seed``, uint64."""
    with np.errstate(over="ignore"):
        base = _mix(np.uint64(int(seed)) + np.uint64(GOLDEN))
        return _mix(base + np.arange(n_units, dtype=np.uint64))


def split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 32-bit halves of uint64 keys as int32 (Brian's integer type), bit for bit."""
    keys = np.asarray(keys, dtype=np.uint64)
    high = (keys >> np.uint64(32)).astype(np.uint32).view(np.int32)
    low = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
    return high, low


def _join(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    as_u32 = lambda a: np.asarray(a).astype(np.int64) & 0xFFFFFFFF  # noqa: E731
    return (as_u32(high).astype(np.uint64) << np.uint64(32)) | as_u32(low).astype(np.uint64)


def _layer_and_abscissa(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    layer = (h & np.uint64(LAYERS - 1)).astype(np.intp)
    hz = (h >> np.uint64(32)).astype(np.uint32).view(np.int32).astype(np.int64)
    return layer, hz


def standard_normal(key_high: np.ndarray, key_low: np.ndarray, step: np.ndarray) -> np.ndarray:
    """One N(0, 1) sample per (stream key, time step), float64; arguments broadcast together."""
    key_high, key_low, step = np.broadcast_arrays(key_high, key_low, step)
    with np.errstate(over="ignore"):
        step_hash = _mix(np.asarray(step).astype(np.int64).astype(np.uint64) + np.uint64(GOLDEN))
        h = _mix(_join(key_high, key_low) ^ step_hash)
        layer, hz = _layer_and_abscissa(h)
        out = hz * W_TABLE[layer]
        rejected = np.abs(hz) >= K_TABLE[layer]  # outside the layer's rectangle: about 1.2 % of the draws
        if rejected.any():
            rows = zip(h[rejected].tolist(), layer[rejected].tolist(), hz[rejected].tolist())
            out[rejected] = [_slow_one(*row) for row in rows]
    return out


MASK_64 = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """`_mix` on one Python int."""
    z = ((z ^ (z >> 30)) * MIX_1) & MASK_64
    z = ((z ^ (z >> 27)) * MIX_2) & MASK_64
    return z ^ (z >> 31)


def _slow_one(h: int, layer: int, hz: int) -> float:
    """The ziggurat's wedge and tail cases and their retries for one rejected draw (as `_twin_normal_slow`)."""
    while True:
        x = hz * float(W_TABLE[layer])
        h = _mix_int((h + GOLDEN) & MASK_64)
        if layer == 0:
            while True:
                tx = -math.log(((h >> 32) + 0.5) * 2.0**-32) / TAIL_START
                ty = -math.log(((h & 0xFFFFFFFF) + 0.5) * 2.0**-32)
                if ty + ty >= tx * tx:
                    return TAIL_START + tx if hz > 0 else -TAIL_START - tx
                h = _mix_int((h + GOLDEN) & MASK_64)
        u = ((h >> 32) + 0.5) * 2.0**-32
        if F_TABLE[layer] + u * (F_TABLE[layer - 1] - F_TABLE[layer]) < math.exp(-0.5 * x * x):
            return x
        h = _mix_int((h + GOLDEN) & MASK_64)
        layer = h & (LAYERS - 1)
        hz = (h >> 32) - (1 << 32) if h >> 63 else h >> 32
        if abs(hz) < K_TABLE[layer]:
            return hz * float(W_TABLE[layer])


def _c_array(ctype: str, name: str, values: np.ndarray, fmt: str) -> str:
    body = ", ".join(format(v, fmt) for v in values.tolist())
    return f"static const {ctype} {name}[{values.size}] = {{{body}}};"


CPP_CODE = f"""
static inline uint64_t _twin_mix(uint64_t z) {{
    z = (z ^ (z >> 30)) * 0x{MIX_1:X}ULL;
    z = (z ^ (z >> 27)) * 0x{MIX_2:X}ULL;
    return z ^ (z >> 31);
}}
{_c_array("uint32_t", "_twin_k", K_TABLE, "d")}
{_c_array("double", "_twin_w", W_TABLE, ".17g")}
{_c_array("double", "_twin_f", F_TABLE, ".17g")}
static double _twin_normal_slow(uint64_t h, int layer, int64_t hz) {{
    for (;;) {{
        const double x = hz * _twin_w[layer];
        h = _twin_mix(h + 0x{GOLDEN:X}ULL);
        if (layer == 0) {{
            for (;;) {{
                const double tx = -log(((double)(h >> 32) + 0.5) * {2.0**-32!r}) / {TAIL_START!r};
                const double ty = -log(((double)(h & 0xFFFFFFFFULL) + 0.5) * {2.0**-32!r});
                if (ty + ty >= tx * tx) return hz > 0 ? {TAIL_START!r} + tx : -{TAIL_START!r} - tx;
                h = _twin_mix(h + 0x{GOLDEN:X}ULL);
            }}
        }}
        const double u = ((double)(h >> 32) + 0.5) * {2.0**-32!r};
        if (_twin_f[layer] + u * (_twin_f[layer - 1] - _twin_f[layer]) < exp(-0.5 * x * x)) return x;
        h = _twin_mix(h + 0x{GOLDEN:X}ULL);
        layer = (int)(h & {LAYERS - 1});
        hz = (int32_t)(uint32_t)(h >> 32);
        if ((uint64_t)(hz < 0 ? -hz : hz) < _twin_k[layer]) return hz * _twin_w[layer];
    }}
}}
static inline double {FUNCTION_NAME}(const int32_t key_high, const int32_t key_low, const int64_t step) {{
    const uint64_t key = ((uint64_t)(uint32_t)key_high << 32) | (uint64_t)(uint32_t)key_low;
    const uint64_t h = _twin_mix(key ^ _twin_mix((uint64_t)step + 0x{GOLDEN:X}ULL));
    const int layer = (int)(h & {LAYERS - 1});
    const int64_t hz = (int32_t)(uint32_t)(h >> 32);
    if ((uint64_t)(hz < 0 ? -hz : hz) < _twin_k[layer]) return hz * _twin_w[layer];
    return _twin_normal_slow(h, layer, hz);
}}
"""


def brian_function():
    """The Brian2 `Function` ``twin_normal(key_high, key_low, step)`` with numpy and C++ implementations."""
    from brian2 import Function

    function = Function(
        standard_normal,
        arg_units=[1, 1, 1],
        arg_names=["key_high", "key_low", "step"],
        return_unit=1,
        arg_types=["integer", "integer", "integer"],
        return_type="float",
        stateless=True,
    )
    function.implementations.add_implementation("cpp", CPP_CODE, name=FUNCTION_NAME)
    return function

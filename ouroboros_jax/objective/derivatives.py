"""Per-sample derivatives of audio by 9-point central differences (docs/method.md, "The model").

Units are per sample (not per second): multiply by 1/dt to get per-second values. Both stencils
are 8th-order accurate, so they are exact on polynomials of degree <= 8 (first derivative) and
<= 9 (second derivative, by symmetry) away from the edges.
"""

import numpy as np

FIRST_DERIVATIVE_STENCIL = np.array([3, -32, 168, -672, 0, 672, -168, 32, -3], dtype=np.float64) / 840.0
SECOND_DERIVATIVE_STENCIL = (
    np.array([-9, 128, -1008, 8064, -14350, 8064, -1008, 128, -9], dtype=np.float64) / 5040.0
)
_HALF_WIDTH = 4


def _apply_stencil(x: np.ndarray, stencil: np.ndarray) -> np.ndarray:
    """Correlates `x` (..., L) with a 9-point stencil along the last axis; output (..., L).

    The ends are padded by mirroring the first/last 4 samples *including* the edge sample
    (x3, x2, x1, x0 | x0, x1, ...), as the reference does.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[-1] < _HALF_WIDTH:
        raise ValueError(f"need at least {_HALF_WIDTH} samples for the 9-point stencil, got {x.shape[-1]}")
    pad = [(0, 0)] * (x.ndim - 1) + [(_HALF_WIDTH, _HALF_WIDTH)]
    padded = np.pad(x, pad, mode="symmetric")
    length = x.shape[-1]
    return sum(c * padded[..., k : k + length] for k, c in enumerate(stencil) if c != 0.0)


def first_derivative(x: np.ndarray) -> np.ndarray:
    """dx/dt in amplitude per sample. x: (..., L) -> (..., L), float64."""
    return _apply_stencil(x, FIRST_DERIVATIVE_STENCIL)


def second_derivative(x: np.ndarray) -> np.ndarray:
    """d2x/dt2 in amplitude per sample squared. x: (..., L) -> (..., L), float64."""
    return _apply_stencil(x, SECOND_DERIVATIVE_STENCIL)

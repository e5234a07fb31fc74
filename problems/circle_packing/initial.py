"""Circle packing: place n circles in the unit square, maximising the sum of radii.

The seed puts the centres on a grid and gives each circle the largest radius that
keeps every circle inside the square and apart from the others. Only the code
between the EVOLVE-BLOCK markers may change.
"""

import numpy as np


# EVOLVE-BLOCK-START
def construct_packing(n: int = 26) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(centers, radii)`` for ``n`` circles in the unit square.

    Args:
        n: the number of circles (26 in the benchmark).

    Returns:
        centers: an (n, 2) array of x, y coordinates.
        radii: an (n,) array of positive radii. Every circle must lie inside
            [0, 1] x [0, 1] and no two may overlap (touching is allowed); the
            score is ``radii.sum()``.
    """
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    centers = np.array([((i % cols + 0.5) / cols, (i // cols + 0.5) / rows)
                        for i in range(n)])
    return centers, compute_max_radii(centers)


def compute_max_radii(centers: np.ndarray) -> np.ndarray:
    """Radii that fit: each circle reaches at most the nearest side of the square and
    half-way to its nearest neighbour, and two circles that would still overlap shrink
    in proportion. Radii only ever shrink, so one pass over the pairs leaves none
    overlapping; the tiny final margin keeps the packing valid under the scorer's
    exact (no tolerance) checks."""
    x, y = centers[:, 0], centers[:, 1]
    walls = np.minimum(np.minimum(x, y), np.minimum(1.0 - x, 1.0 - y))
    gaps = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(gaps, np.inf)
    radii = np.minimum(walls, gaps.min(axis=1) / 2.0)
    for i in range(len(centers)):
        for j in range(i + 1, len(centers)):
            distance = np.hypot(*(centers[i] - centers[j]))
            if radii[i] + radii[j] > distance:
                scale = distance / (radii[i] + radii[j])
                radii[i] *= scale
                radii[j] *= scale
    return radii * (1.0 - 1e-9)
# EVOLVE-BLOCK-END

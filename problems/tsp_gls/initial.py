"""Guided local search for the TSP: the evolved function says how bad each edge is.

The seed is classic GLS: an edge is as bad as it is long. Only the code between the
EVOLVE-BLOCK markers may change.
"""

import numpy as np


# EVOLVE-BLOCK-START
def heuristics(distance_matrix: np.ndarray) -> np.ndarray:
    """Returns how bad it is to include each edge in a tour (higher = worse).

    Guided local search repeatedly penalises the edge of its current tour with the
    highest badness / (1 + times already penalised), which pushes the search away
    from it. Classic GLS uses the edge length itself.

    Args:
        distance_matrix: n x n float array of distances between all nodes.

    Returns:
        An n x n array of finite real numbers.
    """
    return distance_matrix.copy()
# EVOLVE-BLOCK-END

"""Constructive TSP: the evolved function picks the next city of a tour being built.

The seed is nearest neighbour. Only the code between the EVOLVE-BLOCK markers may
change.
"""

import numpy as np


# EVOLVE-BLOCK-START
def select_next_node(current_node: int, destination_node: int, unvisited_nodes: np.ndarray,
                     distance_matrix: np.ndarray) -> int:
    """Returns the next node to visit.

    Nearest neighbour: go to the closest unvisited node. The term towards the
    destination (where the tour closes) has weight 0, so it changes nothing yet.

    Args:
        current_node: the node the tour is at.
        destination_node: the node the tour started from and must return to.
        unvisited_nodes: 1-D int array of the nodes not visited yet (ascending).
        distance_matrix: n x n float array of distances between all nodes.

    Returns:
        One element of unvisited_nodes.
    """
    to_candidates = distance_matrix[current_node, unvisited_nodes]
    to_destination = distance_matrix[unvisited_nodes, destination_node]
    scores = to_candidates - 0.0 * to_destination
    return int(unvisited_nodes[np.argmin(scores)])
# EVOLVE-BLOCK-END

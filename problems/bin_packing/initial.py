"""Online bin packing (FunSearch): the evolved function scores the bins an item fits in.

The seed is best fit. Only the code between the EVOLVE-BLOCK markers may change.
"""

import numpy as np


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Returns the priority with which we want to add `item` to each bin.

    Best fit: prefer the bin that the item leaves with the least room, so that
    bins fill up and new ones open as late as possible.

    Args:
        item: size of the item to pack.
        bins: remaining capacities of the bins the item fits in (all >= item).

    Returns:
        One priority per bin; the item goes to the bin with the highest one.
    """
    return -(bins - item)
# EVOLVE-BLOCK-END

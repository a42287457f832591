"""Fracture sites on a CT's bones: where a break would show on a frontal radiograph.

Split from :mod:`bonecls.phantom.volume` (which calls :func:`candidates` once per cache build).
"""

from __future__ import annotations

import numpy as np


def candidates(
    bones: dict[str, tuple[np.ndarray, np.ndarray]],
    spacing: tuple[float, float, float],
    lung_proj_mm: tuple[np.ndarray, float, float],
    midline_x: float,
    zmax: float,
    rng: np.random.Generator,
    background: tuple[np.ndarray, float, float] | None = None,
    *,
    pad: int,
) -> np.ndarray:
    """Fracture sites: points on each bone where its local axis runs across the beam.

    ``pad`` is the volume's base-projection padding in pixels (``volume.PAD``), passed in so this
    module needs nothing from the volume module that calls it."""
    from scipy.spatial import cKDTree

    dt = np.dtype(
        [("bone", "U24"), ("center", "f4", 3), ("axis", "f4", 3), ("radius", "f4"), ("weight", "f4")]
    )
    lung2d, pu_l, pv_l = lung_proj_mm
    rows = []
    sp = np.asarray(spacing, dtype=np.float32)
    for name, (idx, mus) in bones.items():
        pts = idx.astype(np.float32) * sp
        if len(pts) < 200:
            continue
        tree = cKDTree(pts)
        # one seed per 5-mm cell (at most 400 per bone), then local PCA around each
        _, first = np.unique(np.floor(pts / 5.0).astype(np.int32), axis=0, return_index=True)
        if len(first) > 400:
            first = rng.choice(first, 400, replace=False)
        seeds = pts[np.sort(first)]
        chosen: list[np.ndarray] = []
        for nb_idx in tree.query_ball_point(seeds, 12.0):
            nb = pts[nb_idx]
            if len(nb) < 30:
                continue
            ctr = nb.mean(axis=0)
            if chosen and np.min(np.linalg.norm(np.asarray(chosen) - ctr, axis=1)) < 4.0:
                continue
            evals, evecs = np.linalg.eigh(np.cov((nb - ctr).T))
            axis = evecs[:, 2]
            lin = evals[2] / max(evals[1], 1e-6)
            family = name.split("_")[0]
            if family == "humerus":
                # only the head/neck is in the CT: a transverse (surgical-neck) break, away from the cut edge
                axis = np.array([0.0, 0.0, 1.0], dtype=np.float32)
                if ctr[2] > zmax - 10.0:
                    continue
            elif family == "clavicula":
                if lin < 2.0 or abs(axis[1]) > 0.85 or abs(ctr[0] - midline_x) < 25.0:
                    continue
            elif family == "scapula":
                if abs(axis[1]) > 0.55:
                    continue
            else:  # ribs: en-face segments and lateral arcs (where the cortex is tangential)
                if lin < 2.5 or np.hypot(axis[0], axis[2]) < 0.3 or abs(ctr[0] - midline_x) < 40.0:
                    continue
                col = round(ctr[0] / pu_l)
                row = round((zmax - ctr[2]) / pv_l)
                r0, r1 = max(row - 3, 0), row + 4
                c0, c1 = max(col - 3, 0), col + 4
                if not lung2d[r0:r1, c0:c1].any():
                    continue
                if background is not None:  # over the aerated lung field, not liver/heart/spine
                    proj, pv, pu = background
                    pr = round(pad + (zmax - ctr[2]) / pv)
                    pc = round(pad + ctr[0] / pu)
                    if float(proj[pr - 4 : pr + 5, pc - 4 : pc + 5].mean()) > 3.4:
                        continue
            # local bone contrast: the largest line integral of excess mu through the bone within 8 mm
            near = np.asarray(nb_idx)[np.linalg.norm(nb - ctr, axis=1) < 8.0]
            if len(near) == 0:
                continue
            col_key = idx[near, 0].astype(np.int64) * 4096 + idx[near, 2]
            _, inv = np.unique(col_key, return_inverse=True)
            contrast = float(np.bincount(inv, weights=mus[near]).max() * spacing[1])
            if family == "rib" and contrast < 0.3:
                continue
            radius = float(np.sqrt(max(evals[1], 1.0)) * 2.0)
            chosen.append(ctr)
            rows.append((name, ctr, axis * np.sign(axis[0] + 1e-9), min(radius, 14.0), contrast))
    arr = np.zeros(len(rows), dtype=dt)
    for n, r in enumerate(rows):
        arr[n] = r
    return arr

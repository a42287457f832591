"""Hard negatives: normal findings that look like a fracture line, drawn into images of *every* class.

If only fractures ever put a line across a rib, a model can call any line a fracture. The varied
recipe adds 0-3 of these mimics to every image, drawn from a random stream that does not depend
on the class, so the paired renders (with and without the lesion) carry the same mimics:

* ``rib_crossing`` - a second rib-like band (anterior rib over posterior rib) crossing a bone;
* ``vessel_edge`` - a thin tapering soft-tissue line in the lung (vessel or bronchial wall);
* ``skin_fold`` - a long, gently curved edge: soft-tissue thickness steps across it and fades;
* ``costochondral`` - a rib that ends in less dense cartilage with an irregular edge;
* ``nutrient_canal`` - a thin oblique lucent line through one cortex only.

Each is a :class:`~bonecls.phantom.lesions.LesionPatch` of kind ``"mimic"`` in base-projection
pixels, drawn in 2-D (a tube at constant depth projects to a line), with its box in the sample's
metadata (``meta["mimics"]``), never among the lesion boxes.
"""

from __future__ import annotations

import numpy as np

from bonecls.phantom.lesions import LesionPatch
from bonecls.phantom.volume import AttenuationVolume

MIMICS = ("rib_crossing", "vessel_edge", "skin_fold", "costochondral", "nutrient_canal")


def _polyline(
    rng: np.random.Generator, start: np.ndarray, angle: float, length: float, bend: float
) -> np.ndarray:
    steps = 12
    pts = [start.astype(np.float64)]
    for _ in range(steps):
        angle += rng.normal(0, bend)
        pts.append(pts[-1] + length / steps * np.array([np.cos(angle), np.sin(angle)]))
    return np.asarray(pts)


def make_mimic(
    vol: AttenuationVolume,
    name: str,
    site_cr: tuple[float, float],
    bone_axis_deg: float,
    tilt: tuple[float, float],
    rng: np.random.Generator,
    bone_scale: float = 1.0,
) -> LesionPatch:
    """Mimic ``name`` near base pixel ``site_cr`` (col, row) across a bone running at ``bone_axis_deg``."""
    import cv2

    if name not in MIMICS:
        raise ValueError(f"unknown mimic {name!r}; expected one of {MIMICS}")
    pv, pu = vol.pixel
    half = int(np.ceil(40.0 / min(pv, pu)))
    canvas = np.zeros((2 * half, 2 * half), dtype=np.float32)
    centre = np.array([half, half], dtype=np.float64)
    mm = 1.0 / pu  # pixels per mm (columns; rows are rescaled below)
    across = np.radians(bone_axis_deg + 90 + rng.uniform(-35, 35))
    if name == "rib_crossing":
        line = _polyline(
            rng, centre - 30 * mm * np.array([np.cos(across), np.sin(across)]), across, 60 * mm, 0.03
        )
        width = max(2, round(rng.uniform(6.0, 9.0) * mm))
        cv2.polylines(canvas, [np.round(line).astype(np.int32)], False, 1.0, width)
        cortex = np.zeros_like(canvas)
        cv2.polylines(cortex, [np.round(line).astype(np.int32)], False, 1.0, width + 2)
        canvas = 0.5 * canvas + 0.5 * (cortex - canvas)  # brighter edges than centre, like a rib
        canvas *= rng.uniform(0.25, 0.5) * bone_scale
    elif name == "vessel_edge":
        line = _polyline(rng, centre, rng.uniform(0, 2 * np.pi), rng.uniform(20, 45) * mm, 0.08)
        for k in range(len(line) - 1):
            w = max(1, round((2.5 - 2.0 * k / len(line)) * mm))
            cv2.line(
                canvas, tuple(np.round(line[k]).astype(int)), tuple(np.round(line[k + 1]).astype(int)), 1.0, w
            )
        canvas *= rng.uniform(0.08, 0.2)
    elif name == "skin_fold":
        line = _polyline(
            rng, centre - 35 * mm * np.array([0.0, 1.0]), np.pi / 2 + rng.uniform(-0.6, 0.6), 70 * mm, 0.04
        )
        poly = np.concatenate([line, line[::-1] + np.array([rng.choice([-1, 1]) * 25 * mm, 0])])
        cv2.fillPoly(canvas, [np.round(poly).astype(np.int32)], 1.0)
        dist = cv2.distanceTransform((canvas > 0).astype(np.uint8), cv2.DIST_L2, 3)
        canvas = np.where(canvas > 0, np.exp(-dist / (12 * mm)), 0).astype(np.float32) * rng.uniform(
            0.06, 0.15
        )
    elif name == "costochondral":
        along = np.radians(bone_axis_deg)
        d = np.array([np.cos(along), np.sin(along)])
        far = centre + d * 25 * mm
        cv2.line(
            canvas,
            tuple(np.round(centre).astype(int)),
            tuple(np.round(far).astype(int)),
            1.0,
            max(2, round(7 * mm)),
        )
        jag = np.clip(rng.normal(0, 1.2, canvas.shape).astype(np.float32), -2, 2)
        canvas = canvas * (0.4 + 0.15 * jag) * -rng.uniform(0.15, 0.3) * bone_scale
    else:  # nutrient canal: short oblique lucent line, one cortex
        ang = np.radians(bone_axis_deg + rng.choice([-1, 1]) * rng.uniform(25, 55))
        d = np.array([np.cos(ang), np.sin(ang)])
        a, b = centre, centre + d * rng.uniform(3, 6) * mm
        cv2.line(canvas, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), 1.0, 1)
        canvas *= -rng.uniform(0.1, 0.25) * bone_scale
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.7)
    canvas = cv2.resize(canvas, None, fx=1.0, fy=pu / pv, interpolation=cv2.INTER_LINEAR)  # rows are pv mm
    h, w = canvas.shape
    row0 = round(site_cr[1] - h / 2)
    col0 = round(site_cr[0] - w / 2)
    mag = np.abs(canvas)
    rows, cols = np.nonzero(mag > 0.2 * max(float(mag.max()), 1e-9))
    box = (
        (
            float(col0 + cols.min()),
            float(row0 + rows.min()),
            float(col0 + cols.max() + 1),
            float(row0 + rows.max() + 1),
        )
        if len(rows)
        else (float(site_cr[0]) - 2, float(site_cr[1]) - 2, float(site_cr[0]) + 2, float(site_cr[1]) + 2)
    )
    return LesionPatch("mimic", name, int(row0), int(col0), canvas.astype(np.float32), box, {"mimic": name})

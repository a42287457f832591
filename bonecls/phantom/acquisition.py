"""Acquisition and processing chains: how a detector and its vendor software turn line integrals into pixels.

A model that learns one renderer's look fails on another's, so the varied recipe draws, per image,
one named *processing chain* (:data:`CHAINS`) and within it random exposure and processing. The
chain name is recorded with every sample, so an evaluation can hold one chain out of training.

Every step that looks at the whole image takes its statistics from the *lesion-free* image
(window percentiles, the low-pass used for dynamic-range compression, scatter, the equalisation
curve), so adding a lesion changes pixels only around the lesion: the paired renders (with and
without the lesion) differ inside its box, and by JPEG's 8-pixel blocks at most around it.

Steps (in order): bone/soft-tissue contrast (kVp), body thickness, detector blur, scatter (a
low-pass of the primary intensity added to it), quantum noise, dynamic-range compression,
window, contrast-limited histogram equalisation, unsharp-mask edge enhancement, the display curve
(gamma, logarithmic or sigmoid LUT), collimation borders, side marker and burned-in text, bit
depth, JPEG.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bonecls.phantom.render import marker_side

# chain name -> parameter ranges (uniform unless said otherwise)
CHAINS: dict[str, dict] = {
    # plain gamma display of a well-exposed 12-bit image, mild edge enhancement
    "gamma": {"lut": "gamma", "eq": (0.0, 0.0), "unsharp": (0.2, 0.7), "bits": (12,), "jpeg": None},
    # logarithmic LUT, strong compression, 10 bits, JPEG export
    "log": {"lut": "log", "eq": (0.0, 0.2), "unsharp": (0.0, 0.4), "bits": (10,), "jpeg": (70, 95)},
    # sigmoid LUT after contrast-limited equalisation (a CLAHE-like look)
    "sigmoid_eq": {"lut": "sigmoid", "eq": (0.5, 1.0), "unsharp": (0.1, 0.5), "bits": (12, 14), "jpeg": None},
    # heavy vendor edge enhancement, 14 bits
    "edge": {"lut": "gamma", "eq": (0.0, 0.3), "unsharp": (1.0, 2.2), "bits": (14,), "jpeg": (85, 98)},
    # low dose, soft detector, 8 bits, strong JPEG (a scanned or forwarded film)
    "soft_noisy": {"lut": "sigmoid", "eq": (0.0, 0.4), "unsharp": (0.0, 0.2), "bits": (8,), "jpeg": (35, 70)},
}
TEXT_WORDS = ("PORTABLE", "AP", "PA", "SUPINE", "ERECT", "CHEST", "RIBS", "SHOULDER", "ICU", "WARD 4")


@dataclass(frozen=True)
class Acquisition:
    """Exposure and processing of one image in the varied recipe."""

    chain: str
    bone_gain: float  # bone/soft-tissue contrast: >1 a low kVp, <1 a high kVp (1 = the classic look)
    scatter: float  # scatter-to-primary ratio
    photons: float  # detected quanta per output pixel without attenuation
    blur: float  # detector blur sigma, output pixels
    compression: float
    lowpass_sigma: float  # of the compression low-pass, fraction of the image side
    window_jitter: tuple[float, float]
    equalize: float  # 0..1 blend of the contrast-limited equalisation curve
    unsharp: float
    unsharp_sigma: float  # output pixels at 256 px
    lut: str  # "gamma" | "log" | "sigmoid"
    lut_param: float
    bits: int
    jpeg_quality: int | None
    collimation: tuple[float, float, float, float]
    collimation_level: float
    marker: str | None
    marker_corner: int
    text: tuple[str, ...]
    text_corner: int

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def sample_acquisition(chain: str, rng: np.random.Generator, view: str) -> Acquisition:
    """Random exposure and processing within ``chain``."""
    spec = CHAINS[chain]
    side = marker_side(view, rng)
    coll = tuple(float(rng.uniform(0.015, 0.1)) if rng.random() < 0.4 else 0.0 for _ in range(4))
    lut = spec["lut"]
    lut_param = {
        "gamma": rng.uniform(0.7, 1.5),
        "log": rng.uniform(2.0, 12.0),
        "sigmoid": rng.uniform(4.0, 9.0),
    }[lut]
    low_dose = chain == "soft_noisy"
    words = tuple(str(w) for w in rng.choice(TEXT_WORDS, size=int(rng.integers(0, 3)), replace=False))
    jpeg = spec["jpeg"]
    return Acquisition(
        chain=chain,
        bone_gain=float(rng.uniform(0.6, 1.35)),
        scatter=float(rng.uniform(0.0, 0.45)),
        photons=float(
            np.exp(rng.uniform(np.log(4e3 if low_dose else 1.5e4), np.log(3e4 if low_dose else 3e5)))
        ),
        blur=float(rng.uniform(1.0, 2.0) if low_dose else rng.uniform(0.2, 1.1)),
        compression=float(rng.uniform(0.2, 0.8)),
        lowpass_sigma=float(rng.uniform(0.04, 0.14)),
        window_jitter=(float(rng.uniform(-0.1, 0.1)), float(rng.uniform(-0.1, 0.1))),
        equalize=float(rng.uniform(*spec["eq"])),
        unsharp=float(rng.uniform(*spec["unsharp"])),
        unsharp_sigma=float(rng.uniform(0.8, 3.0)),
        lut=lut,
        lut_param=float(lut_param),
        bits=int(rng.choice(spec["bits"])),
        jpeg_quality=None if jpeg is None else int(rng.integers(jpeg[0], jpeg[1] + 1)),
        collimation=coll,  # type: ignore[arg-type]
        collimation_level=float(rng.uniform(0.8, 1.0)),
        marker=side if rng.random() < 0.7 else None,
        marker_corner=int(rng.integers(4)),
        text=words,
        text_corner=int(rng.integers(4)),
    )


def scatter_and_noise(
    p: np.ndarray, acq: Acquisition, low_intensity: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Detector blur, scatter (from the lesion-free low-pass intensity) and quantum noise, log domain."""
    import cv2

    ps = cv2.GaussianBlur(p, (0, 0), acq.blur) if acq.blur > 0.05 else p
    if acq.scatter > 0:
        primary = np.exp(-np.minimum(ps, 20.0))
        ps = -np.log(primary + acq.scatter * low_intensity) + np.float32(np.log1p(acq.scatter))
    sigma = np.minimum(np.sqrt(np.exp(np.minimum(ps, 20.0)) / acq.photons), 0.35).astype(np.float32)
    return (ps + sigma * cv2.GaussianBlur(z, (0, 0), 0.5) * 1.6).astype(np.float32)


def equalisation_curve(values: np.ndarray, clip: float = 2.5, bins: int = 256) -> np.ndarray:
    """Contrast-limited histogram-equalisation curve (``bins`` levels of [0, 1]) of lesion-free values."""
    hist, _ = np.histogram(np.clip(values, 0, 1), bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    limit = clip * hist.sum() / bins
    excess = np.clip(hist - limit, 0, None).sum()
    hist = np.minimum(hist, limit) + excess / bins
    cdf = np.cumsum(hist)
    return (cdf / cdf[-1]).astype(np.float32)


def apply_lut(d: np.ndarray, lut: str, param: float) -> np.ndarray:
    """Display curve on [0, 1]."""
    d = np.clip(d, 0.0, 1.0)
    if lut == "gamma":
        return d**param
    if lut == "log":
        return (np.log1p(param * d) / np.log1p(param)).astype(np.float32)
    lo, hi = 1 / (1 + np.exp(param / 2)), 1 / (1 + np.exp(-param / 2))
    return ((1 / (1 + np.exp(-param * (d - 0.5))) - lo) / (hi - lo)).astype(np.float32)


def process(
    noisy: np.ndarray,
    acq: Acquisition,
    low: np.ndarray,
    window: tuple[float, float],
    curve: np.ndarray,
    size: int,
) -> np.ndarray:
    """Compression, window, equalisation, edge enhancement and display curve -> [0, 1] float32."""
    import cv2

    lo, hi = window
    d = (noisy - acq.compression * low - lo) / max(hi - lo, 1e-6)
    if acq.equalize > 0:
        eq = np.interp(np.clip(d, 0, 1), np.linspace(0, 1, len(curve)), curve).astype(np.float32)
        d = (1 - acq.equalize) * d + acq.equalize * eq
    if acq.unsharp > 0:
        sigma = max(acq.unsharp_sigma * size / 256, 0.6)
        d = d + acq.unsharp * (d - cv2.GaussianBlur(d, (0, 0), sigma))
    return apply_lut(d, acq.lut, acq.lut_param).astype(np.float32)


def burn_in(d: np.ndarray, acq: Acquisition, size: int, z: np.ndarray) -> np.ndarray:
    """Collimation borders, side marker and text, all bright as on film."""
    import cv2

    from bonecls.phantom.render import _draw_marker

    left, top, right, bottom = (round(f * size) for f in acq.collimation)
    shutter = np.zeros((size, size), dtype=bool)
    shutter[:, :left] = left > 0
    shutter[:top, :] |= top > 0
    if right:
        shutter[:, size - right :] = True
    if bottom:
        shutter[size - bottom :, :] = True
    if shutter.any():
        d = np.where(shutter, np.float32(acq.collimation_level) + 0.02 * z, d)
    if acq.marker:
        d = _draw_marker(d, acq.marker, acq.marker_corner, size)
    if acq.text:
        mask = np.zeros((size, size), dtype=np.uint8)
        scale = size / 256 * 0.35
        thick = max(1, round(size / 300))
        y = int(0.06 * size) + 6 if acq.text_corner in (0, 1) else size - int(0.04 * size) - 2
        for n, word in enumerate(acq.text):
            (tw, th), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_PLAIN, scale * 2, thick)
            x = int(0.3 * size) if acq.text_corner in (0, 2) else int(0.7 * size) - tw
            yy = y + (n * (th + 4) if acq.text_corner in (0, 1) else -n * (th + 4))
            cv2.putText(mask, word, (x, yy), cv2.FONT_HERSHEY_PLAIN, scale * 2, 255, thick, cv2.LINE_AA)
        a = mask.astype(np.float32) / 255.0
        d = d * (1 - a) + 0.95 * a
    return np.clip(d, 0.0, 1.0).astype(np.float32)


def quantise_and_compress(d: np.ndarray, acq: Acquisition) -> np.ndarray:
    """Bit depth, then JPEG at the chain's quality (decoded again); float32 in [0, 1]."""
    import cv2

    levels = float(2**acq.bits - 1)
    d = np.round(np.clip(d, 0, 1) * levels) / levels
    if acq.jpeg_quality is not None:
        ok, buf = cv2.imencode(
            ".jpg", np.round(d * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, acq.jpeg_quality]
        )
        if ok:
            d = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    return d.astype(np.float32)

"""Does this image look like a radiograph at all? Cheap checks before a prediction is trusted.

The models only ever saw radiographs. A colour photograph, a screenshot, a scanned document or a
thumbnail gets a confident-looking but meaningless answer, so the app shows such predictions greyed
out with the reasons from :func:`check`. The checks are heuristics, deliberately conservative: a
false alarm costs a glance, a missed one costs trust.

- colour: the source had real colour (``Radiograph.is_color_source``) or measurable chroma;
- tiny: the short side is below ``min_side`` pixels;
- screenshot / document: large perfectly flat non-dark regions, very few grey levels, or a
  histogram that is almost all pure black and pure white (text);
- modality: a DICOM whose Modality is not a projection radiograph (CT, MR, US ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["OodResult", "check", "check_pixels", "chroma"]

#: DICOM modalities that are projection radiographs (or close enough for these models).
XRAY_MODALITIES = {"CR", "DX", "DR", "RG", "RF", "XA", "PX", "IO", "MG", "OT", "SC"}


@dataclass(frozen=True)
class OodResult:
    """``reasons``: sentences for the reader; empty when the image looks like a radiograph."""

    reasons: tuple[str, ...] = ()
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def is_ood(self) -> bool:
        return bool(self.reasons)

    @property
    def summary(self) -> str:
        return " ".join(self.reasons)


def chroma(rgb: np.ndarray) -> float:
    """Mean colourfulness of an (H, W, 3) image in [0, 1]: mean of max-min over the channels."""
    arr = np.asarray(rgb, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        return 0.0
    arr = arr[..., :3]
    if arr.max(initial=0.0) > 1.0:
        arr = arr / 255.0
    return float((arr.max(axis=-1) - arr.min(axis=-1)).mean())


def _sample(pixels: np.ndarray, max_side: int = 512) -> np.ndarray:
    step = max(1, int(np.ceil(max(pixels.shape[:2]) / max_side)))
    return pixels[::step, ::step]


def check_pixels(
    pixels: np.ndarray,
    *,
    is_color_source: bool = False,
    rgb: np.ndarray | None = None,
    min_side: int = 128,
    modality: str | None = None,
) -> OodResult:
    """Checks on display pixels (float in [0, 1], (H, W)); see the module docstring."""
    reasons: list[str] = []
    measures: dict[str, float] = {}
    pix = np.asarray(pixels, dtype=np.float32)
    if pix.ndim == 3:
        pix = pix[..., :3].mean(axis=-1)
    h, w = pix.shape[:2]

    colour = chroma(rgb) if rgb is not None else 0.0
    measures["chroma"] = colour
    if is_color_source or colour > 0.04:
        reasons.append(
            "The image is in colour (a photograph or a screenshot?); radiographs are greyscale, so the "
            "prediction may be meaningless."
        )

    measures["short_side"] = float(min(h, w))
    if min(h, w) < min_side:
        reasons.append(
            f"The image is tiny ({w} × {h} pixels); a radiograph for reading is usually over 1000 pixels a "
            "side, so fine detail such as fracture lines is lost."
        )

    if modality and modality.upper() not in XRAY_MODALITIES:
        reasons.append(
            f"The DICOM modality is {modality.upper()}, not a projection radiograph; these models only "
            "saw radiographs."
        )

    if h * w >= 16:
        levels = np.clip(np.rint(_sample(pix) * 255.0), 0, 255).astype(np.uint8)
        hist = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
        hist /= hist.sum()
        mode = int(hist.argmax())
        n_levels = int((hist > 0.0005).sum())
        extremes = hist[:8].sum() + hist[-8:].sum()
        middle = 1.0 - extremes
        measures.update(
            mode_level=float(mode),
            mode_fraction=float(hist[mode]),
            grey_levels=float(n_levels),
            extreme_fraction=float(extremes),
        )
        # Air around the body and collimation are flat and dark in a radiograph: only flat regions
        # that are not dark count as a screenshot/document sign.
        bright_flat = mode > 40 and hist[mode] > 0.35
        few_levels = n_levels < 24
        text_like = extremes > 0.92 and hist[:8].sum() > 0.02 and hist[-8:].sum() > 0.3 and middle < 0.08
        if text_like:
            reasons.append(
                "The image is almost only pure black and pure white, like text or a scanned document, "
                "not a radiograph."
            )
        elif bright_flat:
            reasons.append(
                f"{hist[mode]:.0%} of the image is one flat grey level, like a screenshot or a document "
                "background, not a radiograph."
            )
        if few_levels and not text_like:
            reasons.append(
                f"The image has only {n_levels} grey levels; radiographs have smooth gradations, so this "
                "looks like a graphic or a screenshot."
            )
    return OodResult(tuple(reasons), measures)


def check(rg, *, rgb: np.ndarray | None = None, min_side: int = 128) -> OodResult:
    """Checks a :class:`bonecls.imaging.Radiograph` (``rgb``: the colour source, when the caller has it)."""
    return check_pixels(
        rg.pixels,
        is_color_source=bool(getattr(rg, "is_color_source", False)),
        rgb=rgb,
        min_side=min_side,
        modality=getattr(rg, "modality", None),
    )

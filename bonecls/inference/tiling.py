"""Scale that matches the film: how a classifier reads a film, in one pass or in tiles (issue 22.3).

Every engine calls this one module (through :func:`bonecls.inference.predictor.predict_in_chunks` and
:meth:`~bonecls.inference.predictor.Predictor.explain`), so PyTorch, ONNX Runtime and Keras read a
film the same way:

1. :func:`film_scale`: the film's mm per pixel, from the header (PixelSpacing, else
   ImagerPixelSpacing; :mod:`bonecls.imaging.spacing`'s sanity rules), else the assumed
   :data:`ASSUMED_SPACING_MM`, coarser where the film would exceed :data:`ASSUMED_MAX_FIELD_MM`
   (a header-less PNG/JPEG or an untrusted header), said in a note;
2. :func:`plan_reading`: a film whose field (its shorter side in mm) is at least
   :data:`TILE_WHEN_FIELD_OVER` times the model's trained field (``card.scale``) is resampled to the
   card's mm per pixel and cut into square tiles of the model's input size with at least
   :data:`OVERLAP` overlap (:func:`tile_starts`); any other film (small, already at the model's field,
   no card scale, a bare array) keeps the single squashed read;
3. :func:`merge_tiles`: the film's answer is the most suspicious in-scope tile's; out-of-scope tiles
   give no answer; fewer than a quarter in scope refuses the film. :func:`stitch_heatmaps` puts the tiles'
   heat maps back on the film (maximum where they overlap); :func:`boxes_to_film` maps boxes found on
   the resampled film back to the film's pixels.

Imports numpy, OpenCV and the result types only: no framework.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from bonecls.card_sections import TILE_MIN_IN_SCOPE, TILE_OVERLAP, TILE_RULE, TILE_WHEN_FIELD_OVER
from bonecls.imaging.spacing import spacing_problem
from bonecls.inference.results import OUT_OF_SCOPE, Prediction, Reading, TileAnswer

__all__ = [
    "ASSUMED_MAX_FIELD_MM",
    "ASSUMED_SPACING_MM",
    "OVERLAP",
    "TILE_WHEN_FIELD_OVER",
    "FilmScale",
    "ReadPlan",
    "boxes_to_film",
    "film_scale",
    "merge_tiles",
    "plan_for",
    "plan_reading",
    "reading_of",
    "shrink_shape",
    "stitch_heatmaps",
    "tile_starts",
]

#: mm per pixel assumed for a film without a trusted spacing: a full-resolution CR/DR detector
#: (0.1-0.2 mm); a downsized export is coarser, and the note on the answer says so.
ASSUMED_SPACING_MM = 0.2
#: ... but never a film larger than the largest cassette (43 cm): a huge header-less upload is coarser.
ASSUMED_MAX_FIELD_MM = 430.0
OVERLAP = TILE_OVERLAP

NOTE_ASSUMED = (
    "The file carries no trusted pixel spacing, so {mm:.3g} mm per pixel (a full-resolution detector, on a "
    "film of at most 43 cm) was assumed to set the film's scale; a downsized export is coarser than that."
)
NOTE_ALL_TILES_OUT = (
    "Every part of the film the model read ({n} tiles) is outside what it was trained on, so no answer is "
    "given."
)
NOTE_FEW_TILES_IN = (
    "Only {k} of the {n} parts of the film the model read look like what it was trained on (at least a "
    "quarter must), so no answer is given."
)


@dataclass(frozen=True)
class FilmScale:
    """The film's pixel spacing (row, col mm) and where it came from: a header tag, ``"assumed"``, or
    ``"none"`` (a bare array: no scale, single read); ``notes`` are the sentences to show."""

    spacing_mm: tuple[float, float] | None
    source: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReadPlan:
    """How one film is read: ``tiles`` (x0, y0, x1, y1) in the resampled film of ``resampled_shape``
    (empty for a single read), ``factors`` (row, col) resampled pixels per film pixel."""

    mode: str  # "single" | "tiles"
    film_shape: tuple[int, int]
    resampled_shape: tuple[int, int]
    factors: tuple[float, float]
    tiles: tuple[tuple[int, int, int, int], ...]
    scale: FilmScale
    mm_per_pixel: float | None  # the scale the model reads at (None: unknown)

    def tile_pixels(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The film resampled to the plan's scale, cut into its tiles (float32 copies)."""
        resampled = resample(pixels, self.resampled_shape)
        return [np.ascontiguousarray(resampled[y0:y1, x0:x1]) for x0, y0, x1, y1 in self.tiles]

    def tile_boxes_on_film(self) -> list[tuple[float, float, float, float]]:
        """Each tile's footprint on the film, in film pixels (continuous edges)."""
        return [boxes_to_film([t], self.factors)[0] for t in self.tiles]


def film_scale(image: Any) -> FilmScale:
    """The film's spacing: a trusted header value, else the assumed one (noted); ``"none"`` for arrays."""
    if not hasattr(image, "pixels"):
        return FilmScale(None, "none")
    spacing = getattr(image, "pixel_spacing", None)
    if spacing is not None and spacing_problem(spacing) is None:
        source = getattr(image, "pixel_spacing_source", None) or "header"
        return FilmScale((float(spacing[0]), float(spacing[1])), source)
    longest = max(np.asarray(image.pixels).shape[:2])
    assumed = min(ASSUMED_SPACING_MM, ASSUMED_MAX_FIELD_MM / max(longest, 1))
    return FilmScale((assumed, assumed), "assumed", (NOTE_ASSUMED.format(mm=assumed),))


def tile_starts(length: int, tile: int, overlap: float = OVERLAP) -> list[int]:
    """Starts of tiles of side ``tile`` covering ``length`` pixels, evenly spread, neighbours
    overlapping by at least ``overlap`` of a tile; the first starts at 0 and the last ends at
    ``length``. One start (0) when ``length <= tile``."""
    if length <= tile:
        return [0]
    stride = tile * (1.0 - overlap)
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def plan_reading(image: Any, input_size: int, trained_mm_per_pixel: float | None) -> ReadPlan:
    """The read of ``image`` for a model of ``input_size`` trained at ``trained_mm_per_pixel``."""
    pixels = np.asarray(getattr(image, "pixels", image))
    h, w = int(pixels.shape[0]), int(pixels.shape[1])
    scale = film_scale(image)
    single = ReadPlan("single", (h, w), (h, w), (1.0, 1.0), (), scale, None)
    if scale.spacing_mm is None:
        return single
    row_mm, col_mm = scale.spacing_mm
    squashed = max(h * row_mm, w * col_mm) / input_size  # what today's single read gives the model
    single = dataclasses.replace(single, mm_per_pixel=squashed)
    if trained_mm_per_pixel is None:
        return single
    trained_field = trained_mm_per_pixel * input_size
    if min(h * row_mm, w * col_mm) < TILE_WHEN_FIELD_OVER * trained_field:
        return single
    rh = max(input_size, round(h * row_mm / trained_mm_per_pixel))
    rw = max(input_size, round(w * col_mm / trained_mm_per_pixel))
    tiles = tuple(
        (x0, y0, x0 + input_size, y0 + input_size)
        for y0 in tile_starts(rh, input_size)
        for x0 in tile_starts(rw, input_size)
    )
    return ReadPlan("tiles", (h, w), (rh, rw), (rh / h, rw / w), tiles, scale, trained_mm_per_pixel)


def resample(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``pixels`` (H, W) resampled to ``shape`` (area averaging when shrinking, bilinear otherwise)."""
    pixels = np.asarray(pixels, np.float32)
    if pixels.shape[:2] == tuple(shape):
        return pixels
    shrink = shape[0] <= pixels.shape[0] and shape[1] <= pixels.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(pixels, (int(shape[1]), int(shape[0])), interpolation=interp)


def boxes_to_film(
    boxes: Sequence[Sequence[float]], factors: tuple[float, float], offset: tuple[float, float] = (0.0, 0.0)
) -> list[tuple[float, float, float, float]]:
    """Boxes (x0, y0, x1, y1; continuous pixel edges) on a resampled film (or on a tile of it at
    ``offset`` (x, y)) -> the same boxes in the film's pixels: divide by the (row, col) factors."""
    fy, fx = factors
    ox, oy = offset
    return [((x0 + ox) / fx, (y0 + oy) / fy, (x1 + ox) / fx, (y1 + oy) / fy) for x0, y0, x1, y1 in boxes]


def stitch_heatmaps(plan: ReadPlan, heatmaps: Sequence[np.ndarray | None]) -> np.ndarray:
    """The tiles' heat maps (each (S, S) or None for a tile that gives no answer) stitched on the
    resampled film (maximum where tiles overlap), then resized to the film: float32 (H, W) in [0, 1]."""
    canvas = np.zeros(plan.resampled_shape, np.float32)
    for (x0, y0, x1, y1), heat in zip(plan.tiles, heatmaps, strict=True):
        if heat is None:
            continue
        heat = np.asarray(heat, np.float32)
        if heat.shape != (y1 - y0, x1 - x0):
            heat = cv2.resize(heat, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        np.maximum(canvas[y0:y1, x0:x1], heat, out=canvas[y0:y1, x0:x1])
    film = cv2.resize(canvas, (plan.film_shape[1], plan.film_shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(film, 0.0, 1.0)


def reading_of(plan: ReadPlan, tiles: Sequence[TileAnswer] = ()) -> Reading:
    """The :class:`Reading` that tells how a film was read (on every answer)."""
    spacing = plan.scale.spacing_mm
    return Reading(
        mode=plan.mode,
        n_tiles=len(plan.tiles) if plan.mode == "tiles" else 1,
        mm_per_pixel=None if plan.mm_per_pixel is None else round(float(plan.mm_per_pixel), 4),
        spacing_mm=None if spacing is None else (round(spacing[0], 4), round(spacing[1], 4)),
        spacing_source=plan.scale.source,
        notes=plan.scale.notes + ((TILE_RULE,) if plan.mode == "tiles" else ()),
        tiles=tuple(tiles),
    )


def merge_tiles(plan: ReadPlan, answers: Sequence[Prediction]) -> Prediction:
    """One film's answer from its tiles' judged answers: the most suspicious in-scope tile's answer
    (ties: the first), when at least :data:`TILE_MIN_IN_SCOPE` of the tiles are in scope; else refused,
    with the reasons of the out-of-scope tile nearest to scope (its learned score) and a note on the
    reading that says how many tiles were in scope."""
    tiles = tuple(
        TileAnswer(
            box=(round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)),
            suspicion=round(float(a.suspicion), 6),
            in_scope=bool(a.in_scope),
            scope_score=None if a.scope_score is None else round(float(a.scope_score), 4),
        )
        for (x0, y0, x1, y1), a in zip(plan.tile_boxes_on_film(), answers, strict=True)
    )
    reading = reading_of(plan, tiles)
    in_scope = [i for i, a in enumerate(answers) if a.in_scope]
    if in_scope and len(in_scope) >= TILE_MIN_IN_SCOPE * len(answers):
        best = max(in_scope, key=lambda i: (answers[i].suspicion, -i))
        return dataclasses.replace(answers[best], reading=dataclasses.replace(reading, chosen_tile=best))
    out = [i for i, a in enumerate(answers) if not a.in_scope]
    scores = {i: float(answers[i].scope_score) for i in out if answers[i].scope_score is not None}
    refused = answers[min(scores, key=scores.__getitem__) if scores else out[0]]
    n, k = len(answers), len(in_scope)
    note = NOTE_FEW_TILES_IN.format(k=k, n=n) if k else NOTE_ALL_TILES_OUT.format(n=n)
    notes = (*reading.notes, note)
    return dataclasses.replace(
        refused,
        status=OUT_OF_SCOPE,
        in_scope=False,
        reading=dataclasses.replace(reading, notes=notes),
    )


def plan_for(image: Any, card: Any) -> ReadPlan:
    """:func:`plan_reading` with a model card's input size and training scale (``card.scale``)."""
    scale = getattr(card, "scale", None)
    return plan_reading(image, int(card.input_size), None if scale is None else float(scale.mm_per_pixel))


def shrink_shape(image: Any, input_size: int, trained_mm_per_pixel: float | None) -> tuple[int, int] | None:
    """The (h, w) to resample a film to before a one-pass model that letterboxes it (the detector):
    the card's mm per pixel where the film is finer (area averaging then, not a 15-fold bilinear
    shrink), never below ``input_size`` on the longer side; None: keep the film as it is."""
    scale = film_scale(image)
    if scale.spacing_mm is None or trained_mm_per_pixel is None:
        return None
    h, w = np.asarray(getattr(image, "pixels", image)).shape[:2]
    fy, fx = (s / trained_mm_per_pixel for s in scale.spacing_mm)
    floor = input_size / max(h, w)
    fy, fx = max(fy, floor), max(fx, floor)
    if fy >= 1.0 and fx >= 1.0:
        return None
    return max(1, round(h * min(fy, 1.0))), max(1, round(w * min(fx, 1.0)))

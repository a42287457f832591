"""De-identified report per image: PDF (fpdf2), PNG (image | overlay with a caption) and JSON.

A report only ever holds: the pixels shown (windowed) and the heat-map overlay, the prediction,
status and boxes, the model id and weights sha256, the UTC time, the image's sha256 and technical
fields of the :class:`~bonecls.imaging.Radiograph` (format, size, bit depth, photometric, modality,
body part, view, pixel spacing). It never reads DICOM headers itself and never takes a file name,
so no patient field (name, ID, birth date, accession, institution, dates) can reach it. Burned-in
text inside the pixels is the one thing it cannot remove.
"""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bonecls import __version__
from bonecls.reading import (
    BOX_COLOUR,
    BOX_DEFINITE,
    HEAT_CAPTION,
    NO_RESULT_NOTE,
    box_legend,
    box_tier,
    status_text,
)

__all__ = [
    "DISCLAIMER",
    "ReportData",
    "build_report",
    "burn_boxes",
    "legend_lines",
    "to_json",
    "to_pdf",
    "to_png",
]

DISCLAIMER = (
    "Reading aid, not a diagnosis. The shipped models were trained on synthetic phantoms rendered from "
    "one CT and are not for clinical use."
)
SCHEMA = "bonecls.report/1"


@dataclass(frozen=True)
class ReportData:
    created_utc: str
    image: dict[str, Any]
    model: dict[str, Any]
    prediction: dict[str, Any] | None
    explanation: dict[str, Any] | None
    boxes: list[dict[str, Any]] = field(default_factory=list)
    out_of_distribution: list[str] = field(default_factory=list)
    box_cuts: dict[str, float] | None = None  # {"doubt_at", "positive_at"}: dashed below, solid from
    disclaimer: str = DISCLAIMER
    schema: str = SCHEMA
    software: str = f"bonecls {__version__}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _box_dict(box: Any) -> dict[str, Any]:
    get = box.get if isinstance(box, Mapping) else lambda k, d=None: getattr(box, k, d)
    out = {k: round(float(get(k)), 1) for k in ("x0", "y0", "x1", "y1")}
    conf = get("confidence")
    out["confidence"] = None if conf is None else round(float(conf), 4)
    out["label"] = str(get("label", "") or "")
    return out


def build_report(
    rg: Any,
    *,
    card: Any,
    prediction: Any | None = None,
    boxes: Sequence[Any] = (),
    box_threshold: float | None = None,
    cam_method: str | None = None,
    target_class: str | None = None,
    window: tuple[float, float] | None = None,
    ood_reasons: Sequence[str] = (),
    box_cuts: tuple[float, float] | None = None,
    now: datetime | None = None,
) -> ReportData:
    """Collect the de-identified fields (explicitly, one by one: nothing else can leak in)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    h, w = (int(v) for v in rg.original_size)
    image = {
        "sha256": str(rg.sha256),
        "source_format": str(rg.source_format),
        "height": h,
        "width": w,
        "bit_depth": int(rg.bit_depth),
        "photometric": str(rg.photometric),
        "modality": rg.modality,
        "body_part": rg.body_part,
        "view": rg.view,
        "pixel_spacing_mm": list(rg.pixel_spacing) if rg.pixel_spacing else None,
        "window_center_width": [float(window[0]), float(window[1])] if window else None,
        "warnings": [str(x) for x in rg.warnings],
    }
    model = {
        "id": str(card.id),
        "task": str(card.task),
        "architecture": str(card.architecture),
        "framework": str(card.framework),
        "sha256": str(card.sha256),
        "class_names": [str(c) for c in card.class_names],
    }
    pred = None
    if prediction is not None and not getattr(prediction, "in_scope", True):
        # issue 21: no result for an image outside the model's scope, only that and why
        pred = {
            "in_scope": False,
            "status": "out of scope",
            "scope_reasons": [str(r) for r in getattr(prediction, "scope_reasons", ())],
            "scope_score": _rounded(getattr(prediction, "scope_score", None)),
            "scope_threshold": _rounded(getattr(prediction, "scope_threshold", None)),
        }
        cam_method, boxes = None, ()
    elif prediction is not None:
        pred = {
            "label": str(prediction.label),
            "status": str(prediction.status),
            "suspicion": round(float(prediction.suspicion), 6),
            "probabilities": {str(k): round(float(v), 6) for k, v in prediction.probabilities.items()},
            "thresholds": {k: float(v) for k, v in dict(card.thresholds).items()},
            "positive_classes": [str(c) for c in card.positive_classes],
            "in_scope": True,
            "scope_checked": bool(getattr(prediction, "scope_checked", True)),
            "scope_reasons": [str(r) for r in getattr(prediction, "scope_reasons", ())],
            "scope_score": _rounded(getattr(prediction, "scope_score", None)),
            "scope_threshold": _rounded(getattr(prediction, "scope_threshold", None)),
        }
    explanation = None
    if cam_method:
        explanation = {"method": str(cam_method), "target_class": target_class}
    box_list = [_box_dict(b) for b in boxes]
    if box_threshold is not None:
        box_list = [b for b in box_list if b["confidence"] is None or b["confidence"] >= box_threshold]
    return ReportData(
        created_utc=when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        image=image,
        model=model,
        prediction=pred,
        explanation=explanation,
        boxes=box_list,
        out_of_distribution=[str(r) for r in ood_reasons],
        box_cuts=None
        if box_cuts is None
        else {"doubt_at": float(box_cuts[0]), "positive_at": float(box_cuts[1])},
    )


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 6)


def to_json(data: ReportData) -> str:
    return json.dumps(data.as_dict(), indent=2, ensure_ascii=False)


# --- shared text -------------------------------------------------------------------------------------


def _result_lines(data: ReportData) -> list[str]:
    lines: list[str] = []
    p = data.prediction
    if p is not None and p.get("in_scope") is False:
        lines.append("Outside what this model was trained on: no result.")
        lines.extend(f"Why: {reason}" for reason in p.get("scope_reasons", []))
        lines.append(NO_RESULT_NOTE)
    elif p is not None:
        lines.append(
            f"Result: {p['label'].replace('_', ' ')}  |  status: {status_text(p['status'])}"
            f"  |  suspicion {p['suspicion']:.3f}"
        )
        probs = ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in p["probabilities"].items())
        lines.append(f"Probabilities: {probs}")
    if data.boxes:
        lines.append(
            f"Boxes: {len(data.boxes)} - "
            + "; ".join(
                f"{b['label']} {b['confidence']:.2f}" if b["confidence"] is not None else b["label"]
                for b in data.boxes[:8]
            )
        )
    if data.explanation:
        target = data.explanation.get("target_class")
        target = str(target).replace("_", " ") if target else None
        lines.append(
            f"Heat map: {data.explanation['method']}"
            + (f" for '{target}'" if target else "")
            + " - where the model looked, not a finding."
        )
    if data.out_of_distribution:
        lines.append("NOT RELIABLE: " + " ".join(data.out_of_distribution))
    return lines


def legend_lines(data: ReportData) -> list[str]:
    """What the drawn marks mean, under the images of every export."""
    lines = []
    if data.boxes and data.box_cuts:
        lines.append(box_legend(data.box_cuts["doubt_at"], data.box_cuts["positive_at"]))
    elif data.boxes:
        lines.append("Boxes: solid, at the confidence shown beside each.")
    if data.explanation:
        lines.append(HEAT_CAPTION)
    return lines


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _dashed_rect(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float, float, float], colour, width: int
) -> None:
    x0, y0, x1, y1 = xy
    dash, gap = 8, 6
    for a, b, fixed, horizontal in (
        (x0, x1, y0, True),
        (x0, x1, y1, True),
        (y0, y1, x0, False),
        (y0, y1, x1, False),
    ):
        t = a
        while t < b:
            u = min(t + dash, b)
            draw.line(
                [(t, fixed), (u, fixed)] if horizontal else [(fixed, t), (fixed, u)], fill=colour, width=width
            )
            t = u + gap


def burn_boxes(panel: Image.Image, data: ReportData, original_width: int) -> Image.Image:
    """``panel`` with the report's boxes drawn as on screen: solid when definite, dashed when in doubt,
    each labelled with its confidence. ``original_width``: the width the box coordinates refer to."""
    if not data.boxes:
        return panel
    out = panel.copy()
    draw = ImageDraw.Draw(out)
    scale = out.width / max(1, original_width)
    cuts = data.box_cuts or {"doubt_at": 0.0, "positive_at": 0.0}
    font = _font(max(10, round(12 * max(1.0, out.width / 768))))
    line_w = max(2, round(out.width / 384))
    for b in data.boxes:
        conf = 1.0 if b["confidence"] is None else float(b["confidence"])
        tier = box_tier(conf, cuts["doubt_at"], cuts["positive_at"]) or BOX_DEFINITE
        colour = _hex_rgb(BOX_COLOUR[tier])
        xy = (b["x0"] * scale, b["y0"] * scale, b["x1"] * scale, b["y1"] * scale)
        if tier == BOX_DEFINITE:
            draw.rectangle(xy, outline=colour, width=line_w)
        else:
            _dashed_rect(draw, xy, colour, line_w)
        text = f"{b['label']} {conf:.2f}".strip() + ("" if tier == BOX_DEFINITE else " (doubt)")
        left, top, right, bottom = draw.textbbox((xy[0], xy[1]), text, font=font)
        y = max(0.0, xy[1] - (bottom - top) - 4)
        draw.rectangle((xy[0], y, xy[0] + (right - left) + 4, y + (bottom - top) + 4), fill=colour)
        draw.text((xy[0] + 2, y + 1), text, fill=(0, 0, 0), font=font)
    return out


def _to_rgb(arr: np.ndarray | None) -> Image.Image | None:
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return Image.fromarray(a[..., :3], mode="RGB")


def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    return img.resize(
        (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS
    )


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def to_png(
    data: ReportData, image: np.ndarray, overlay: np.ndarray | None = None, *, max_side: int = 768
) -> bytes:
    """Image | overlay side by side, a caption below; a plain PNG without any text chunks."""
    original_width = int(np.asarray(image).shape[1])
    left = burn_boxes(_shrink(_to_rgb(image), max_side), data, original_width)
    right = (
        burn_boxes(_shrink(_to_rgb(overlay), max_side), data, original_width) if overlay is not None else None
    )
    gap = 8
    width = left.width + (gap + right.width if right else 0)
    height = max(left.height, right.height if right else 0)
    font = _font(15)
    small = _font(12)
    chars = max(40, int(width / 8))
    caption = []
    for line in _result_lines(data):
        caption += textwrap.wrap(line, chars) or [""]
    for line in legend_lines(data):
        caption += textwrap.wrap(line, chars) or [""]
    caption.append(f"Model {data.model['id']} (sha256 {data.model['sha256'][:16]}...)  |  {data.created_utc}")
    caption.append(f"Image sha256 {data.image['sha256'][:16]}...")
    disclaimer = textwrap.wrap(DISCLAIMER, int(width / 7))
    line_h, small_h = 20, 16
    cap_h = 12 + line_h * len(caption) + 6 + small_h * len(disclaimer) + 8
    canvas = Image.new("RGB", (width, height + cap_h), (255, 255, 255))
    canvas.paste(left, (0, 0))
    if right:
        canvas.paste(right, (left.width + gap, 0))
    draw = ImageDraw.Draw(canvas)
    y = height + 10
    for line in caption:
        draw.text((8, y), line, fill=(20, 20, 20), font=font)
        y += line_h
    y += 6
    for line in disclaimer:
        draw.text((8, y), line, fill=(150, 30, 30), font=small)
        y += small_h
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")  # no pnginfo: no text chunks
    return buf.getvalue()


# --- PDF ----------------------------------------------------------------------------------------------

_LATIN1_FIX = str.maketrans(
    {"—": "-", "–": "-", "…": "...", "≥": ">=", "≤": "<=", "’": "'", "“": '"', "”": '"'}
)


def _pdf_text(text: str) -> str:
    """fpdf2's core fonts are latin-1: map the few typographic characters we use, replace the rest."""
    return str(text).translate(_LATIN1_FIX).encode("latin-1", "replace").decode("latin-1")


def to_pdf(
    data: ReportData,
    image: np.ndarray,
    overlay: np.ndarray | None = None,
    *,
    compress: bool = True,
    max_side: int = 1024,
) -> bytes:
    """One A4 page: disclaimer, image and overlay, result, model and image fields, UTC time."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_compression(compress)
    pdf.set_title("bonecls reading-aid report")
    pdf.set_author("bonecls")
    pdf.set_creator(f"bonecls {__version__}")
    pdf.set_creation_date(datetime.fromisoformat(data.created_utc.replace("Z", "+00:00")))
    pdf.set_auto_page_break(auto=True, margin=14)
    pdf.add_page()
    epw = pdf.w - pdf.l_margin - pdf.r_margin

    def line(
        text: str, size: float = 10, style: str = "", colour: tuple[int, int, int] = (20, 20, 20)
    ) -> None:
        pdf.set_font("Helvetica", style=style, size=size)
        pdf.set_text_color(*colour)
        pdf.multi_cell(epw, size * 0.5, _pdf_text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    line("bonecls - reading-aid report", size=16, style="B")
    pdf.ln(1)
    pdf.set_fill_color(253, 236, 234)
    pdf.set_font("Helvetica", style="B", size=10)
    pdf.set_text_color(150, 30, 30)
    pdf.multi_cell(epw, 5, _pdf_text(DISCLAIMER), border=1, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)

    original_width = int(np.asarray(image).shape[1])
    panels = [
        burn_boxes(_shrink(p, max_side), data, original_width)
        for p in (_to_rgb(image), _to_rgb(overlay))
        if p is not None
    ]
    col_w = (epw - 4 * (len(panels) - 1)) / len(panels)
    top = pdf.get_y()
    max_h = 0.0
    for i, panel in enumerate(panels):
        h_mm = min(col_w * panel.height / panel.width, 110.0)
        w_mm = h_mm * panel.width / panel.height
        pdf.image(panel, x=pdf.l_margin + i * (col_w + 4) + (col_w - w_mm) / 2, y=top, w=w_mm, h=h_mm)
        max_h = max(max_h, h_mm)
    pdf.set_y(top + max_h + 1)
    pdf.set_font("Helvetica", size=8)
    pdf.set_text_color(90, 90, 90)
    titles = ["Radiograph (as windowed on screen)", "Heat map: where the model looked"][: len(panels)]
    for i, title in enumerate(titles):
        pdf.set_x(pdf.l_margin + i * (col_w + 4))
        pdf.cell(col_w, 4, _pdf_text(title), align="C")
    pdf.ln(5)
    for text in legend_lines(data):
        line(f"Legend: {text}", size=8, colour=(90, 90, 90))
    pdf.ln(2)

    line("Result", size=12, style="B")
    for text in _result_lines(data):
        colour = (150, 30, 30) if text.startswith("NOT RELIABLE") else (20, 20, 20)
        line(text, colour=colour)
    if data.prediction:
        th = data.prediction["thresholds"]
        if th:
            line(
                "Status rule on suspicion: doubt - review at or above "
                f"{th.get('negative_below', float('nan')):.2f}, "
                f"positive at or above {th.get('positive_at', float('nan')):.2f}, negative below both.",
                size=9,
                colour=(90, 90, 90),
            )
    pdf.ln(2)

    line("Model", size=12, style="B")
    m = data.model
    line(
        f"{m['id']} - task {m['task']}, {m['architecture']} ({m['framework']}), "
        f"classes: {', '.join(m['class_names'])}"
    )
    line(f"weights sha256: {m['sha256']}", size=8)
    pdf.ln(2)

    line("Image (technical fields only)", size=12, style="B")
    im = data.image
    fields = [
        f"format {im['source_format']}",
        f"{im['width']} x {im['height']} px",
        f"{im['bit_depth']}-bit {im['photometric']}",
    ]
    for key, name in (("modality", "modality"), ("body_part", "body part"), ("view", "view")):
        if im.get(key):
            fields.append(f"{name} {im[key]}")
    if im.get("pixel_spacing_mm"):
        fields.append("pixel spacing {:.3g} x {:.3g} mm".format(*im["pixel_spacing_mm"]))
    if im.get("window_center_width"):
        fields.append("window C {:.0f} / W {:.0f}".format(*im["window_center_width"]))
    line(", ".join(fields))
    line(f"image sha256: {im['sha256']}", size=8)
    for warning in im.get("warnings") or []:
        line(f"note: {warning}", size=9, colour=(90, 90, 90))
    pdf.ln(2)
    line(
        f"Generated {data.created_utc} (UTC) by {data.software}. De-identified: no patient fields.",
        size=8,
        colour=(90, 90, 90),
    )
    return bytes(pdf.output())

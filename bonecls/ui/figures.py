"""Plotly figures for the app: image viewer, probabilities, calibration, confusion matrix, curves.

Every function returns a ``plotly.graph_objects.Figure`` and has no Streamlit dependency, so it can
be tested and reused (reports, notebooks). Images are embedded as PNG data URIs (downsampled to
``max_side`` for display) with their pixel coordinates kept, so zoom, pan and boxes stay in the
radiograph's own pixel space.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from bonecls.imaging import encode_png
from bonecls.reading import BOX_COLOUR, BOX_DEFINITE, BOX_DOUBT

__all__ = [
    "Panel",
    "confusion_matrix_figure",
    "encode_panel",
    "extract_confusion",
    "extract_history",
    "extract_reliability",
    "image_data_uri",
    "probability_figure",
    "reliability_figure",
    "shrink",
    "to_uint8",
    "training_curves_figure",
    "viewer_figure",
]

FINDING = "#c0392b"
NORMAL = "#2e7d32"
MUTED = "#9e9e9e"
FONT = {"family": "Inter, Source Sans Pro, Helvetica, Arial, sans-serif", "size": 14}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] or uint8, (H, W) or (H, W, 3) -> uint8."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def shrink(image: np.ndarray, max_side: int = 1024) -> np.ndarray:
    """uint8 copy of ``image`` whose longer side is at most ``max_side`` (area-averaged)."""
    arr = to_uint8(image)
    h, w = arr.shape[:2]
    if max(h, w) <= max_side:
        return arr
    scale = max_side / float(max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BOX))


def _png_uri(arr: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(arr)).decode("ascii")


def image_data_uri(image: np.ndarray, max_side: int = 1024) -> tuple[str, float]:
    """PNG data URI of ``image`` shrunk to ``max_side``; returns (uri, scale) with scale = original/shown."""
    small = shrink(image, max_side)
    return _png_uri(small), np.asarray(image).shape[1] / small.shape[1]


@dataclass(frozen=True)
class Panel:
    """An encoded image for the viewer: PNG data URI plus the original size it stands for."""

    uri: str
    height: int  # of the original image (pixel coordinates of boxes and axes)
    width: int
    scale: float  # original pixels per shown pixel


def encode_panel(
    image: np.ndarray, *, original_size: tuple[int, int] | None = None, max_side: int = 1024
) -> Panel:
    """Encode ``image`` (grey or RGB; possibly already shrunk from ``original_size`` = (H, W))."""
    small = shrink(image, max_side)
    h, w = original_size or np.asarray(image).shape[:2]
    return Panel(_png_uri(small), int(h), int(w), w / small.shape[1])


def _box_fields(box: Any) -> tuple[float, float, float, float, float | None, str]:
    if isinstance(box, Mapping):
        get = box.get
    else:

        def get(key, default=None):
            return getattr(box, key, default)

    return (
        float(get("x0")),
        float(get("y0")),
        float(get("x1")),
        float(get("y1")),
        None if get("confidence") is None else float(get("confidence")),
        str(get("label", "") or ""),
    )


def _box_layout(box: Any, tier: str, greyed: bool, axes: tuple[str, str]) -> tuple[dict, dict]:
    """One box as a layout shape and its label: solid for definite, dashed for doubt (bonecls.reading),
    its label and confidence above it; ``axes`` = the panel's (xref, yref)."""
    x0, y0, x1, y1, conf, label = _box_fields(box)
    colour = MUTED if greyed else BOX_COLOUR[tier]
    xref, yref = axes
    shape = {
        "type": "rect",
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "xref": xref,
        "yref": yref,
        "line": {"color": colour, "width": 2, "dash": "solid" if tier == BOX_DEFINITE else "dash"},
    }
    text = label if conf is None else f"{label} {conf:.2f}".strip()
    if tier == BOX_DOUBT:
        text += " (doubt)"
    note = {
        "x": x0,
        "y": y0,
        "xref": xref,
        "yref": yref,
        "text": text,
        "showarrow": False,
        "xanchor": "left",
        "yanchor": "bottom",
        "font": {"color": "#000", "size": 12},
        "bgcolor": colour,
        "opacity": 0.9,
    }
    return shape, note


#: gap between the radiograph and the overlay panel, as a fraction of the figure's width
_PANEL_GAP = 0.02


def viewer_figure(
    base: np.ndarray | Panel,
    overlay: np.ndarray | Panel | None = None,
    boxes: Sequence[Any] = (),
    *,
    doubt_boxes: Sequence[Any] = (),
    titles: tuple[str, str] = ("Radiograph", "Heat map overlay"),
    max_side: int = 1024,
    height: int = 600,
    greyed: bool = False,
) -> go.Figure:
    """The radiograph (and its overlay beside it, zoom/pan linked); boxes drawn on every panel.

    ``base``: (H, W) float [0, 1] (already windowed) or uint8, or an encoded :class:`Panel`;
    ``overlay``: (H, W, 3) uint8 at the same size or a :class:`Panel`; ``boxes``: objects or dicts
    with x0, y0, x1, y1 (pixels of the original image), confidence, label, drawn solid (definite);
    ``doubt_boxes`` the same, drawn dashed in another shade (doubt — review).

    Built as one dict and validated once by ``go.Figure`` (the layout ``make_subplots`` would give: two
    panels side by side, axes matched): on every page view, ``make_subplots`` and the ``update_*`` calls
    cost 2-3 times as long (35-40 ms against 15-20 ms on a quiet core; issue 25's click-to-overlay).
    """
    panels = [base] if overlay is None else [base, overlay]
    n = len(panels)
    encoded = [p if isinstance(p, Panel) else encode_panel(p, max_side=max_side) for p in panels]
    h, w = encoded[0].height, encoded[0].width
    width = (1.0 - _PANEL_GAP * (n - 1)) / n
    data: list[dict] = []
    layout: dict[str, Any] = {}
    titles_notes, shapes, notes = [], [], []
    for i, panel in enumerate(encoded):
        suffix = "" if i == 0 else str(i + 1)
        xref, yref = f"x{suffix}", f"y{suffix}"
        scale = panel.scale
        data.append(
            {
                "type": "image",
                "source": panel.uri,
                "x0": scale / 2 - 0.5,
                "y0": scale / 2 - 0.5,
                "dx": scale,
                "dy": scale,
                "hovertemplate": "x %{x:.0f}, y %{y:.0f}<extra></extra>",
                "name": titles[i] if n > 1 else titles[0],
                "xaxis": xref,
                "yaxis": yref,
            }
        )
        left = i * (width + _PANEL_GAP)
        domain = [round(left, 12), round(left + width, 12)]
        layout[f"xaxis{suffix}"] = {
            "anchor": yref,
            "domain": domain,
            "visible": False,
            "range": [-0.5, w - 0.5],
            "matches": "x",
            "constrain": "domain",
        }
        layout[f"yaxis{suffix}"] = {
            "anchor": xref,
            "domain": [0.0, 1.0],
            "visible": False,
            "range": [h - 0.5, -0.5],
            "matches": "y",
            "scaleanchor": "x",
            "constrain": "domain",
            **({"showticklabels": False} if i else {}),
        }
        if n > 1:  # subplot titles, above each panel
            titles_notes.append(
                {
                    "text": titles[i],
                    "x": (domain[0] + domain[1]) / 2,
                    "y": 1.0,
                    "xref": "paper",
                    "yref": "paper",
                    "xanchor": "center",
                    "yanchor": "bottom",
                    "showarrow": False,
                    "font": {"color": "#e6e6e6", "size": 14},
                }
            )
        for tier, group in ((BOX_DEFINITE, boxes), (BOX_DOUBT, doubt_boxes)):
            for box in group:
                shape, note = _box_layout(box, tier, greyed, (xref, yref))
                shapes.append(shape)
                notes.append(note)
    layout.update(
        annotations=[*titles_notes, *notes],
        shapes=shapes,
        height=height,
        margin={"l": 4, "r": 4, "t": 56 if n > 1 else 36, "b": 4},
        dragmode="pan",
        paper_bgcolor="#0e1117",
        plot_bgcolor="#0e1117",
        font={**FONT, "color": "#e6e6e6"},
        showlegend=False,
    )
    return go.Figure(data=data, layout=layout)


def probability_figure(
    probabilities: Mapping[str, float],
    *,
    positive_classes: Sequence[str] = (),
    thresholds: Mapping[str, float] | None = None,
    greyed: bool = False,
    height: int | None = None,
) -> go.Figure:
    """Horizontal bars, one per class, finding classes in red; the card's two cuts on the suspicion
    (doubt, positive) as lines when one class is the finding (with several, the cuts apply to their
    sum, which no bar shows, so no line is drawn). One dict, validated once (see :func:`viewer_figure`)."""
    names = list(probabilities)
    values = [float(probabilities[k]) for k in names]
    colours = [MUTED if greyed else (FINDING if k in positive_classes else NORMAL) for k in names]
    bar = {
        "type": "bar",
        "x": values,
        "y": [k.replace("_", " ") for k in names],
        "orientation": "h",
        "marker": {"color": colours},
        "text": [f"{v:.1%}" for v in values],
        "textposition": "auto",
        "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
    }
    shapes, notes = [], []
    if thresholds and len(positive_classes) == 1 and not greyed:
        # the suspicion cuts, labelled in two rows above the bars so close cuts never overlap each
        # other, a bar's own text or the axis (doubt = sensitive cut, positive = specific cut)
        for key, name, shift, colour, dash in (
            ("negative_below", "doubt", 18, "#e67e22", "dot"),
            ("positive_at", "positive", 2, FINDING, "dash"),
        ):
            if key in thresholds:
                x = float(thresholds[key])
                shapes.append(
                    {
                        "type": "line",
                        "x0": x,
                        "x1": x,
                        "y0": 0,
                        "y1": 1,
                        "xref": "x",
                        "yref": "y domain",
                        "line": {"dash": dash, "color": colour, "width": 1.5},
                    }
                )
                notes.append(
                    {
                        "text": f"{name} ≥ {x:.2f}",
                        "x": x,
                        "y": 1,
                        "xref": "x",
                        "yref": "y domain",
                        "xanchor": "center",
                        "yanchor": "bottom",
                        "yshift": shift,
                        "showarrow": False,
                        "font": {"size": 11, "color": colour},
                    }
                )
    layout = {
        "shapes": shapes,
        "annotations": notes,
        "xaxis": {"range": [0, 1.001], "tickvals": [0, 0.25, 0.5, 0.75, 1.0], "tickformat": ".0%"},
        "yaxis": {"autorange": "reversed"},
        "height": height or 90 + 46 * len(names),
        "margin": {"l": 8, "r": 24, "t": 44, "b": 8},
        "font": FONT,
        "showlegend": False,
        "bargap": 0.3,
    }
    return go.Figure(data=[bar], layout=layout)


# --- card.test_metrics readers -------------------------------------------------------------------
# The cards come from several trainers; accept the usual spellings rather than one schema.


def _first(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    if not isinstance(mapping, Mapping):
        return None
    for key in keys:
        if key in mapping and mapping[key] is not None:
            return mapping[key]
    return None


def extract_confusion(metrics: Mapping[str, Any] | None) -> list[list[float]] | None:
    value = _first(metrics, "confusion_matrix", "confusion", "cm")
    if isinstance(value, Mapping):
        value = _first(value, "matrix", "values", "counts")
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        return None
    return arr.tolist()


def extract_reliability(metrics: Mapping[str, Any] | None) -> dict[str, list[float]] | None:
    """{'confidence': [...], 'accuracy': [...], 'count': [...] (optional)} or None."""
    rel = _first(metrics, "reliability", "reliability_diagram", "calibration", "calibration_curve")
    if not isinstance(rel, Mapping):
        return None
    bins = rel.get("bins")
    if isinstance(bins, list | tuple) and bins and all(isinstance(b, Mapping) for b in bins):
        # bonecls.training.calibration.reliability(): [{lower, upper, count, confidence, accuracy}, ...]
        kept = [b for b in bins if b.get("confidence") is not None and b.get("accuracy") is not None]
        if not kept:
            return None
        out = {
            "confidence": [float(b["confidence"]) for b in kept],
            "accuracy": [float(b["accuracy"]) for b in kept],
        }
        if all(b.get("count") is not None for b in kept):
            out["count"] = [float(b["count"]) for b in kept]
        if rel.get("ece") is not None:
            out["ece"] = [float(rel["ece"])]
        return out
    conf = _first(rel, "confidence", "bin_confidence", "mean_predicted", "prob_pred", "mean_confidence")
    acc = _first(rel, "accuracy", "bin_accuracy", "fraction_positive", "prob_true", "observed")
    count = _first(rel, "count", "bin_count", "counts", "n")
    if conf is None or acc is None or len(conf) != len(acc) or len(conf) == 0:
        return None
    out = {"confidence": [float(v) for v in conf], "accuracy": [float(v) for v in acc]}
    if count is not None and len(count) == len(conf):
        out["count"] = [float(v) for v in count]
    if rel.get("ece") is not None:
        out["ece"] = [float(rel["ece"])]
    return out


def extract_history(*sources: Mapping[str, Any] | None) -> dict[str, list[float]] | None:
    """Training curves as {series name: values per epoch}; accepts dict-of-lists or list-of-dicts."""
    for source in sources:
        hist = _first(source, "history", "training_curves", "curves", "train_history")
        if hist is None:
            continue
        series: dict[str, list[float]] = {}
        if isinstance(hist, Mapping):
            for key, values in hist.items():
                if key == "epoch" or not isinstance(values, list | tuple):
                    continue
                try:
                    series[str(key)] = [float(v) for v in values]
                except (TypeError, ValueError):
                    continue
        elif isinstance(hist, list | tuple) and hist and all(isinstance(r, Mapping) for r in hist):
            keys = [k for k in hist[0] if k != "epoch"]
            for key in keys:
                try:
                    series[str(key)] = [float(r.get(key, math.nan)) for r in hist]
                except (TypeError, ValueError):
                    continue
        if series:
            return series
    return None


def reliability_figure(rel: Mapping[str, Sequence[float]], *, ece: float | None = None) -> go.Figure:
    conf, acc = list(rel["confidence"]), list(rel["accuracy"])
    if ece is None and rel.get("ece"):
        ece = float(rel["ece"][0])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "#888"}, name="perfect")
    )
    counts = rel.get("count")
    fig.add_trace(
        go.Scatter(
            x=conf,
            y=acc,
            mode="lines+markers",
            name="model",
            line={"color": "#1f77b4"},
            marker={"size": [6 + 10 * math.sqrt(c / max(counts)) for c in counts] if counts else 8},
            hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<extra></extra>",
        )
    )
    title = "Reliability (test set)" + (f" — ECE {ece:.3f}" if ece is not None else "")
    fig.update_layout(
        title=title,
        xaxis={"title": "predicted confidence", "range": [0, 1]},
        yaxis={"title": "observed accuracy", "range": [0, 1], "scaleanchor": "x"},
        height=360,
        margin={"l": 8, "r": 8, "t": 40, "b": 8},
        font=FONT,
        showlegend=False,
    )
    return fig


def confusion_matrix_figure(matrix: Sequence[Sequence[float]], class_names: Sequence[str]) -> go.Figure:
    arr = np.asarray(matrix, dtype=float)
    labels = [str(c).replace("_", " ") for c in class_names][: arr.shape[0]]
    if len(labels) < arr.shape[0]:
        labels += [str(i) for i in range(len(labels), arr.shape[0])]
    row_sums = arr.sum(axis=1, keepdims=True)
    frac = np.divide(arr, row_sums, out=np.zeros_like(arr), where=row_sums > 0)
    text = [
        [f"{int(v) if float(v).is_integer() else round(v, 3)}<br>{f:.0%}" for v, f in zip(r, fr, strict=True)]
        for r, fr in zip(arr, frac, strict=True)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=frac,
            x=labels,
            y=labels,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            showscale=False,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Confusion matrix (test set)",
        xaxis={"title": "predicted", "side": "bottom"},
        yaxis={"title": "true", "autorange": "reversed"},
        height=360,
        margin={"l": 8, "r": 8, "t": 40, "b": 8},
        font=FONT,
    )
    return fig


def training_curves_figure(history: Mapping[str, Sequence[float]]) -> go.Figure:
    """Loss series on the left axis, everything else (accuracy, AUC ...) on the right."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for name, values in history.items():
        epochs = list(range(1, len(values) + 1))
        is_loss = "loss" in name.lower()
        fig.add_trace(
            go.Scatter(x=epochs, y=list(values), mode="lines+markers", name=name.replace("_", " ")),
            secondary_y=not is_loss,
        )
    n_epochs = max((len(v) for v in history.values()), default=1)
    fig.update_xaxes(title="epoch", dtick=1 if n_epochs <= 12 else None, tick0=1)
    fig.update_yaxes(title="loss", secondary_y=False, tickformat=".2f")
    fig.update_yaxes(title="metric", secondary_y=True, tickformat=".2f")
    fig.update_layout(
        title="Training curves",
        height=360,
        margin={"l": 8, "r": 8, "t": 40, "b": 8},
        font=FONT,
        legend={"orientation": "h", "y": -0.25},
    )
    return fig

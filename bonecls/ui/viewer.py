"""The reading view: window/level (presets, whole-unit sliders, step buttons) and the image viewer.

Why its own module: the window controls are drawn the same way for every format (DICOM, 16-bit
and 8-bit images alike) and the viewer draws boxes in the two styles of :mod:`bonecls.reading`
(solid = definite, dashed = doubt); the pages only choose what to show.

Drag to adjust: Streamlit 1.67 reports no mouse drag on an image without a custom component (a
plotly chart reports clicks and box/lasso selections, not a drag's distance), so a PACS-style
"drag on the film to change window and level" is not offered. The closest real things are here: the
two sliders (drag their handles), the presets, and +/- step buttons for level and width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import streamlit as st

from bonecls.imaging.presets import AUTO, IMAGE, as_display_number, window_presets
from bonecls.reading import HEAT_CAPTION, BoxTiers
from bonecls.ui import figures, services

__all__ = ["image_viewer", "window_controls"]

_STEP_FRACTION = 0.05  # one +/- step: 5 % of the data's range


def _state_keys(key: str, sha: str) -> tuple[str, str, str]:
    short = sha[:12]
    return f"{key}_c_{short}", f"{key}_w_{short}", f"{key}_preset_{short}"


def _set_window(wkey_c: str, wkey_w: str, center: float, width: float) -> None:
    st.session_state[wkey_c], st.session_state[wkey_w] = center, width


def _apply_preset(wkey_c: str, wkey_w: str, wkey_p: str, presets: dict[str, tuple[Any, Any]]) -> None:
    name = st.session_state.get(wkey_p)
    if name in presets:
        _set_window(wkey_c, wkey_w, *presets[name])


def _forget_preset(wkey_p: str) -> None:
    """A slider moved by hand: the window is no longer the preset's."""
    st.session_state[wkey_p] = None


def _step(wkey_c: str, wkey_w: str, d_level: float, w_factor: float, bounds: tuple[Any, ...]) -> None:
    """One +/- step: move the level by ``d_level`` or scale the width by ``w_factor``, within bounds."""
    c_min, c_max, w_min, w_max, span = bounds
    c = float(st.session_state[wkey_c]) + d_level
    w = float(st.session_state[wkey_w]) * w_factor
    st.session_state[wkey_c] = as_display_number(min(max(c, c_min), c_max), span)
    st.session_state[wkey_w] = as_display_number(min(max(w, w_min), w_max), span)
    st.session_state[wkey_c.replace("_c_", "_preset_")] = None


def window_controls(rg: Any, key: str) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Window/level for every image (8-bit too), always visible; returns (display pixels, (center, width)).

    Opens at the window the model read ("As opened"); presets, sliders in whole raw units and step
    buttons change the display and overlay only, never the prediction.
    """
    raw = np.asarray(rg.raw, dtype=np.float32)
    lo, hi = float(raw.min()), float(raw.max())
    if not hi > lo:
        st.caption("Window / level: this image has a single grey level, nothing to window.")
        return rg.pixels, rg.window
    span = hi - lo
    presets = services.presets_for(rg, window_presets)
    opened = presets.get(IMAGE, presets[AUTO])
    as_int = isinstance(opened[0], int)
    step = 1 if as_int else float(f"{span / 200:.2g}")
    c_min, c_max = as_display_number(lo, span), as_display_number(hi, span)
    w_min, w_max = step, as_display_number(2 * span, span)
    wkey_c, wkey_w, wkey_p = _state_keys(key, rg.sha256)
    # values live in session state (set here or by a callback, never as widget defaults)
    st.session_state.setdefault(wkey_c, min(max(opened[0], c_min), c_max))
    st.session_state.setdefault(wkey_w, min(max(opened[1], w_min), w_max))
    bounds = (c_min, c_max, w_min, w_max, span)
    d_level = as_display_number(_STEP_FRACTION * span, span) or step
    with st.container(border=True):
        st.segmented_control(
            "Window preset",
            list(presets),
            key=wkey_p,
            on_change=_apply_preset,
            args=(wkey_c, wkey_w, wkey_p, presets),
            help="Lung, soft tissue and bone spread the dark, middle or bright part of this image's own "
            "histogram (CR, DX and plain images have no fixed units); CT uses Hounsfield windows.",
        )
        cols = st.columns([4, 4, 3], vertical_alignment="bottom")
        with cols[0]:
            center = st.slider(
                "Level (centre)",
                c_min,
                c_max,
                step=step,
                key=wkey_c,
                on_change=_forget_preset,
                args=(wkey_p,),
            )
        with cols[1]:
            width = st.slider(
                "Window (width)",
                w_min,
                w_max,
                step=step,
                key=wkey_w,
                on_change=_forget_preset,
                args=(wkey_p,),
            )
        with cols[2]:
            steps = st.columns(4)
            for col, (icon, label, dl, wf) in zip(
                steps,
                (
                    (":material/brightness_low:", "Level down", -d_level, 1.0),
                    (":material/brightness_high:", "Level up", d_level, 1.0),
                    (":material/compress:", "Narrower window (more contrast)", 0, 0.8),
                    (":material/expand:", "Wider window (less contrast)", 0, 1.25),
                ),
                strict=True,
            ):
                with col:
                    st.button(
                        "",
                        icon=icon,
                        help=label,
                        key=f"{key}_{label.split()[0].lower()}_{label.split()[1]}_{rg.sha256[:12]}",
                        on_click=_step,
                        args=(wkey_c, wkey_w, dl, wf, bounds),
                    )
            st.button(
                "Reset",
                key=f"{key}_reset_{rg.sha256[:12]}",
                help="Back to the window the image opened with (the one the model read)",
                on_click=_set_window,
                args=(wkey_c, wkey_w, *opened),
            )
        st.caption(
            f"Raw values {as_display_number(lo, span)} … {as_display_number(hi, span)}"
            + (" (modality units after rescale)" if rg.source_format == "dicom" else "")
            + ". The model always reads the window the image opened with; this changes the display, the "
            "overlay and the exports only. No drag-on-image in this viewer: drag the slider handles or "
            "use the step buttons."
        )
    if rg.window is not None and (center, width) == tuple(opened):
        return rg.pixels, rg.window
    from bonecls.imaging import apply_window

    return apply_window(raw, float(center), float(width), invert=rg.inverted), (float(center), float(width))


def image_viewer(
    rg: Any,
    display: np.ndarray,
    window: tuple[float, float] | None,
    heat: services.HeatMap | None,
    colormap: str,
    opacity: float,
    *,
    title: str,
    key: str,
    boxes: BoxTiers | None = None,
    greyed: bool = False,
) -> None:
    """Radiograph | overlay (zoom/pan linked), drawn from a shrunk, cached copy of the windowed image.

    Boxes: definite ones solid, doubtful ones dashed, on every panel. The overlay is captioned as
    where the model looked, never as a finding.
    """
    from bonecls.ui.widgets import plot

    small, base = services.display_panel(rg, window, display)
    overlay = None
    if heat is not None:
        rgb = services.render_overlay(small, heat.heatmap, colormap, opacity)
        overlay = figures.encode_panel(rgb, original_size=(base.height, base.width))
    definite: Sequence[Any] = boxes.definite if boxes is not None else ()
    doubt: Sequence[Any] = boxes.doubt if boxes is not None else ()
    fig = figures.viewer_figure(
        base, overlay, definite, doubt_boxes=doubt, titles=("Radiograph", title), greyed=greyed
    )
    plot(fig, key=key)
    if heat is not None:
        st.caption(f":material/visibility: {HEAT_CAPTION}")
        for note in heat.warnings:
            st.caption(f":material/info: {note}")

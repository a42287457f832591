"""The result of a reading page: status and operating points, the study sentence, the heat-map switch.

Why one entry point (:func:`result_panel`): every way a result can be shown goes through it, so a
result that must not be shown as one (issue 21's scope gate: "Outside what this model was trained
on: … No result.") is one branch at its top, not a condition in every page.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from bonecls.reading import heat_shown_by_default, operating_point_lines, status_text
from bonecls.ui import figures, services

__all__ = ["heat_switch", "out_of_scope_panel", "refusal_panel", "result_panel", "study_line"]


def result_panel(entry: services.ModelEntry, prediction: Any, greyed: bool) -> None:
    """The classifier's answer beside its class-probability chart, or, for an image outside the
    model's scope (issue 21), :func:`out_of_scope_panel` and nothing that looks like a result."""
    if not getattr(prediction, "in_scope", True):
        out_of_scope_panel(entry, prediction)
        return
    _answer_panel(entry, prediction, greyed)
    reasons = tuple(getattr(prediction, "scope_reasons", ()) or ())
    if not getattr(prediction, "scope_checked", True):
        st.caption(":orange[Scope not checked: research output, not for reading.]")
    elif reasons:  # in scope with a caveat: e.g. the learned scope is not fitted for this model
        st.caption(" ".join(reasons))


def out_of_scope_panel(entry: services.ModelEntry, prediction: Any) -> None:
    """ "Outside what this model was trained on: <reasons>. No result." No label, probability bars, status
    or heat map; the raw output (when the model ran) only in a closed expander, marked unreliable."""
    raw = None
    if getattr(prediction, "probabilities", None):
        raw = {
            "raw label (unreliable)": prediction.label,
            "raw probabilities (unreliable)": {
                k: round(float(v), 4) for k, v in prediction.probabilities.items()
            },
            "scope score": prediction.scope_score,
            "scope threshold": prediction.scope_threshold,
        }
    refusal_panel(entry, tuple(getattr(prediction, "scope_reasons", ()) or ()), raw)


def refusal_panel(entry: services.ModelEntry, reasons: tuple[str, ...], raw: dict | None) -> None:
    """The out-of-scope panel of any model (classifier or detector): the reasons, what the model reads,
    and ``raw`` (None: the model was not run) in a closed expander marked unreliable."""
    st.error(
        f"**Outside what this model was trained on:** {' '.join(reasons)} **No result.**",
        icon=":material/block:",
    )
    card = entry.card
    if card.scope is not None and card.scope.declared.description:
        st.caption(f"Model {entry.id} reads: {card.scope.declared.description}")
    with st.expander("Raw model output (unreliable: not a result)"):
        if raw is None:
            st.caption("The model was not run: the image was refused before any feature was computed.")
        else:
            st.caption(
                "UNRELIABLE. The model answers even for images it cannot read; these numbers mean nothing "
                "for this image."
            )
            st.json(raw)


def _answer_panel(entry: services.ModelEntry, prediction: Any, greyed: bool) -> None:
    from bonecls.ui.widgets import muted, plot, status_markdown

    card = entry.card
    finding = " + ".join(f"P({c.replace('_', ' ')})" for c in card.positive_classes)
    cols = st.columns([2, 3])
    with cols[0]:
        st.markdown(
            f"### {status_markdown(prediction.status, greyed=greyed)}",
            help="Doubt — review: worth a second look (the sensitive cut). Positive: the finding is called "
            "(the specific cut). Negative: below both.",
        )
        lines = [
            f"Suspicion **{prediction.suspicion:.0%}** = {finding}",
            f"Most likely class: **{prediction.label.replace('_', ' ')}** "
            f"({prediction.probabilities[prediction.label]:.0%})",
        ]
        for line in lines:
            if greyed:
                muted(line.replace("**", ""))
            else:
                st.markdown(line)
        st.caption(
            " ".join(operating_point_lines(card))
            + f" · model {entry.id} ({card.architecture}) · sha256 {entry.sha256[:12]}…"
        )
    with cols[1]:
        fig = figures.probability_figure(
            prediction.probabilities,
            positive_classes=card.positive_classes,
            thresholds=card.thresholds.model_dump(),
            greyed=greyed,
        )
        plot(fig, key=f"probs_{entry.id}")


def study_line(sentence: str, *, greyed: bool = False) -> None:
    """The one study-level sentence that reconciles the models on this page."""
    if greyed:
        st.markdown(f":gray[Study: {sentence} (not reliable: see the warning above)]")
    else:
        st.info(f"**Study:** {sentence}", icon=":material/summarize:")


def heat_switch(key: str, sha256: str, status: str | None) -> bool:
    """Whether to show the heat map: on by itself for doubt and positive results, on request otherwise."""
    default = heat_shown_by_default(status)
    state_key = f"{key}_heat_{sha256[:12]}"
    st.session_state.setdefault(state_key, default)
    shown = bool(
        st.toggle(
            "Show heat map",
            key=state_key,
            help="Where the model looked — not a finding. On by itself only for doubt and positive results.",
        )
    )
    if not default and not shown:
        st.caption(
            f"Heat map off for a {status_text(status or '')} result; turn it on to see where the model looked"
        )
    return shown

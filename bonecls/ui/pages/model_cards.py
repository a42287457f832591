"""Models page: each installed model card (data, intended use, test metrics, charts) and the audit log."""

from __future__ import annotations

from typing import Any

import streamlit as st

from bonecls.ui import error_policy, figures, services
from bonecls.ui.widgets import TASK_TITLES, page_view, plot


@page_view
def models_page() -> None:
    """Every installed card (and the tasks without one), invalid cards, and the audit log download."""
    st.title("Installed models")
    with error_policy.guarded("models page"):
        from bonecls.audit import audit_path, default_log
        from bonecls.weights import weights_root

        entries = services.installed_models()
        st.caption(f"Weights folder: {weights_root()}")
        installed_tasks = {e.task for e in entries}
        missing = [t for t in TASK_TITLES if t not in installed_tasks]
        if not entries:
            st.info("No model is installed.", icon=":material/inventory_2:")
        for task in missing:
            st.caption(f":material/info: No model installed for {TASK_TITLES[task]} (task '{task}').")
        for i, entry in enumerate(entries):
            _model_card(entry, expanded=i == 0)
        for folder, error in services.invalid_cards():
            error_policy.error_box(f"{folder.name}: {error}")

        st.divider()
        st.subheader("Audit log")
        log_ = default_log()
        count = log_.count()
        cols = st.columns([1, 2], vertical_alignment="bottom")
        with cols[0]:
            st.metric("Predictions logged", count)
        with cols[1]:
            st.download_button(
                "Download audit log (CSV)",
                data=log_.export_csv,
                file_name="bonecls-audit.csv",
                mime="text/csv",
                icon=":material/download:",
                on_click="ignore",
                key="audit_csv",
            )
        st.caption(
            f"{audit_path()} — time (UTC), image sha256, model id and sha256, task, result, status and "
            "suspicion. No patient data."
        )


def scope_gate_line(class_names: list[str] | tuple[str, ...], scope: Any) -> str:
    """The gate's thresholds in one sentence: one per answer where the card has them, else one."""
    if scope.answer_thresholds is not None:
        limits = ", ".join(
            f"{name} {limit:.4g}" for name, limit in zip(class_names, scope.answer_thresholds, strict=True)
        )
        kept = scope.metrics.get("heldout_in_scope_by_answer") or {}
        on_test = ", ".join(f"{name} {kept[name]:.1%}" for name in class_names if name in kept)
        how = (
            f"one threshold per answer ({limits}), each chosen to keep {scope.in_scope_rate:.1%} of the "
            "held-out training-like images given that answer (one pooled threshold refused images with a "
            "finding more often)" + (f"; kept on its own test split by answer: {on_test}" if on_test else "")
        )
    else:
        how = (
            f"threshold {scope.threshold:.4g}, chosen to keep {scope.in_scope_rate:.1%} of held-out "
            "training-like images"
        )
    return f"**Scope gate** ({scope.method}): {how}; fitted on {scope.fitted_on or 'not stated'}."


def _metric_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The card's scalar test metrics as table rows (nested ones are drawn as charts instead)."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        rows.append({"metric": key.replace("_", " "), "value": round(float(value), 4)})
    return rows


#: The headline metrics as the side-by-side table names them (bonecls.training.metrics.HEADLINE), and
#: where a card written before headline blocks keeps the same figure without an interval.
VALIDATION_ROWS = (
    ("roc_auc", "ROC-AUC", ("roc_auc",)),
    ("pr_auc", "PR-AUC", ()),
    ("sensitivity_doubt", "Sensitivity at doubt", ("test_at_negative_below", "sensitivity")),
    ("specificity_doubt", "Specificity at doubt", ("test_at_negative_below", "specificity")),
    ("sensitivity_positive", "Sensitivity at positive", ("test_at_positive_at", "sensitivity")),
    ("specificity_positive", "Specificity at positive", ("test_at_positive_at", "specificity")),
    ("accuracy", "Accuracy", ("accuracy",)),
    ("f1_macro", "Macro-F1", ("f1_macro",)),
)
NO_EXTERNAL = (
    "No external validation yet: these figures come from a held-out split of the training source only. "
    "Score another site's prepared images with `train/evaluate.py --external DATA --card {id}`."
)


def _with_interval(entry: dict[str, Any] | None) -> str:
    """``0.912 (0.871-0.944)``; the value alone when there is no interval; a dash when undefined."""
    if not entry or entry.get("value") is None:
        return "—"
    ci = entry.get("ci95")
    return f"{entry['value']:.3f} ({ci[0]:.3f}–{ci[1]:.3f})" if ci else f"{entry['value']:.3f}"


def _older_figure(metrics: dict[str, Any], path: tuple[str, ...]) -> str:
    """A figure from a card written before headline blocks (no interval), or a dash."""
    value: Any = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return f"{value:.3f} (no CI)" if path and isinstance(value, int | float) else "—"


def validation_table(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Rows of headline metrics; a column for the internal test split and one per external data set,
    each ``value (95% CI)``, with the images (positives) each column counts in its first row."""
    internal = (metrics.get("headline") or {}).get("image")
    columns: dict[str, dict[str, Any] | None] = {"Internal test": internal}
    for name, ext in (metrics.get("external") or {}).items():
        columns[f"External: {name}"] = (ext.get("headline") or {}).get("image")
    rows = [
        {
            "metric": "Images (positives)",
            **{
                col: f"{block['n']} ({block['n_positive']})" if block else str(metrics.get("n", "—"))
                for col, block in columns.items()
            },
        }
    ]
    for key, label, older in VALIDATION_ROWS:
        row = {"metric": label}
        for col, block in columns.items():
            row[col] = _with_interval(block.get(key)) if block else _older_figure(metrics, older)
        rows.append(row)
    return rows


def _validation(card_id: str, metrics: dict[str, Any]) -> None:
    """Internal and external validation side by side, or the sentence saying there is no external one."""
    st.markdown("**Internal and external validation** (95% bootstrap intervals)")
    st.dataframe(validation_table(metrics), hide_index=True, width="content")
    external = metrics.get("external") or {}
    if not external:
        st.caption(NO_EXTERNAL.format(id=card_id))
    for name, ext in external.items():
        d = ext.get("data") or {}
        st.caption(
            f"External '{name}': {d.get('images')} images from {d.get('source') or d.get('path')} "
            f"({d.get('layout')} layout), prepared {d.get('prepared')}, scored {ext.get('scored')}."
        )


#: the held-out sets as a reader names them
HELD_OUT_SET_WORDS = {"ct": "other CT", "chain": "chain", "style": "lesion style"}


def held_out_table(card: Any) -> list[dict[str, str]]:
    """The card's held-out exams (main and current repeats) as rows: one per exam and set, then the
    exam's pooled row; the headline figure (ROC-AUC, macro-F1 for three-class, mAP@0.5 for detectors),
    the lift, the pointing game or the boxes found, and the share of the images the scope gate answers.
    Empty without a held-out exam."""
    from bonecls.card_limitations import current_repeats, headline_key, pct

    main = card.evaluation.get("held_out_variants")
    if not main:
        return []

    def share(v: Any) -> str:
        return "—" if v is None else pct(v)

    def num(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    def whole(v: Any) -> str:
        return "—" if v is None else f"{100 * v:.0f}"

    rows = []
    for exam in (main, *current_repeats(card)):
        pooled = exam.get("pooled", {})
        key, set_key, label = headline_key(card, pooled)  # the figure the limitations sentence leads with
        detector = key == "map50"
        sets = [
            (HELD_OUT_SET_WORDS.get(n.split("=")[0], n) + f": {n.split('=')[-1]}", f, set_key)
            for n, f in exam.get("sets", {}).items()
        ]
        for name, f, figure in [*sets, ("pooled", pooled, key)]:
            scope = f.get("scope") or {}
            ci = f.get("ci95") or {}  # the rows of an exam scored since session 17

            def interval(k: str, fmt: Any, ci: dict = ci) -> str:
                return f" [{fmt(ci[k][0])}–{fmt(ci[k][1])}]" if ci.get(k) else ""

            rows.append(
                {
                    "seed": str(exam.get("seed", "—")),
                    "set": name,
                    "figure": f"{label} {num(f.get(figure))}" + interval(figure, num),
                    "lift": share(f.get("lift")) + interval("lift", share),
                    "pointing / found": share(
                        f.get("froc_sensitivity_at_0.5_fp") if detector else f.get("pointing")
                    )
                    + interval("froc_sensitivity_at_0.5_fp" if detector else "pointing", share),
                    "gate answers": (
                        f"{share(scope.get('answered'))} ({whole(scope.get('answered_lesion'))} / "
                        f"{whole(scope.get('answered_lesion_free'))})"
                        if scope
                        else "not measured"
                    ),
                }
            )
    return rows


def _held_out(card: Any) -> None:
    """The held-out exams behind the limitations sentence, or nothing for a card without one."""
    rows = held_out_table(card)
    if rows:
        st.markdown(
            "**Held-out rendering variants** (a CT, a processing chain and a lesion style it never saw)"
        )
        st.dataframe(rows, hide_index=True, width="content")
        st.caption(
            "Lift: share of with/without-lesion pairs where the lesion raises the model's suspicion. "
            "Pointing: share of heat-map peaks on the lesion (found, for a detector: share of lesion boxes "
            "at 0.5 false positives per image). The figures are the model's on every image; gate answers: "
            "the share its scope gate lets through, then in brackets the percent of the images with a "
            "lesion and without. Square brackets: the 95% interval (a bootstrap over the with/without "
            "pairs)."
        )


# What a card's input_transform does to the image, as the Models page says it (after the channel count)
_INPUT_TRANSFORM_NOTE = {
    "rank": "; grey levels rank-equalised before the network (each pixel's rank in its image)"
}


def _model_card(entry: services.ModelEntry, expanded: bool = True) -> None:
    """One card in an expander: task, classes, thresholds, provenance, metrics table and charts."""
    card = entry.card
    title = f"**{card.id}** — {TASK_TITLES.get(card.task, card.task)} · {card.architecture}"
    with st.expander(title, expanded=expanded, icon=":material/model_training:"):
        cols = st.columns(2)
        with cols[0]:
            st.markdown(
                f"- **Task:** {card.task} ({card.framework})\n"
                f"- **Architecture:** {card.architecture}, head {card.head}, {card.input_size} px, "
                f"{card.in_chans} channel(s){_INPUT_TRANSFORM_NOTE.get(card.input_transform or '', '')}\n"
                f"- **Trained scale:** {card.scale_summary}\n"
                f"- **Classes:** {', '.join(card.class_names)} "
                f"(finding: {', '.join(card.positive_classes)})\n"
                f"- **Thresholds on suspicion:** negative below {card.thresholds.negative_below:.2f}, "
                f"positive at {card.thresholds.positive_at:.2f}; temperature {card.temperature:.3g}\n"
                f"- **Created:** {card.created}"
            )
        with cols[1]:
            st.markdown(f"**Training data.** {card.training_data or 'not stated'}")
            st.markdown(f"**Intended use.** {card.intended_use}")
            if card.limitations:
                st.markdown(f"**Limitations.** {card.limitations}")
        st.markdown(f"**Weights sha256** `{card.sha256}`")
        _held_out(card)
        _scope_section(card)
        if card.command:
            st.markdown(f"**Trained with** `{card.command}`")
        metrics = dict(card.test_metrics or {})
        rows = _metric_rows(metrics)
        if rows or metrics.get("headline") or metrics.get("external"):
            _validation(card.id, metrics)
        if rows:
            st.markdown("**Test metrics**")
            st.dataframe(rows, hide_index=True, width="content")
        confusion = figures.extract_confusion(metrics)
        reliability = figures.extract_reliability(metrics)
        history = figures.extract_history(metrics, card.extra)
        charts = [c for c in (confusion, reliability, history) if c]
        if charts:
            chart_cols = st.columns(len(charts))
            i = 0
            if confusion:
                with chart_cols[i]:
                    names = metrics.get("class_names") or card.class_names
                    plot(figures.confusion_matrix_figure(confusion, names), key=f"cm_{card.id}")
                i += 1
            if reliability:
                with chart_cols[i]:
                    plot(figures.reliability_figure(reliability), key=f"rel_{card.id}")
                i += 1
            if history:
                with chart_cols[i]:
                    plot(figures.training_curves_figure(history), key=f"curves_{card.id}")
        elif not rows:
            st.caption("This card has no test metrics.")


def _scope_section(card: Any) -> None:
    """What the model was trained on (its declared scope) and its scope gate's figures (issue 21)."""
    from bonecls.scope.declared import DECLARED_SCOPES

    scope = card.scope
    declared = scope.declared if scope is not None else DECLARED_SCOPES.get(card.task)
    if declared is not None:
        codes = "; ".join(
            f"{what}: {', '.join(values)}"
            for what, values in (
                ("body parts", declared.body_parts),
                ("views", declared.views),
                ("modalities", declared.modalities),
            )
            if values
        )
        st.markdown(
            f"**Reads (declared scope).** {declared.description or 'not described'} "
            f"({codes}; age group {declared.age_group}). Images outside it get no result."
            + (f" Scope {declared.derived_from}." if declared.derived_from else "")
        )
    if scope is None:
        st.caption(
            "No learned scope fitted: only the DICOM header and the image checks decide what this model "
            "refuses, and every answer says so."
        )
        return
    st.markdown(scope_gate_line(card.class_names, scope))
    rows = _metric_rows(scope.metrics)
    if rows:
        st.dataframe(rows, hide_index=True, width="content", key=f"scope_{card.id}")

"""The `bonecls` console script: list models, predict (and explain) files, render phantoms.

Scripts and PACS exports call this; it must never stop at the first bad file. Each file gets one
line (or one JSON object); a file that cannot be read prints its clinician-readable error and the
rest go on. The exit code is 0 when every file succeeded, 1 when any failed, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from bonecls.errors import BoneclsError, WeightsError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".gif", ".webp", ""}


def _expand(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given; folders expand to the image-like files inside them (sorted, recursive)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if (
                    child.is_file()
                    and child.suffix.lower() in IMAGE_SUFFIXES
                    and not child.name.startswith(".")
                ):
                    yield child
        else:
            yield path


def _cmd_models(args: argparse.Namespace) -> int:
    from bonecls.weights import scan_cards, weights_root

    root = Path(args.root) if args.root else weights_root()
    entries = scan_cards(root)
    if args.json:
        rows = [
            {"path": str(e.path), "card": e.card.model_dump() if e.card else None, "error": e.error}
            for e in entries
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not entries:
        print(f"No model cards under {root}.")
        return 0
    for e in entries:
        if e.card is None:
            print(f"{e.path.name:<16} INVALID  {e.error}")
            continue
        c = e.card
        metrics = ", ".join(
            f"{k}={v:.3f}"
            for k, v in c.test_metrics.items()
            if isinstance(v, float) and not isinstance(v, bool)
        )
        print(
            f"{c.id:<16} {c.task:<14} {c.framework:<11} {c.architecture:<18} "
            f"{c.input_size}px classes={','.join(c.class_names)}  sha256={c.sha256[:12]}  {metrics}"
        )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from bonecls.imaging import load_radiograph
    from bonecls.inference.load import engines_for, load_classifier
    from bonecls.weights import load_card

    try:
        card, card_dir = load_card(args.model)
    except BoneclsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    if card.framework == "ultralytics":
        from bonecls.detection.detector import Detector

        engine = Detector.from_card(card_dir, scope=not args.no_scope)
    elif engines_for(card.framework):  # a classifier card, PyTorch or Keras
        # predict-only over many files: ONNX Runtime when it can be used (measured faster on CPU,
        # BENCHMARKS.md), the card's own framework otherwise; CAMs always run on the native engine.
        wanted = "auto" if not args.cam and args.engine == "auto" else "native"
        engine = load_classifier(card_dir, engine=wanted, scope=not args.no_scope)
    else:
        print(f"error: the CLI cannot serve {card.framework} models yet.", file=sys.stderr)
        return 2

    cam_dir = Path(args.cam) if args.cam else None
    if cam_dir is not None:
        cam_dir.mkdir(parents=True, exist_ok=True)

    failed = 0
    files = list(_expand(args.files))
    if not files:
        print("error: no files given or found.", file=sys.stderr)
        return 2
    for path in files:
        try:
            rg = load_radiograph(path)
            record = _predict_one(engine, card, rg, path, cam_dir, args)
        except BoneclsError as exc:
            failed += 1
            record = {"file": str(path), "error": str(exc)}
        except OSError as exc:  # a missing or unreadable path: say which, go on
            failed += 1
            record = {"file": str(path), "error": f"Cannot open the file: {exc.strerror or exc}."}
        _emit(record, args.json)
    return 1 if failed else 0


def _predict_one(engine, card, rg, path: Path, cam_dir: Path | None, args: argparse.Namespace) -> dict:
    if card.framework == "ultralytics":
        scoped = engine.detect_scoped(rg, conf=args.conf)
        record = {"file": str(path), "model": card.id, "boxes": _boxes_json(scoped.boxes)}
        verdict = scoped.verdict
        if verdict is None:
            record.update(scope=RESEARCH)
        else:
            record.update(_scope_json(verdict.in_scope, verdict.reasons, verdict.score))
            if not verdict.in_scope:
                record.update(
                    status="out of scope", raw_output_unreliable={"boxes": _boxes_json(scoped.raw_boxes)}
                )
        record["warnings"] = list(rg.warnings)
        return record
    out = None
    if cam_dir is not None:
        from bonecls.imaging import encode_png

        explanation = engine.predict_and_explain(rg, method=args.cam_method)
        pred = explanation.prediction
        if pred.in_scope:  # no heat map of an image the model cannot read
            out = cam_dir / f"{path.stem}.{args.cam_method.replace('+', 'p')}.png"
            out.write_bytes(encode_png(explanation.overlay))
    else:
        pred = engine.predict(rg)
    record = {"file": str(path), "model": card.id}
    answer = {
        "label": pred.label,
        "suspicion": round(pred.suspicion, 4),
        "probabilities": {k: round(v, 4) for k, v in pred.probabilities.items()},
    }
    if not pred.scope_checked:
        record.update(answer, status=pred.status, scope=RESEARCH)
    elif pred.in_scope:
        record.update(answer, status=pred.status, **_scope_json(True, pred.scope_reasons, pred.scope_score))
    else:
        record.update(
            label=None, status=pred.status, **_scope_json(False, pred.scope_reasons, pred.scope_score)
        )
        if pred.model_was_run:
            record["raw_output_unreliable"] = answer
    if pred.reading is not None:  # how the film was read: one pass or tiles, at which scale
        record["reading"] = pred.reading.to_dict()
    record["warnings"] = list(rg.warnings)
    if out is not None:
        record["cam"] = str(out)
    return record


#: What ``--no-scope`` answers say about the gate: raw output, for research only.
RESEARCH = "not checked (research)"


def _scope_json(in_scope: bool, reasons: Sequence[str], score: float | None) -> dict:
    return {
        "in_scope": bool(in_scope),
        "scope_reasons": list(reasons),
        "scope_score": None if score is None else round(float(score), 4),
    }


def _boxes_json(boxes: Sequence) -> list[dict]:
    return [
        {
            "x0": round(b.x0, 1),
            "y0": round(b.y0, 1),
            "x1": round(b.x1, 1),
            "y1": round(b.y1, 1),
            "confidence": round(b.confidence, 4),
            "label": b.label,
        }
        for b in boxes
    ]


def _emit(record: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
        return
    name = record["file"]
    if "error" in record:
        print(f"{name}: ERROR {record['error']}", flush=True)
    elif record.get("in_scope") is False:
        print(f"{name}: OUT OF SCOPE, no result. {' '.join(record['scope_reasons'])}", flush=True)
    elif "boxes" in record:
        boxes = "; ".join(
            f"{b['label']} {b['confidence']:.2f} [{b['x0']:.0f},{b['y0']:.0f},{b['x1']:.0f},{b['y1']:.0f}]"
            for b in record["boxes"]
        )
        print(f"{name}: {len(record['boxes'])} box(es) {boxes}".rstrip(), flush=True)
    else:
        extra = f"  cam={record['cam']}" if "cam" in record else ""
        extra += "  [scope not checked: research output]" if record.get("scope") == RESEARCH else ""
        print(
            f"{name}: {record['label']} ({record['status']}, suspicion {record['suspicion']:.3f}){extra}",
            flush=True,
        )
    reading = record.get("reading")
    if reading is not None:
        print(f"  read: {reading['summary']}", flush=True)
        for note in reading["notes"]:
            print(f"  note: {note}", flush=True)
    for warning in record.get("warnings", []):
        print(f"  warning: {warning}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bonecls",
        description="X-ray reading aid (not a diagnosis): models, predictions with Grad-CAM, phantoms.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_models = sub.add_parser("models", help="list installed model cards")
    p_models.add_argument("--root", help="weights folder (default: $BONECLS_WEIGHTS or the shipped weights/)")
    p_models.add_argument("--json", action="store_true", help="print the cards as JSON")
    p_models.set_defaults(func=_cmd_models)

    p_pred = sub.add_parser("predict", help="predict files or folders (one line or JSON object per file)")
    p_pred.add_argument("files", nargs="+", help="images (PNG/JPEG/TIFF/BMP/DICOM) or folders of them")
    p_pred.add_argument("--model", default="fracture", help="card id or card folder (default: fracture)")
    p_pred.add_argument("--cam", metavar="DIR", help="also write a heat-map overlay PNG per file to DIR")
    p_pred.add_argument(
        "--cam-method", default="gradcam", help="CAM method (gradcam, gradcam++, eigencam ...)"
    )
    p_pred.add_argument(
        "--conf", type=float, default=0.25, help="box confidence threshold (detection models)"
    )
    p_pred.add_argument(
        "--engine",
        choices=["auto", "pytorch"],
        default="auto",
        help="classifier engine without --cam: auto = ONNX Runtime if installed, else PyTorch",
    )
    p_pred.add_argument(
        "--no-scope",
        action="store_true",
        help="skip each model's scope gate and print raw answers, labelled research output "
        "(never for reading: an image the model was not trained on gets a meaningless answer)",
    )
    p_pred.add_argument("--json", action="store_true", help="one JSON object per line")
    p_pred.set_defaults(func=_cmd_predict)

    from bonecls.phantom.cli import add_parser as add_phantom_parser

    add_phantom_parser(sub)
    from bonecls.pacs.cli import add_parsers as add_pacs_parsers

    add_pacs_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

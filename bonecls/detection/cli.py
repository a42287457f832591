"""Train the YOLOv8 pneumonia-opacity detector on a YOLO dataset and write weights/<id>/{model.pt,card.json}.

Examples::

    python train/detect.py --data data/pneumonia-yolo/data.yaml --output weights/pneumonia-det-yolov8n
    python train/detect.py --data ... --device 0,1 --batch 64 --epochs 100     # multi-GPU (DDP)
    python train/detect.py --data ... --weights weights/pneumonia-det-yolov8n  # fine-tune from a card

Nothing is downloaded: the network is never used (see bonecls.detection.offline.configure_offline). Without
--weights the model is built from Ultralytics' packaged ``yolov8n.yaml`` (random initialisation).

(This module is the parser and ``main()`` behind ``train/detect.py``; the training is
:func:`bonecls.detection.train.train_detector`.)
"""

from __future__ import annotations

import argparse
import shlex
import sys

from bonecls.detection.detector import DETECTOR_TASKS


def build_parser() -> argparse.ArgumentParser:
    """The options of train/detect.py (defaults as in :func:`~bonecls.detection.train.train_detector`)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="YOLO data.yaml (train/val/test image folders, names)")
    p.add_argument(
        "--output", required=True, help="model folder to write, e.g. weights/pneumonia-det-yolov8n"
    )
    p.add_argument("--id", dest="model_id", default=None, help="card id (default: the output folder's name)")
    p.add_argument("--arch", default="yolov8n", help="Ultralytics model YAML stem (default yolov8n)")
    p.add_argument("--weights", default=None, help="start from a model card (id, folder, card.json) or a .pt")
    p.add_argument("--weights-sha256", default=None, help="expected sha256 of a --weights .pt without a card")
    p.add_argument(
        "--task",
        choices=DETECTOR_TASKS,
        default="pneumonia-det",
        help="card task: pneumonia-det (opacity boxes) or fracture-det (fracture/comminuted boxes)",
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument(
        "--time",
        type=float,
        default=None,
        help="training budget in hours; overrides --epochs (Ultralytics fits the schedule to it)",
    )
    p.add_argument("--imgsz", type=int, default=512, help="square input size (default 512)")
    p.add_argument("--batch", type=int, default=16, help="total batch size (split across GPUs)")
    p.add_argument("--device", default="cpu", help='"cpu", "0", or "0,1" for multi-GPU DDP')
    p.add_argument("--workers", type=int, default=2, help="dataloader workers per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=50, help="early-stopping patience in epochs")
    p.add_argument("--training-data", default=None, help="the card's training_data sentence")
    p.add_argument(
        "--input-transform",
        choices=("inherit", "rank", "none"),
        default="inherit",
        help="grey-level transform before the network, in training and reading, written on the card: "
        "rank = each pixel's mid-rank in its image (monotone processing curves give the same input); "
        "inherit (default) = the --weights card's, none from scratch; none = no transform",
    )
    p.add_argument("--keep-run", action="store_true", help="keep Ultralytics' run folder as <output>/run")
    p.add_argument("--plots", action="store_true", help="let Ultralytics draw plots (needs --keep-run)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Train, print the card's summary; 0 on success, 2 (with the reason on stderr) on a BoneclsError."""
    args = build_parser().parse_args(argv)
    from bonecls.detection.train import describe_card, train_detector
    from bonecls.errors import BoneclsError

    command = "python train/detect.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        card, out = train_detector(
            args.data,
            args.output,
            weights=args.weights,
            weights_sha256=args.weights_sha256,
            arch=args.arch,
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            workers=args.workers,
            seed=args.seed,
            patience=args.patience,
            model_id=args.model_id,
            task=args.task,
            command=command,
            training_data=args.training_data,
            train_kwargs={"time": args.time} if args.time else None,
            keep_run=args.keep_run,
            plots=args.plots and args.keep_run,
            input_transform=args.input_transform,
        )
    except BoneclsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(describe_card(card))
    print(f"wrote {out / card.weights_file} and {out / 'card.json'}")
    return 0

"""Train the YOLOv8 pneumonia-opacity detector on a YOLO dataset and write weights/<id>/{model.pt,card.json}.

Examples::

    python train/detect.py --data data/pneumonia-yolo/data.yaml --output weights/pneumonia-det-yolov8n
    python train/detect.py --data ... --device 0,1 --batch 64 --epochs 100     # multi-GPU (DDP)
    python train/detect.py --data ... --weights weights/pneumonia-det-yolov8n  # fine-tune from a card

Nothing is downloaded: the network is never used (see bonecls.detection.offline.configure_offline). Without
--weights the model is built from Ultralytics' packaged ``yolov8n.yaml`` (random initialisation).
"""

from __future__ import annotations

import sys

from bonecls.detection.cli import main

if __name__ == "__main__":
    sys.exit(main())

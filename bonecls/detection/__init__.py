"""Pneumonia opacity boxes with Ultralytics YOLOv8, offline: the ONLY package that imports ultralytics.

Ultralytics is AGPL-3.0; keeping it behind this package (tests/test_architecture.py checks that no other
module imports it) keeps the rest of bonecls free of it. Importing this package, or any module below, is
cheap: ultralytics, torch, OpenCV and ONNX Runtime are imported inside the functions that use them, and
always after :func:`bonecls.detection.offline.configure_offline`.

Modules:

* :mod:`.offline` - Ultralytics without network (fonts, weights, hub, analytics, update checks off);
  ``import_ultralytics()`` configures that before the first import.
* :mod:`.boxes` - :class:`~.boxes.DetBox`, image to BGR uint8, letterbox and NMS as Ultralytics does them.
* :mod:`.detector` - :class:`~.detector.Detector` (PyTorch, EigenCAM), ``export_onnx``,
  :class:`~.detector.OnnxDetector` (ONNX Runtime), all from sha256-verified model cards.
* :mod:`.evaluate` - YOLO data.yaml and labels, ``evaluate_detector``, ``choose_conf_threshold``.
* :mod:`.train` - ``train_detector`` (model.pt + card.json), ``describe_card``.
* :mod:`.metrics` - IoU, AP/mAP and the RSNA Pneumonia score in plain numpy.
* :mod:`.cli` - the parser and ``main()`` of ``train/detect.py``.
"""

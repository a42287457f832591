"""Pooled backbone features of the YOLOv8 detector, for its learned scope (:mod:`bonecls.scope`).

Ultralytics is AGPL-3.0, so only ``bonecls/detection/`` touches the detector; this module hands the
model-agnostic scope package plain feature vectors. The features are the spatial means of the
backbone stages that feed the neck (YOLOv8: C2f at stride 8 and 16, SPPF at stride 32), recorded by
forward hooks on the detector's ``DetectionModel`` while it runs on the letterboxed image exactly as
:meth:`Detector.eigencam` prepares it (grey -> BGR uint8 -> square letterbox with grey 114 -> RGB,
scaled to [0, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["BACKBONE_LAYERS", "FEATURES_OUTPUT", "add_feature_output", "detector_features", "layer_names"]

#: Backbone stages of a YOLOv8 DetectionModel whose outputs are pooled (P3 C2f, P4 C2f, P5 SPPF).
BACKBONE_LAYERS = (4, 6, 9)


def layer_names(layers: Sequence[int] = BACKBONE_LAYERS) -> tuple[str, ...]:
    """The names written into the scope statistics for these layer indices (``model.4`` ...)."""
    return tuple(f"model.{i}" for i in layers)


def detector_features(
    detector: Any, images: Sequence[Any], layers: Sequence[int] = BACKBONE_LAYERS, batch_size: int = 32
) -> np.ndarray:
    """(N, D) float32 pooled backbone features of ``images`` (Radiographs or arrays) for a ``Detector``,
    in batches of ``batch_size`` (every letterboxed image has the card's square size)."""
    import torch

    from bonecls.detection.boxes import film_at_card_scale, letterbox

    model = detector.torch_model()
    size = detector.input_size
    device = next(model.parameters()).device
    captured: dict[int, torch.Tensor] = {}

    def hook_for(slot: int):
        def hook(_module, _args, output):
            captured[slot] = output.detach().float().mean(dim=(2, 3)).cpu()

        return hook

    handles = [model.model[i].register_forward_hook(hook_for(slot)) for slot, i in enumerate(layers)]
    rows = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = np.stack(
                    [
                        letterbox(film_at_card_scale(image, detector.card, detector.input_size)[0], size)[0][
                            ..., ::-1
                        ].transpose(2, 0, 1)
                        for image in images[start : start + batch_size]
                    ]
                )
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).float().div(255.0)
                captured.clear()
                model(x)
                rows.append(torch.cat([captured[s] for s in range(len(layers))], dim=1))
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(rows).numpy().astype(np.float32)


#: Name of the ONNX graph output that holds the pooled backbone features (N, D).
FEATURES_OUTPUT = "features"


def add_feature_output(proto: Any, layers: Sequence[int] = BACKBONE_LAYERS) -> Any:
    """``proto`` (an exported YOLOv8 ``onnx.ModelProto``) with a second output ``features``: the spatial
    means of the outputs of ``model.<i>`` for ``layers``, concatenated as :func:`detector_features` does,
    so ONNX Runtime computes the scope gate's input in the same run as the boxes.

    A stage's output is found by the exporter's node scopes (``/model.4/...``): the one tensor that a
    node of the stage produces and a node outside it reads. Raises ``ValueError`` when that is not one
    tensor (an unexpected graph); the export then has no fast path with the gate."""
    import onnx
    from onnx import helper

    graph = proto.graph
    pooled = []
    for i in layers:
        scope = f"/model.{i}/"
        inside = [n for n in graph.node if n.name.startswith(scope)]
        produced = {t for n in inside for t in n.output}
        read_outside = {t for n in graph.node if not n.name.startswith(scope) for t in n.input}
        outputs = sorted(produced & read_outside)
        if len(outputs) != 1:
            raise ValueError(f"stage model.{i} of the ONNX graph has {len(outputs)} outputs, expected one")
        pool, flat = f"scope_pool_{i}", f"scope_flat_{i}"
        graph.node.append(helper.make_node("GlobalAveragePool", [outputs[0]], [pool], name=f"/scope/pool{i}"))
        graph.node.append(helper.make_node("Flatten", [pool], [flat], name=f"/scope/flatten{i}", axis=1))
        pooled.append(flat)
    graph.node.append(helper.make_node("Concat", pooled, [FEATURES_OUTPUT], name="/scope/concat", axis=1))
    graph.output.append(
        helper.make_tensor_value_info(FEATURES_OUTPUT, onnx.TensorProto.FLOAT, ["batch", "dim"])
    )
    onnx.checker.check_model(proto)
    return proto

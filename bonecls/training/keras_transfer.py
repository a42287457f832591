"""``train/keras_transfer.py``: seed 004's Keras recipe on prepared shards, saved as a servable card.

Seed 004 trained its three-class models (healthy / fractured / beyond repair) in Keras: transfer
learning from InceptionV3 or Xception with L2 regularisation on the base, a Dense + BatchNorm head,
and augmentation *without shear* (shear made fractured and beyond repair look alike). Teams that keep
that recipe train here; the result is served by the same app as the PyTorch models
(:class:`bonecls.inference.keras_predictor.KerasPredictor`).

* Data: the prepared uint8 shards of ``train/prepare.py``, read with
  :class:`bonecls.training.shards.ShardDataset` into a ``tf.data`` pipeline (resize, augmentation,
  grey -> ``in_chans``, the card's normalisation: the same preprocessing the predictor applies).
* Models: ``inception_v3`` / ``xception`` from ``keras.applications`` (ImageNet weights when
  reachable, else from scratch) or ``custom_cnn`` (small, from scratch: tests and quick runs); the
  head ends in ``Dense(logits)`` + ``Activation(softmax)`` so the saved model gives probabilities
  to any Keras user while the predictor reads the logits.
* Devices: ``tf.distribute.MirroredStrategy`` over the visible GPUs (the batch size is per GPU), the
  default strategy on CPU.
* Output, like ``train/classify.py``: the best epoch's weights (validation loss), a temperature and
  thresholds fitted on validation (:mod:`.calibration`), test metrics (:mod:`.metrics`), written as
  ``model.keras`` + ``card.json`` (sha256 on the card) + report files in ``--output``, and
  ``summary.json`` in ``--run-dir``.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bonecls.data import TASK_CLASSES
from bonecls.errors import BoneclsError
from bonecls.training import TrainingError

__all__ = ["ARCHITECTURES", "CAM_LAYERS", "build_model", "build_parser", "main", "parse_args", "run"]

#: Architecture -> smallest input side it accepts.
ARCHITECTURES = {"custom_cnn": 16, "inception_v3": 75, "xception": 71}
#: The feature map Grad-CAM weighs (written to the card's ``extra.cam_layer``).
CAM_LAYERS = {"custom_cnn": "relu3", "inception_v3": "mixed10", "xception": "block14_sepconv2_act"}
NORMALIZATION = 0.5, 0.5  # pixels in [0, 1] -> [-1, 1], what InceptionV3 / Xception expect
# Keras's default 0.99 leaves the running statistics near their initial values for the first few
# hundred steps, so a short run would validate (and ship) a head that sees the wrong statistics.
BN_MOMENTUM = 0.9
_IMAGENET_HOST = ("storage.googleapis.com", 443)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train a Keras classifier (seed 004's transfer-learning recipe) on prepared shards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data and task")
    g.add_argument("--data", required=True, help="prepared dataset folder (train/prepare.py output)")
    g.add_argument("--task", choices=sorted(TASK_CLASSES), default=None, help="default: from the classes")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=list(ARCHITECTURES), default="inception_v3")
    g.add_argument(
        "--weights",
        choices=["auto", "imagenet", "none"],
        default="auto",
        help="base weights: auto = ImageNet when its download host is reachable, else from scratch",
    )
    g.add_argument("--in-chans", type=int, choices=[1, 3], default=None, help="default: 3, custom_cnn 1")
    g.add_argument("--image-size", type=int, default=None, help="default: the shards' size")
    g.add_argument("--l2", type=float, default=1e-4, help="L2 factor on the base's kernels")
    g.add_argument("--dense", type=int, default=256, help="units of the head's Dense + BatchNorm layer")
    g.add_argument("--dropout", type=float, default=0.3)
    g.add_argument("--freeze-base", action="store_true", help="train the head only (transfer learning)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=32, help="images per replica (GPU) per step")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--patience", type=int, default=8, help="early stopping on validation loss; 0 = off")
    g.add_argument("--class-weights", choices=["inverse", "none"], default="inverse")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=None, help="TensorFlow intra-op threads (CPU)")
    g = p.add_argument_group("augmentation (no shear: seed 004)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--rotate", type=float, default=10.0, help="max rotation, degrees")
    g.add_argument("--zoom", type=float, default=0.1)
    g.add_argument("--translate", type=float, default=0.05, help="fraction of the size")
    g.add_argument("--contrast", type=float, default=0.15)
    g = p.add_argument_group("output")
    g.add_argument("--output", required=True, help="model folder to write (model.keras + card.json)")
    g.add_argument("--id", default=None, help="card id; default: the --output folder name")
    g.add_argument("--run-dir", default=None, help="summary.json; default runs/<id>")
    g.add_argument("--training-data", default=None, help="card sentence on the data; default: from the data")
    g.add_argument("--sensitivity", type=float, default=0.95, help="target for the card's negative_below")
    g.add_argument("--specificity", type=float, default=0.95, help="target for the card's positive_at")
    g.add_argument("--no-progress", action="store_true", help="one line per epoch instead of a progress bar")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.in_chans is None:
        args.in_chans = 1 if args.model == "custom_cnn" else 3
    return args


# ------------------------------------------------------------------------------------------ model


def _imagenet_weights(args: argparse.Namespace) -> str | None:
    """'imagenet' or None; ``auto`` probes the download host (a few seconds at most) instead of hanging."""
    if args.model == "custom_cnn" or args.weights == "none":
        return None
    if args.in_chans != 3:
        if args.weights == "imagenet":
            raise TrainingError(
                "ImageNet weights take 3-channel inputs; pass --in-chans 3 or --weights none."
            )
        return None
    if args.weights == "imagenet":
        return "imagenet"
    try:
        socket.create_connection(_IMAGENET_HOST, timeout=5).close()
        return "imagenet"
    except OSError:
        print(
            f"warning: {_IMAGENET_HOST[0]} is unreachable, so {args.model} trains from scratch (no ImageNet "
            "weights); expect a much weaker model. Pass --weights imagenet where the internet is reachable."
        )
        return None


def _add_l2(base: Any, reg: Any) -> None:
    """L2 on every kernel of an already-built base (``keras.applications`` take no regularizer)."""
    for layer in base.layers:
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            variable = getattr(layer, attr, None)
            if variable is not None and hasattr(variable, "regularizer"):
                variable.regularizer = reg
                setattr(layer, f"{attr}_regularizer", reg)  # so the saved config says so


def build_model(
    keras: Any,
    arch: str,
    num_classes: int,
    image_size: int,
    in_chans: int,
    *,
    weights: str | None = None,
    l2: float = 1e-4,
    dense: int = 256,
    dropout: float = 0.3,
    freeze_base: bool = False,
) -> Any:
    """Seed 004's model: base (L2 on its kernels) -> GAP -> Dense + BatchNorm + ReLU + Dropout ->
    ``logits`` -> ``probabilities`` (softmax). The CAM layer is ``CAM_LAYERS[arch]``."""
    L = keras.layers
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = keras.Input((image_size, image_size, in_chans), name="image")
    if arch == "custom_cnn":
        x, conv = inputs, {"padding": "same", "use_bias": False, "kernel_regularizer": reg}
        for i, filters in enumerate((16, 32, 64), start=1):
            x = L.Conv2D(filters, 3, name=f"conv{i}", **conv)(x)
            x = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{i}")(x)
            x = L.Activation("relu", name=f"relu{i}")(x)
            if i < 3:
                x = L.MaxPooling2D(name=f"pool{i}")(x)
    elif arch in ("inception_v3", "xception"):
        app = keras.applications.InceptionV3 if arch == "inception_v3" else keras.applications.Xception
        base = app(include_top=False, weights=weights, input_tensor=inputs)
        if reg is not None:
            _add_l2(base, reg)
        base.trainable = not freeze_base
        x = base.output
    else:
        raise TrainingError(f"Unknown Keras architecture '{arch}'; choose one of {', '.join(ARCHITECTURES)}.")
    x = L.GlobalAveragePooling2D(name="head_pool")(x)
    x = L.Dense(dense, use_bias=False, name="head_dense")(x)
    x = L.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = L.Activation("relu", name="head_relu")(x)
    x = L.Dropout(dropout, name="head_dropout")(x)
    x = L.Dense(num_classes, name="logits")(x)
    outputs = L.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"bonecls_{arch}")


# ------------------------------------------------------------------------------------------- data


def _augmenter(keras: Any, args: argparse.Namespace) -> list[Any]:
    """Flip, rotation, zoom, translation, contrast; deliberately no shear (seed 004)."""
    L, seed = keras.layers, args.seed
    layers = [L.RandomFlip("horizontal", seed=seed)]
    if args.rotate > 0:
        layers.append(L.RandomRotation(args.rotate / 360.0, fill_mode="reflect", seed=seed + 1))
    if args.zoom > 0:
        layers.append(L.RandomZoom(args.zoom, fill_mode="reflect", seed=seed + 2))
    if args.translate > 0:
        layers.append(L.RandomTranslation(args.translate, args.translate, fill_mode="reflect", seed=seed + 3))
    if args.contrast > 0:
        layers.append(L.RandomContrast(args.contrast, value_range=(0.0, 1.0), seed=seed + 4))
    return layers


def make_dataset(
    tf: Any,
    ds: Any,
    *,
    batch_size: int,
    image_size: int,
    in_chans: int,
    shuffle: bool = False,
    seed: int = 0,
    augment: list[Any] | None = None,
) -> Any:
    """``tf.data`` over a :class:`ShardDataset`: (normalised NHWC float32, label) batches."""
    n, size = len(ds), ds.size
    labels = tf.constant(ds.labels.astype(np.int32))
    mean, std = NORMALIZATION

    def read(i: Any) -> np.ndarray:
        return ds[int(i)][0].numpy()[0]

    def load(i: Any) -> tuple[Any, Any]:
        img = tf.numpy_function(read, [i], tf.uint8, stateful=False)
        img.set_shape((size, size))
        return img, tf.gather(labels, i)

    def prep(x: Any, y: Any) -> tuple[Any, Any]:
        x = tf.cast(x, tf.float32)[..., None] / 255.0
        if image_size != size:
            x = tf.image.resize(x, (image_size, image_size), antialias=image_size < size)
        for layer in augment or ():
            x = layer(x, training=True)
        x = tf.clip_by_value(x, 0.0, 1.0)
        if in_chans > 1:
            x = tf.repeat(x, in_chans, axis=-1)
        return (x - mean) / std, y

    idx = tf.data.Dataset.range(n)
    if shuffle:
        idx = idx.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return idx.map(load).batch(batch_size).map(prep, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


# -------------------------------------------------------------------------------------------- run


def _callbacks(keras: Any, patience: int, history_seconds: list[float]) -> list[Any]:
    class BestWeights(keras.callbacks.Callback):
        """Keep the weights of the epoch with the lowest validation loss; restore them at the end."""

        def __init__(self) -> None:
            super().__init__()
            self.best, self.weights, self.epoch = math.inf, None, 0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            history_seconds.append(time.perf_counter() - self._t0)
            loss = float((logs or {}).get("val_loss", math.inf))
            if loss < self.best or self.weights is None:
                self.best, self.weights, self.epoch = loss, self.model.get_weights(), epoch + 1

        def on_train_end(self, logs: Any = None) -> None:
            if self.weights is not None:
                self.model.set_weights(self.weights)

    out = [BestWeights()]
    if patience > 0:
        out.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience))
    return out


def command_line(args: argparse.Namespace) -> str:
    return shlex.join(["python", "train/keras_transfer.py", *args.argv])


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, calibrate, test and save; returns the run summary (also ``<run-dir>/summary.json``)."""
    t_start = time.perf_counter()
    # torch-side modules first: they load Triton, which must come before TensorFlow (see import_keras)
    from bonecls.inference.keras_loader import import_keras
    from bonecls.prepare import load_index
    from bonecls.training.classify import check_writable, resolve_task
    from bonecls.training.shards import ShardDataset

    index = load_index(args.data)
    task, class_names, positive = resolve_task(index, args.task)
    train_ds, val_ds, test_ds = (ShardDataset(args.data, s, index) for s in ("train", "val", "test"))
    image_size = args.image_size or train_ds.size
    if image_size < ARCHITECTURES[args.model]:
        print(f"warning: {args.model} needs at least {ARCHITECTURES[args.model]} px; inputs are upsampled.")
        image_size = ARCHITECTURES[args.model]
    out_dir = Path(args.output)
    card_id = args.id or out_dir.resolve().name
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / card_id
    check_writable(out_dir, "output folder")
    check_writable(run_dir, "run folder")

    keras, tf = import_keras()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    global_batch = args.batch_size * replicas
    weights = _imagenet_weights(args)
    with strategy.scope():
        model = build_model(
            keras,
            args.model,
            len(class_names),
            image_size,
            args.in_chans,
            weights=weights,
            l2=args.l2,
            dense=args.dense,
            dropout=args.dropout,
            freeze_base=args.freeze_base,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(args.lr),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=["accuracy"],
        )
    counts = train_ds.class_counts()
    class_weight = None
    if args.class_weights == "inverse":
        n, k = sum(counts), len(counts)
        class_weight = {i: (n / (k * c) if c else 0.0) for i, c in enumerate(counts)}
    common = {"batch_size": global_batch, "image_size": image_size, "in_chans": args.in_chans}
    augment = _augmenter(keras, args) if args.augment else None
    train_tf = make_dataset(tf, train_ds, shuffle=True, seed=args.seed, augment=augment, **common)
    val_tf, test_tf = (make_dataset(tf, ds, **common) for ds in (val_ds, test_ds))
    print(
        f"Training Keras {args.model} ({'ImageNet' if weights else 'from scratch'}, {args.in_chans} ch, "
        f"{image_size} px) for {task} on {len(train_ds)} train / {len(val_ds)} val / {len(test_ds)} test "
        f"images; {replicas} replica(s) ({type(strategy).__name__}), batch {global_batch}, lr {args.lr:g}.",
        flush=True,
    )
    seconds: list[float] = []
    fit = model.fit(
        train_tf,
        validation_data=val_tf,
        epochs=args.epochs,
        class_weight=class_weight,
        callbacks=_callbacks(keras, args.patience, seconds),
        verbose=2 if args.no_progress else 1,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    h = fit.history
    history = [
        {
            "epoch": e + 1,
            "train_loss": float(h["loss"][e]),
            "train_accuracy": float(h["accuracy"][e]),
            "val_loss": float(h["val_loss"][e]),
            "val_accuracy": float(h["val_accuracy"][e]),
            "epoch_seconds": seconds[e] if e < len(seconds) else None,
            "images_per_s": len(train_ds) / seconds[e] if e < len(seconds) and seconds[e] > 0 else None,
        }
        for e in range(len(h["loss"]))
    ]
    best_epoch = 1 + int(np.argmin([r["val_loss"] for r in history])) if history else 0
    logits_model = keras.Model(model.inputs, model.get_layer("logits").output)
    val_logits = logits_model.predict(val_tf, verbose=0)
    test_logits = logits_model.predict(test_tf, verbose=0)
    return _finish(
        args,
        keras,
        model,
        index,
        task,
        class_names,
        positive,
        image_size,
        (val_logits, val_ds.labels),
        (test_logits, test_ds.labels),
        history,
        best_epoch,
        out_dir,
        run_dir,
        card_id,
        {"weights": weights, "replicas": replicas, "strategy": type(strategy).__name__, "t_start": t_start},
    )


def _save_model(keras: Any, model: Any, out_dir: Path) -> str:
    """``out_dir/model.keras`` without optimizer state, written atomically; returns its sha256."""
    from bonecls.weights import sha256_file

    inference = keras.Model(model.inputs, model.outputs, name=model.name)  # same layers, not compiled
    tmp_dir = Path(tempfile.mkdtemp(prefix=".keras-save-", dir=out_dir))
    try:
        tmp = tmp_dir / "model.keras"
        inference.save(tmp)
        digest = sha256_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_dir / "model.keras")
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return digest


def _finish(
    args: argparse.Namespace,
    keras: Any,
    model: Any,
    index: dict,
    task: str,
    class_names: list[str],
    positive: list[str],
    image_size: int,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    history: list[dict],
    best_epoch: int,
    out_dir: Path,
    run_dir: Path,
    card_id: str,
    info: dict[str, Any],
) -> dict[str, Any]:
    import tensorflow as tf

    from bonecls.training import report
    from bonecls.training.calibration import calibrate, reliability
    from bonecls.training.classify import (
        DEFAULT_LIMITATIONS,
        INTENDED_USE,
        PHANTOM_LIMITATIONS,
        training_data_sentence,
    )
    from bonecls.training.metrics import binary_rates, classification_metrics, is_positive, nll, softmax_np
    from bonecls.training.metrics import suspicion as suspicion_of
    from bonecls.weights import ModelCard, Normalization, Thresholds, write_card

    (val_logits, val_labels), (test_logits, test_labels) = val, test
    cal = calibrate(val_logits, val_labels, class_names, positive, args.sensitivity, args.specificity)
    t, th = cal["temperature"], cal["thresholds"]
    test_probs = softmax_np(test_logits, t)
    tm = classification_metrics(test_labels, test_probs, class_names, positive)
    rel = reliability(test_probs, test_labels)
    s = suspicion_of(test_probs, class_names, positive)
    pos = is_positive(test_labels, class_names, positive)
    extra = {
        "test_at_negative_below": binary_rates(pos, s, th["negative_below"]),
        "test_at_positive_at": binary_rates(pos, s, th["positive_at"]),
        "test_nll": nll(test_logits, test_labels, t),
        "best_epoch": best_epoch,
        "epochs_run": len(history),
    }
    test_metrics = report.card_test_metrics(tm, cal, rel, history, extra)
    training_data, phantom = training_data_sentence(index, args)
    sha = _save_model(keras, model, out_dir)
    mean, std = NORMALIZATION
    card = ModelCard(
        id=card_id,
        task=task,
        framework="keras",
        architecture=args.model,
        head="dense_bn",
        class_names=class_names,
        positive_classes=positive,
        input_size=image_size,
        in_chans=args.in_chans,
        normalization=Normalization(mean=[mean] * args.in_chans, std=[std] * args.in_chans),
        temperature=t,
        thresholds=Thresholds(negative_below=th["negative_below"], positive_at=th["positive_at"]),
        weights_file="model.keras",
        sha256=sha,
        training_data=training_data,
        test_metrics=test_metrics,
        command=command_line(args),
        intended_use=INTENDED_USE,
        limitations=PHANTOM_LIMITATIONS if phantom else DEFAULT_LIMITATIONS,
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
        extra={
            "cam_layer": CAM_LAYERS[args.model],
            "base_weights": info["weights"] or "none",
            "freeze_base": bool(args.freeze_base),
            "l2": args.l2,
            "dense": args.dense,
            "dropout": args.dropout,
            "optimizer": "adam",
            "lr": args.lr,
            "global_batch": args.batch_size * info["replicas"],
            "replicas": info["replicas"],
            "strategy": info["strategy"],
            "epochs": args.epochs,
            "seed": args.seed,
            "augmentation": {
                "hflip": 0.5 if args.augment else 0.0,
                "rotate_deg": args.rotate if args.augment else 0.0,
                "zoom": args.zoom if args.augment else 0.0,
                "translate": args.translate if args.augment else 0.0,
                "contrast": args.contrast if args.augment else 0.0,
            },
            "shear": 0.0,
            "dataset_fingerprint": index.get("fingerprint"),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    )
    write_card(card, out_dir)
    report.write_json(test_metrics, out_dir / "metrics.json")
    report.confusion_png(tm["confusion_matrix"], class_names, out_dir / "confusion.png")
    report.curves_png(history, out_dir / "curves.png")
    report.reliability_png(rel, out_dir / "reliability.png")
    summary = {
        "id": card_id,
        "output": str(out_dir),
        "run_dir": str(run_dir),
        "sha256": sha,
        "framework": "keras",
        "replicas": info["replicas"],
        "train_seconds": float(sum(r["epoch_seconds"] or 0.0 for r in history)),
        "total_seconds": time.perf_counter() - info["t_start"],
        "test_accuracy": tm["accuracy"],
        "test_f1_macro": tm["f1_macro"],
        "test_auc": tm.get("roc_auc"),
        "best_epoch": best_epoch,
        "epochs": [r["epoch"] for r in history],
        "temperature": t,
        "thresholds": {"negative_below": th["negative_below"], "positive_at": th["positive_at"]},
    }
    report.write_json(summary, run_dir / "summary.json")
    auc = tm.get("roc_auc")
    print(
        f"Test: accuracy {tm['accuracy']:.3f}, macro F1 {tm['f1_macro']:.3f}, "
        f"AUC {math.nan if auc is None else auc:.3f}, ECE {rel['ece']:.3f} (T={t:.2f}); thresholds "
        f"{th['negative_below']:.3f}/{th['positive_at']:.3f}. Saved {out_dir}/card.json (sha256 {sha[:12]})."
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except BoneclsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0

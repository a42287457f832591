"""``train/keras_transfer.py``: seed 004's Keras recipe on prepared shards, saved as a servable card.

Seed 004 trained its three-class models (healthy / fractured / beyond repair) in Keras: transfer
learning from InceptionV3 or Xception with L2 regularisation on the base, a Dense + BatchNorm head,
and augmentation *without shear* (shear made fractured and beyond repair look alike). Teams that keep
that recipe train here; the result is served by the same app as the PyTorch models
(:class:`bonecls.inference.keras_predictor.KerasPredictor`).

* Data: the prepared uint8 shards of ``train/prepare.py``, read with
  :class:`bonecls.training.shards.ShardDataset` into a ``tf.data`` pipeline (resize, augmentation,
  grey -> ``in_chans``, the card's normalisation: the same preprocessing the predictor applies).
* Models (:mod:`.keras_models`): ``inception_v3`` / ``xception`` from ``keras.applications``
  (ImageNet weights when reachable, a base-weights file with ``--pretrained PATH``, else from scratch)
  or ``custom_cnn`` (small, from scratch: tests and quick runs); the head ends in ``Dense(logits)`` +
  ``Activation(softmax)`` so the saved model gives probabilities to any Keras user while the predictor
  reads the logits.
* Devices: ``tf.distribute.MirroredStrategy`` over the visible GPUs (the batch size is per GPU), the
  default strategy on CPU.
* Output, like ``train/classify.py``: the best epoch's weights (validation loss), a temperature and
  thresholds fitted on validation (:mod:`.calibration`), test metrics (:mod:`.metrics`), written as
  ``model.keras`` + ``card.json`` (sha256 on the card) + report files in ``--output``, and
  ``summary.json`` in ``--run-dir``; then the learned scope gate on the model's own pooled features
  (:func:`bonecls.training.scope_fit.fit_scope_from_shards`, as the PyTorch trainer: fitted on the
  train split, threshold on val, in-scope rate on test, written on the card).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bonecls.data import TASK_CLASSES
from bonecls.errors import BoneclsError
from bonecls.training.keras_models import ARCHITECTURES, CAM_LAYERS, base_weights, build_model

if TYPE_CHECKING:
    from bonecls.training.shards import ShardDataset

__all__ = ["ARCHITECTURES", "CAM_LAYERS", "build_model", "build_parser", "main", "parse_args", "run"]

NORMALIZATION = 0.5, 0.5  # pixels in [0, 1] -> [-1, 1], what InceptionV3 / Xception expect


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
        "--pretrained",
        dest="weights",
        default="auto",
        metavar="auto|imagenet|none|PATH",
        help="base weights: auto = ImageNet when its download host is reachable, else from scratch; a "
        "PATH loads a Keras 'notop' weights file from disk (offline), its sha256 recorded on the card",
    )
    g.add_argument("--weights-sha256", "--pretrained-sha256", dest="weights_sha256", default=None)
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


@dataclass(frozen=True)
class _Setup:
    """What a Keras run was asked to do, on what data, and where it writes."""

    args: argparse.Namespace
    index: dict
    task: str
    class_names: list[str]
    positive: list[str]
    train: ShardDataset
    val: ShardDataset
    test: ShardDataset
    image_size: int
    out_dir: Path
    card_id: str
    run_dir: Path


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, calibrate, test and save; returns the run summary (also ``<run-dir>/summary.json``)."""
    t_start = time.perf_counter()
    # torch-side modules first: they load Triton, which must come before TensorFlow (see import_keras)
    from bonecls.inference.keras_loader import import_keras

    setup = _setup(args)
    keras, tf = import_keras()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    weights = base_weights(args)
    with strategy.scope():
        model = _compiled_model(keras, setup, weights)
    train_tf, val_tf, test_tf = _datasets(keras, tf, setup, args.batch_size * replicas)
    print(
        f"Training Keras {args.model} ({'ImageNet' if weights else 'from scratch'}, {args.in_chans} ch, "
        f"{setup.image_size} px) for {setup.task} on {len(setup.train)} train / {len(setup.val)} val / "
        f"{len(setup.test)} test images; {replicas} replica(s) ({type(strategy).__name__}), "
        f"batch {args.batch_size * replicas}, lr {args.lr:g}.",
        flush=True,
    )
    history = _fit(keras, model, setup, train_tf, val_tf)
    best_epoch = 1 + int(np.argmin([r["val_loss"] for r in history])) if history else 0
    logits_model = keras.Model(model.inputs, model.get_layer("logits").output)
    val_logits = logits_model.predict(val_tf, verbose=0)
    test_logits = logits_model.predict(test_tf, verbose=0)
    recipe = {
        "weights": weights,
        "replicas": replicas,
        "strategy": type(strategy).__name__,
        "t_start": t_start,
    }
    return _finish(
        keras,
        model,
        setup,
        (val_logits, setup.val.labels),
        (test_logits, setup.test.labels),
        history,
        best_epoch,
        recipe,
    )


def _setup(args: argparse.Namespace) -> _Setup:
    """Load the prepared splits, settle the task and input size, and prove the folders writable."""
    from bonecls.prepare import load_index
    from bonecls.training.preflight import check_writable, resolve_task
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
    return _Setup(
        args,
        index,
        task,
        class_names,
        positive,
        train_ds,
        val_ds,
        test_ds,
        image_size,
        out_dir,
        card_id,
        run_dir,
    )


def _compiled_model(keras: Any, setup: _Setup, weights: str | None) -> Any:
    """Seed 004's model for ``--model``, compiled with Adam and sparse cross-entropy on the probabilities."""
    args = setup.args
    model = build_model(
        keras,
        args.model,
        len(setup.class_names),
        setup.image_size,
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
    return model


def _datasets(keras: Any, tf: Any, setup: _Setup, global_batch: int) -> tuple[Any, Any, Any]:
    """The train (shuffled, augmented), validation and test ``tf.data`` pipelines at the global batch."""
    args = setup.args
    common = {"batch_size": global_batch, "image_size": setup.image_size, "in_chans": args.in_chans}
    augment = _augmenter(keras, args) if args.augment else None
    train_tf = make_dataset(tf, setup.train, shuffle=True, seed=args.seed, augment=augment, **common)
    val_tf, test_tf = (make_dataset(tf, ds, **common) for ds in (setup.val, setup.test))
    return train_tf, val_tf, test_tf


def _fit(keras: Any, model: Any, setup: _Setup, train_tf: Any, val_tf: Any) -> list[dict]:
    """``model.fit`` with inverse-frequency class weights (``--class-weights``), the best validation
    loss's weights restored and early stopping; returns the per-epoch history rows."""
    args = setup.args
    counts = setup.train.class_counts()
    class_weight = None
    if args.class_weights == "inverse":
        n, k = sum(counts), len(counts)
        class_weight = {i: (n / (k * c) if c else 0.0) for i, c in enumerate(counts)}
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
    h, n_train = fit.history, len(setup.train)
    return [
        {
            "epoch": e + 1,
            "train_loss": float(h["loss"][e]),
            "train_accuracy": float(h["accuracy"][e]),
            "val_loss": float(h["val_loss"][e]),
            "val_accuracy": float(h["val_accuracy"][e]),
            "epoch_seconds": seconds[e] if e < len(seconds) else None,
            "images_per_s": n_train / seconds[e] if e < len(seconds) and seconds[e] > 0 else None,
        }
        for e in range(len(h["loss"]))
    ]


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
    keras: Any,
    model: Any,
    setup: _Setup,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    history: list[dict],
    best_epoch: int,
    recipe: dict[str, Any],
) -> dict[str, Any]:
    """Calibrate on validation, score the test split, save ``model.keras`` and the card (the steps of
    :mod:`.card`, as the PyTorch trainer), its figures and the run summary."""
    from bonecls.training import report
    from bonecls.training.card import (
        calibrate_and_test,
        finish_outputs,
        result_line,
        summary_scores,
        trained_card,
    )
    from bonecls.weights import Normalization, write_card

    args = setup.args
    scores = calibrate_and_test(
        val, test, setup.class_names, setup.positive, args, history, best_epoch, index=setup.index
    )
    sha = _save_model(keras, model, setup.out_dir)
    mean, std = NORMALIZATION
    card = trained_card(
        scores,
        args,
        setup.index,
        card_id=setup.card_id,
        task=setup.task,
        class_names=setup.class_names,
        positive=setup.positive,
        image_size=setup.image_size,
        command=command_line(args),
        framework="keras",
        architecture=args.model,
        head="dense_bn",
        normalization=Normalization(mean=[mean] * args.in_chans, std=[std] * args.in_chans),
        weights_file="model.keras",
        sha256=sha,
        extra=_card_extra(keras, setup, recipe),
    )
    write_card(card, setup.out_dir)
    scope, scope_line = finish_outputs(
        setup.out_dir, args.data, setup.index, scores, setup.class_names, history
    )
    summary = {
        "id": setup.card_id,
        "output": str(setup.out_dir),
        "run_dir": str(setup.run_dir),
        "sha256": sha,
        "framework": "keras",
        "replicas": recipe["replicas"],
        "train_seconds": float(sum(r["epoch_seconds"] or 0.0 for r in history)),
        "total_seconds": time.perf_counter() - recipe["t_start"],
        **summary_scores(scores),
        "best_epoch": best_epoch,
        "epochs": [r["epoch"] for r in history],
        "scope": scope,
    }
    report.write_json(summary, setup.run_dir / "summary.json")
    print(result_line(scores, setup.out_dir, sha))
    print(scope_line)
    return summary


def _card_extra(keras: Any, setup: _Setup, recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe on the card (``extra``), and the CAM layer the app's explanations weigh."""
    import tensorflow as tf

    args = setup.args
    return {
        "cam_layer": CAM_LAYERS[args.model],
        "base_weights": getattr(args, "weights_record", None) or recipe["weights"] or "none",
        "freeze_base": bool(args.freeze_base),
        "l2": args.l2,
        "dense": args.dense,
        "dropout": args.dropout,
        "optimizer": "adam",
        "lr": args.lr,
        "global_batch": args.batch_size * recipe["replicas"],
        "replicas": recipe["replicas"],
        "strategy": recipe["strategy"],
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
        "dataset_fingerprint": setup.index.get("fingerprint"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except BoneclsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0

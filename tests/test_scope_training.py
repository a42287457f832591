"""Training fits the model's scope gate at its end (issue 21): the card gets a verified scope section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bonecls.training.classify import parse_args, run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 fracture phantoms at 32 px: more training images (192) than the tiny model has features (128)."""
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare

    base = tmp_path_factory.mktemp("scope-train-data")
    src = write_dataset("fracture", "kaggle", base / "src", n=240, size=32, seed=3, progress=False)
    prepare(src, base / "prep", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    return base / "prep"


def test_training_writes_a_scope_section_whose_stats_verify(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from bonecls.errors import WeightsError
    from bonecls.inference.predictor import Predictor
    from bonecls.scope import ScopeGate
    from bonecls.weights import load_card

    options = [
        "--id",
        "scope-test",
        "--model",
        "simple_cnn",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--lr",
        "2e-3",
        "--lr-base-batch",
        "32",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--no-progress",
        "--no-tensorboard",
        "--seed",
        "1",
    ]
    out = tmp_path / "model"
    run(
        parse_args(
            ["--data", str(prepared), "--output", str(out), "--run-dir", str(tmp_path / "run"), *options]
        )
    )
    assert "scope: fitted on 192 images" in capsys.readouterr().out
    card, card_dir = load_card(out)
    scope = card.scope
    assert scope is not None and scope.in_scope_rate == 0.975 and np.isfinite(scope.threshold)
    assert scope.metrics["n_fit"] == 192 and scope.metrics["feature_dim"] == 128
    assert 0.0 <= scope.metrics["heldout_in_scope_rate"] <= 1.0 and scope.declared.body_parts
    # declared from the phantoms' own labels (their manifest's fields of view), and the card says so
    assert scope.declared.derived_from.startswith("declared from the training set's labels")
    assert scope.declared.age_group == "adult" and {"PA", "AP"} == set(scope.declared.views)
    gate = ScopeGate.from_card(card, card_dir)  # the statistics match the sha256 on the card
    assert gate.stats.dim == 128
    predictor = Predictor.from_card(out)
    assert predictor.scope_guard.gate is not None and predictor._tap is not None
    (out / scope.stats_file).write_bytes((out / scope.stats_file).read_bytes()[:-1] + b"\x00")
    with pytest.raises(WeightsError, match="checksum"):
        Predictor.from_card(out)

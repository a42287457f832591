"""``train/evaluate.py --external DATA``: another site's prepared images scored with a card's own
preprocessing, temperature and thresholds; headline metrics with 95% intervals written beside the
internal ones in card.json only (weight file and sha256 untouched); the Models page's side-by-side table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bonecls.training.evaluation import main
from bonecls.ui.pages.model_cards import NO_EXTERNAL, validation_table
from bonecls.weights import load_pytorch, sha256_file

CLASSES = ["not fractured", "fractured"]  # the phantom writer's order


@pytest.fixture(scope="module")
def site_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 fracture phantoms in the FracAtlas layout, prepared at 32 px: 'another site'."""
    from bonecls.phantom import write_dataset
    from bonecls.prepare import prepare

    base = tmp_path_factory.mktemp("site-b")
    src = write_dataset("fracture", "fracatlas", base / "src", n=24, size=32, seed=5, progress=False)
    prepare(src, base / "site-b", size=32, scheduler="sync", progress=False, echo=lambda s: None)
    return base / "site-b"


def _card_json(card_dir: Path) -> dict:
    return json.loads((card_dir / "card.json").read_text())


def test_external_metrics_are_written_beside_the_internal_ones(
    site_b: Path, tmp_path: Path, tiny_card_factory, capsys: pytest.CaptureFixture
) -> None:
    card_dir = tmp_path / "model"
    card = tiny_card_factory(card_dir, class_names=CLASSES, test_metrics={"accuracy": 0.5, "n": 6})
    weights_before = sha256_file(card_dir / card.weights_file)
    assert main(["--external", str(site_b), "--card", str(card_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "95% CI: ROC-AUC" in out and "Recorded external validation 'site-b'" in out
    saved = _card_json(card_dir)
    entry = saved["test_metrics"]["external"]["site-b"]
    index = json.loads((site_b / "index.json").read_text())
    assert entry["data"]["images"] == len(index["items"]) == 24  # every split: none of it was trained on
    assert entry["data"]["prepared"] == index["created"] and entry["data"]["name"] == "site-b"
    assert entry["data"]["fingerprint"] == index["fingerprint"] and entry["split"] == "all"
    image = entry["headline"]["image"]
    for key in ("roc_auc", "pr_auc", "sensitivity_doubt", "specificity_doubt", "sensitivity_positive"):
        assert "ci95" in image[key], key
    assert image["thresholds"] == {"doubt": 0.3, "positive": 0.7} and image["n"] == 24
    # the weights and their checksum are untouched; the card still loads (sha256 checked)
    assert sha256_file(card_dir / card.weights_file) == weights_before == saved["sha256"] == card.sha256
    assert load_pytorch(card_dir)[1].test_metrics["accuracy"] == 0.5
    # a second run under the same name replaces it; another name sits beside it
    assert main(["--external", str(site_b), "--card", str(card_dir), "--no-progress"]) == 0
    assert (
        main(["--external", str(site_b), "--name", "site-c", "--card", str(card_dir), "--no-progress"]) == 0
    )
    assert sorted(_card_json(card_dir)["test_metrics"]["external"]) == ["site-b", "site-c"]


def test_the_training_data_is_not_external(
    site_b: Path, tmp_path: Path, tiny_card_factory, capsys: pytest.CaptureFixture
) -> None:
    fingerprint = json.loads((site_b / "index.json").read_text())["fingerprint"]
    card_dir = tmp_path / "model"
    tiny_card_factory(card_dir, class_names=CLASSES, extra={"dataset_fingerprint": fingerprint})
    before = (card_dir / "card.json").read_bytes()
    assert main(["--external", str(site_b), "--card", str(card_dir), "--no-progress"]) == 2
    assert "was trained on" in capsys.readouterr().err
    assert (card_dir / "card.json").read_bytes() == before
    # a card of another task's classes is refused before anything is written
    other = tmp_path / "other"
    tiny_card_factory(other)  # ["fractured", "not fractured"]: another order
    assert main(["--external", str(site_b), "--card", str(other), "--no-progress"]) == 2


def test_models_page_table_puts_internal_and_external_side_by_side() -> None:
    def block(value: float) -> dict:
        return {
            "roc_auc": {"value": value, "ci95": [value - 0.05, value + 0.04]},
            "pr_auc": {"value": None, "ci95": None},
            "n": 40,
            "n_positive": 9,
        }

    metrics = {
        "headline": {"image": block(0.91)},
        "external": {"site-b": {"headline": {"image": block(0.8)}}},
    }
    rows = {r["metric"]: r for r in validation_table(metrics)}
    assert rows["ROC-AUC"] == {
        "metric": "ROC-AUC",
        "Internal test": "0.910 (0.860–0.950)",
        "External: site-b": "0.800 (0.750–0.840)",
    }
    assert (
        rows["PR-AUC"]["External: site-b"] == "—" and rows["Images (positives)"]["Internal test"] == "40 (9)"
    )
    # a card written before headline blocks: its figures without intervals, and no external column
    older = validation_table({"accuracy": 0.75, "test_at_positive_at": {"specificity": 0.9}, "n": 12})
    assert list(older[0]) == ["metric", "Internal test"]
    figures = {r["metric"]: r["Internal test"] for r in older}
    assert figures["Accuracy"] == "0.750 (no CI)" and figures["Specificity at positive"] == "0.900 (no CI)"
    assert figures["PR-AUC"] == "—" and "No external validation yet" in NO_EXTERNAL

"""The Streamlit app through streamlit.testing.v1.AppTest: every page, uploads, caching, errors.

Uploads go through the real ``st.file_uploader`` (AppTest 1.67 drives it), hence through
``bonecls.ui.session.ingest_uploads``. Models are tiny random ``simple_cnn`` classifiers and a
random YOLOv8n (tests/appdata.py) in a temporary ``$BONECLS_WEIGHTS``; the audit log is a
temporary ``$BONECLS_AUDIT_DB``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from appdata import app_environment, build_weights, fake_detections, png_bytes, radiograph_like
from factories import PHI_NEEDLES, make_dicom, make_text
from PIL import Image
from streamlit.testing.v1 import AppTest

from bonecls.errors import ImageError
from bonecls.imaging import load_radiograph
from bonecls.report import DISCLAIMER

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = [
    "pages/home.py",
    "pages/fracture.py",
    "pages/threeclass.py",
    "pages/pneumonia.py",
    "pages/models.py",
    "pages/worklist.py",
    "pages/pacs.py",
]
STATUS_WORDS = ("positive", "doubt — review", "negative")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_weights(tmp_path_factory.mktemp("app-weights") / "weights", detector=True)


@pytest.fixture
def env(weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Weights + a fresh audit DB; no background warm-up (deterministic call counts); empty caches."""
    with app_environment(weights_dir, tmp_path / "audit.sqlite", monkeypatch) as audit_db:
        yield audit_db


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    return at


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    """Every element's protobuf as text (markdown, alerts, captions, widget labels, chart specs ...)."""
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def viewer_spec(at: AppTest) -> dict:
    specs = [s for s in charts(at) if any(t.get("type") == "image" for t in s["data"])]
    assert len(specs) == 1
    return specs[0]


def panels(spec: dict) -> int:
    """How many images the viewer shows (radiograph, and the overlay when a heat map is on)."""
    return len([t for t in spec["data"] if t["type"] == "image"])


def png_image(seed: int = 0) -> bytes:
    return png_bytes(radiograph_like(256, seed=seed))


def count_calls(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[int]:
    calls = [0]
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wrapper)
    return calls


# ------------------------------------------------------------------------------------------------


def test_banner_on_every_page_and_no_traceback(env: Path) -> None:
    at = new_app()
    upload(at, [("a.png", png_image())])
    for page in PAGES:
        goto(at, page)
        assert DISCLAIMER in [w.value for w in at.warning], page
        text = page_text(at)
        assert "Traceback" not in text and not at.exception, page


@pytest.fixture
def examples_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped examples/ when generated (scripts/make_examples.py), else a small one in its format."""
    if (ROOT / "examples" / "index.json").is_file():
        return ROOT / "examples"
    root = tmp_path / "examples"
    entries = []
    for i, (task, cls) in enumerate(
        [
            ("fracture", "fractured"),
            ("fracture", "not fractured"),
            ("threeclass", "healthy"),
            ("pneumonia", "pneumonia"),
        ]
    ):
        stem = cls.replace(" ", "_")
        (root / task).mkdir(parents=True, exist_ok=True)
        (root / task / f"{stem}_0.png").write_bytes(png_image(i))
        (root / task / f"{stem}_0.dcm").write_bytes(make_dicom(radiograph_like(256, i)))
        for fmt, ext in (("PNG", "png"), ("DICOM", "dcm")):
            entries.append({"file": f"{task}/{stem}_0.{ext}", "format": fmt, "task": task, "class": cls})
    (root / "index.json").write_text(json.dumps({"description": "test examples", "examples": entries}))
    monkeypatch.setenv("BONECLS_EXAMPLES", str(root))
    return root


def test_example_prediction_is_shown(env: Path, examples_dir: Path) -> None:
    """'Try an example' on Home opens the task's page with a prediction, the true class noted."""
    at = new_app()
    buttons = {b.key: b for b in at.button if str(b.key).startswith("example_")}
    assert "example_fracture_fractured" in buttons, list(buttons)
    buttons["example_fracture_fractured"].click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Fracture (binary)"]  # switched to the reading page
    text = markdown(at)
    assert any(word in text for word in STATUS_WORDS), text
    assert "Suspicion" in text and "Most likely class" in text
    assert any("true class: fractured" in c.value for c in at.caption)
    probs = [s for s in charts(at) if s["data"][0].get("type") == "bar"]
    assert probs and {y.replace(" ", "_") for y in probs[0]["data"][0]["y"]} == {"not_fractured", "fractured"}
    viewer = viewer_spec(at)
    shown = "negative" not in text.split("\n")[0]  # heat maps open by themselves for doubt and positive
    assert len([t for t in viewer["data"] if t["type"] == "image"]) == (2 if shown else 1)
    assert any("Study:" in i.value for i in at.info)
    assert any("Answered in" in c.value for c in at.caption)
    assert any(c.value.startswith("Read as: single read") for c in at.caption)  # how the film was scaled
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Report (PDF)", "Image + overlay (PNG)", "Result (JSON)"]
    # the example went through the upload path: it is in the session store like any upload
    goto(at, "pages/home.py")
    assert "Images in this session (1 readable)" in page_text(at)


def test_load_all_examples_into_the_worklist(env: Path, examples_dir: Path) -> None:
    from bonecls.ui.session import list_examples

    at = new_app()
    at.button(key="example_all").click().run()
    assert [t.value for t in at.title] == ["Worklist"]
    assert sum(len(d.value) for d in at.dataframe) == len(list_examples(examples_dir))


def test_threeclass_page_shows_three_classes(env: Path) -> None:
    at = new_app()
    upload(at, [("a.png", png_image())])
    goto(at, "pages/threeclass.py")
    bars = next(s for s in charts(at) if s["data"][0].get("type") == "bar")["data"][0]
    assert bars["y"] == ["healthy", "fractured", "beyond repair"]
    assert abs(sum(bars["x"]) - 1.0) < 1e-6
    assert any(word in markdown(at) for word in STATUS_WORDS)


def test_switching_cam_method_does_not_run_the_classifier_again(env: Path, monkeypatch) -> None:
    from bonecls.inference.predictor import Predictor
    from bonecls.ui.session import STORE_KEY

    predicts = count_calls(monkeypatch, Predictor, "predict_batch")
    explains = count_calls(monkeypatch, Predictor, "explain")
    at = new_app()
    upload(at, [("a.png", png_image())])
    goto(at, "pages/fracture.py")
    item = next(iter(at.session_state[STORE_KEY]))
    toggle = at.toggle(key=f"fracture_heat_{item.sha256[:12]}")
    status_line = markdown(at).split("\n")[0]
    # heat maps open by themselves only for doubt and positive results
    assert toggle.value == ("negative" not in status_line)
    if not toggle.value:
        assert explains[0] == 0 and len([t for t in viewer_spec(at)["data"] if t["type"] == "image"]) == 1
        toggle.set_value(True).run()
    assert (predicts[0], explains[0]) == (1, 1)
    assert any("where the model looked — not a finding" in c.value for c in at.caption)
    shown = markdown(at)
    first = viewer_spec(at)["data"][1]["source"]
    for label in ("HiResCAM", "EigenCAM", "Grad-CAM++"):
        at.selectbox(key="fracture_method").set_value(label).run()
        assert not at.exception
        assert markdown(at) == shown  # same prediction on screen
    assert predicts[0] == 1, "switching the CAM method re-ran the classifier"
    assert explains[0] == 4
    at.slider(key="fracture_opacity").set_value(0.8).run()
    at.selectbox(key="fracture_cmap").set_value("inferno").run()
    at.selectbox(key="fracture_method").set_value("Grad-CAM").run()  # cached heat map
    assert (predicts[0], explains[0]) == (1, 4)
    assert viewer_spec(at)["data"][1]["source"] != first  # new opacity + colormap applied
    at.selectbox(key="fracture_target").set_value("fractured").run()  # another target: one more CAM
    assert (predicts[0], explains[0]) == (1, 5)
    at.toggle(key=f"fracture_heat_{item.sha256[:12]}").set_value(False).run()
    assert len([t for t in viewer_spec(at)["data"] if t["type"] == "image"]) == 1


def test_second_image_on_a_warm_app_loads_no_model_again(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm path (timed in bench/bench_app.py): a second image reuses the loaded model."""
    from bonecls.ui import services
    from bonecls.ui.session import STORE_KEY

    loads: list[str] = []
    construct = services._construct
    monkeypatch.setattr(services, "_construct", lambda kind, d: loads.append(d) or construct(kind, d))
    at = new_app()
    upload(at, [("a.png", png_image(1)), ("b.png", png_image(2))])
    goto(at, "pages/fracture.py")  # cold: loads the model unless an earlier test in this process did
    loaded_cold = len(loads)
    second = at.selectbox(key="fracture_image").options[1]
    at.selectbox(key="fracture_image").set_value(second).run()
    assert not at.exception
    assert len(loads) == loaded_cold  # nothing loaded again
    entry = services.models_for("fracture")[0]
    items = list(at.session_state[STORE_KEY])
    assert all(services.cached_prediction(entry, item.radiograph) is not None for item in items)


def test_bad_uploads_show_their_sentence_and_the_others_go_on(env: Path) -> None:
    truncated = png_image()[:200]
    bad = {"notes.txt": make_text(), "broken.png": truncated}
    expected = {}
    for name, data in bad.items():
        with pytest.raises(ImageError) as err:
            load_radiograph(data)
        expected[name] = str(err.value)
    good_dicom = make_dicom(radiograph_like(256, seed=4))
    at = new_app()
    upload(
        at,
        [
            ("a.png", png_image()),
            ("notes.txt", bad["notes.txt"]),
            ("scan", good_dicom),
            ("broken.png", truncated),
        ],
    )
    errors = [e.value for e in at.error]
    for sentence in expected.values():
        assert sentence in errors
    text = markdown(at)
    assert "Images in this session (2 readable, 2 unreadable)" in page_text(at)
    for name in ("a.png", "scan", "notes.txt", "broken.png"):
        assert f"**{name}**" in text
    assert "Traceback" not in page_text(at) and not at.exception
    # the reading pages still work on the good files, and show the sentence for a bad one
    goto(at, "pages/fracture.py")
    assert any(word in markdown(at) for word in STATUS_WORDS)
    picker = at.selectbox(key="fracture_image")
    bad_key = next(k for k in picker.options if "unreadable" in k)
    picker.set_value(bad_key).run()
    assert expected["notes.txt"] in [e.value for e in at.error] or expected["broken.png"] in [
        e.value for e in at.error
    ]


def test_remove_and_clear_all_stick(env: Path) -> None:
    at = new_app()
    upload(at, [("a.png", png_image(1)), ("b.png", png_image(2)), ("c.png", png_image(3))])
    assert "Images in this session (3 readable)" in page_text(at)
    remove = next(b for b in at.button if str(b.key).startswith("remove_"))
    remove.click().run()
    assert "Images in this session (2 readable)" in page_text(at)
    at.run()  # the file is still in the uploader widget: it must not come back
    assert "Images in this session (2 readable)" in page_text(at)
    at.button(key="clear_all").click().run()
    assert "Images in this session" not in page_text(at)
    goto(at, "pages/fracture.py")
    assert any("No image yet" in i.value for i in at.info)


def test_ingest_uploads_keys_by_sha256_and_bounds_memory() -> None:
    from bonecls.ui.session import UploadStore, ingest_uploads

    store = UploadStore(max_bytes=3 * 2**20)  # room for about two 512 px 16-bit images
    images = [(f"img{i}.png", png_bytes(radiograph_like(512, i))) for i in range(4)]
    first = ingest_uploads([images[0], ("copy.png", images[0][1]), (b"garbage")], store=store)
    assert first[0].sha256 == first[1].sha256 and first[1].name == "copy.png"
    assert first[2].error and not first[2].ok and first[2].name == "file 3"
    assert len(store) == 2  # the re-upload replaced, the bad file kept its own row
    ingest_uploads(images[1:], store=store)
    assert store.evicted and store.nbytes <= 3 * 2**20
    assert store.selected in store and store.get(store.selected).ok


def test_unexpected_error_shows_an_id_not_a_traceback(env: Path, monkeypatch, caplog) -> None:
    from bonecls.ui import services

    def boom(entry, rg):
        raise RuntimeError("internal detail that must stay on the server")

    monkeypatch.setattr(services, "predict", boom)
    at = new_app()
    upload(at, [("a.png", png_image())])
    with caplog.at_level("ERROR", logger="bonecls"):
        goto(at, "pages/fracture.py")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "error id" in errors[0]
    error_id = errors[0].split("error id ")[1].split(")")[0]
    text = page_text(at)
    assert "internal detail" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert error_id in caplog.text and "internal detail" in caplog.text  # server-side log has it all
    assert DISCLAIMER in [w.value for w in at.warning]


def test_models_page_lists_cards_sha256_and_audit_count(env: Path, weights_dir: Path) -> None:
    from bonecls.audit import AuditLog
    from bonecls.weights import scan_cards

    at = new_app()
    upload(at, [("a.png", png_image())])
    goto(at, "pages/fracture.py")
    goto(at, "pages/threeclass.py")
    goto(at, "pages/models.py")
    text = page_text(at)
    cards = [e.card for e in scan_cards(weights_dir)]
    assert len(cards) == 4
    for card in cards:
        assert card.id in text and card.sha256 in text and card.architecture in text
    assert "No external validation yet" in text  # none of these cards was scored on another site
    assert AuditLog(env).count() == 2
    metric = at.metric[0]
    assert metric.label == "Predictions logged" and metric.value == "2"
    assert "Download audit log (CSV)" in [b.label for b in at.get("download_button")]
    kinds = {
        s["layout"]["title"]["text"].split(" (")[0].split(" —")[0]
        for s in charts(at)
        if s["layout"].get("title")
    }
    assert {"Confusion matrix", "Reliability", "Training curves"} <= kinds
    # reading the same image again in the same session does not add audit rows
    goto(at, "pages/fracture.py")
    assert AuditLog(env).count() == 2


def test_task_without_installed_model_says_so(env: Path, tmp_path: Path, monkeypatch) -> None:
    only = build_weights(tmp_path / "only")
    for model_id in ("threeclass", "pneumonia-cls"):
        import shutil

        shutil.rmtree(only / model_id)
    monkeypatch.setenv("BONECLS_WEIGHTS", str(only))
    at = new_app()
    upload(at, [("a.png", png_image())])
    for page in ("pages/threeclass.py", "pages/pneumonia.py"):
        goto(at, page)
        assert any("No model is installed for this task" in i.value for i in at.info), page
        assert "Traceback" not in page_text(at)
    goto(at, "pages/fracture.py")
    assert any(word in markdown(at) for word in STATUS_WORDS)


def test_worklist_ranks_by_suspicion_with_errors_in_place_and_exports(env: Path) -> None:
    from bonecls import worklist
    from bonecls.ui.session import STORE_KEY

    at = new_app()
    images = [(f"img{i}.png", png_image(i)) for i in range(4)]
    upload(at, [*images[:2], ("bad.txt", make_text()), *images[2:]])
    goto(at, "pages/worklist.py")
    ranked, unreadable = at.dataframe[0].value, at.dataframe[1].value
    assert list(ranked["rank"]) == [1, 2, 3, 4] and list(unreadable["rank"]) == [5]
    susp = list(ranked["suspicion"])
    assert susp == sorted(susp, reverse=True)
    assert unreadable["file"].iloc[0] == "bad.txt" and unreadable["status"].iloc[0] == "unreadable"
    assert "text file" in unreadable["note"].iloc[0] and "image" not in unreadable.columns  # no "None" image
    assert "suspicion" not in unreadable.columns and "label" not in unreadable.columns  # nothing to score
    assert not ranked.drop(columns=["suspicion"]).isna().any().any()  # no "None" in a text cell
    assert all(str(s).startswith("data:image/png;base64,") for s in ranked["image"])
    assert "Unreadable files" in markdown(at) and "ranked by suspicion" in markdown(at)
    table = pd.concat([ranked, unreadable])
    assert [b.label for b in at.get("download_button")] == ["Export CSV", "Export JSON"]
    # the exports carry the same ranking
    store = at.session_state[STORE_KEY]
    from bonecls.ui import services

    entry = services.models_for("fracture")[0]
    items = list(store)
    preds = [services.predict(entry, i.radiograph) if i.ok else None for i in items]
    rows = worklist.build_worklist(items, preds, model_id=entry.id, model_sha256=entry.sha256)
    csv_text = worklist.to_csv(rows)
    assert csv_text.splitlines()[0].startswith("rank,file,image_sha256,status")
    assert [r["file"] for r in json.loads(worklist.to_json(rows))] == list(table["file"])


def test_worklist_shows_each_views_study_answer(env: Path) -> None:
    at = new_app()
    views = [(f"patient0001/study1_positive/image{i}.png", png_image(i)) for i in range(2)]
    upload(at, [*views, ("loose.png", png_image(5))])
    goto(at, "pages/worklist.py")
    ranked = at.dataframe[0].value
    by_file = ranked.set_index("file")
    top = max(by_file.loc[name, "suspicion"] for name, _ in views)
    for name, _ in views:
        assert by_file.loc[name, "study"] == "patient0001/study1"
        assert f"— {top:.2f}, highest of 2 views" in by_file.loc[name, "study_answer"]
    assert by_file.loc["loose.png", "study"] == "" and by_file.loc["loose.png", "study_answer"] == ""


def test_pneumonia_page_boxes_follow_the_confidence_slider(env: Path, monkeypatch) -> None:
    calls = fake_detections(monkeypatch)
    at = new_app()
    upload(at, [("chest.png", png_image())])
    goto(at, "pages/pneumonia.py")
    # the card's cuts (tests/appdata.py): doubt from 0.10 (dashed), definite from 0.25 (solid)
    assert "**3 opacity boxes** at confidence ≥ 0.10 (2 definite, 1 doubt)" in markdown(at)
    spec = viewer_spec(at)
    dashes = sorted(s["line"]["dash"] for s in spec["layout"]["shapes"])
    assert dashes == sorted(["dash", "solid", "solid"] * panels(spec))  # boxes on every panel
    assert any("opacity 0.91" in a["text"] for a in spec["layout"]["annotations"])
    assert any("opacity 0.15 (doubt)" in a["text"] for a in spec["layout"]["annotations"])
    assert any(word in markdown(at) for word in STATUS_WORDS)  # the classifier's result too
    study = next(i.value for i in at.info if "Study:" in i.value)
    assert "Classifier" in study and "box" in study
    assert any("Dashed box: doubt" in c.value for c in at.caption)
    at.slider(key="pn_conf").set_value(0.6).run()
    assert "**1 opacity box** at confidence ≥ 0.60" in markdown(at)
    spec = viewer_spec(at)
    assert len(spec["layout"]["shapes"]) == panels(spec)
    at.slider(key="pn_conf").set_value(0.1).run()
    spec = viewer_spec(at)
    assert len(spec["layout"]["shapes"]) == 3 * panels(spec)
    assert calls[0] == 1  # the slider filters cached boxes
    from bonecls.ui.session import STORE_KEY

    sha = next(iter(at.session_state[STORE_KEY])).sha256
    at.toggle(key=f"pn_heat_{sha[:12]}").set_value(True).run()
    at.selectbox(key="pn_method").set_value("EigenCAM (detector)").run()
    assert not at.exception
    spec = viewer_spec(at)
    assert len([t for t in spec["data"] if t["type"] == "image"]) == 2
    assert len(spec["layout"]["shapes"]) == 6  # boxes on both panels


def test_dicom_window_level_changes_the_display_not_the_prediction(env: Path, monkeypatch) -> None:
    from bonecls.inference.predictor import Predictor
    from bonecls.ui.session import STORE_KEY

    predicts = count_calls(monkeypatch, Predictor, "predict_batch")
    at = new_app()
    upload(at, [("scan", make_dicom(radiograph_like(256, seed=5)))])  # DICOM without extension
    goto(at, "pages/fracture.py")
    sha = next(iter(at.session_state[STORE_KEY])).sha256[:12]
    at.toggle(key=f"fracture_heat_{sha}").set_value(True).run()
    runs = predicts[0]
    before = viewer_spec(at)["data"]
    level = at.slider(key=f"fracture_c_{sha}")
    width = at.slider(key=f"fracture_w_{sha}")
    assert isinstance(level.value, int) and isinstance(width.value, int)  # whole raw units, no "15000.00"
    level.set_value(int(level.value * 0.7))
    width.set_value(int(width.value * 0.3))
    at.run()
    after = viewer_spec(at)["data"]
    assert after[0]["source"] != before[0]["source"]  # the radiograph is re-windowed
    assert after[1]["source"] != before[1]["source"]  # the overlay follows the window
    assert predicts[0] == runs
    at.button(key=f"fracture_reset_{sha}").click().run()
    assert viewer_spec(at)["data"][0]["source"] == before[0]["source"]  # back to the image's window
    presets = at.get("button_group")
    assert presets, "the window presets are shown (not hidden in a collapsed section)"
    at.button(key=f"fracture_narrower_window_{sha}").click().run()
    assert at.slider(key=f"fracture_w_{sha}").value < width.value / 0.3 * 0.99  # a step narrower
    assert predicts[0] == runs
    assert not at.warning or all("Session State" not in w.value for w in at.warning)


def test_eight_bit_images_get_the_same_window_controls_and_presets(env: Path) -> None:
    from bonecls.imaging import load_radiograph
    from bonecls.imaging.presets import window_presets
    from bonecls.ui.session import STORE_KEY

    pixels = radiograph_like(256, seed=3).astype(np.float64)
    buf = io.BytesIO()
    Image.fromarray((255 * (pixels - pixels.min()) / np.ptp(pixels)).astype(np.uint8)).save(buf, format="PNG")
    at = new_app()
    upload(at, [("a.png", buf.getvalue())])
    goto(at, "pages/fracture.py")
    sha = next(iter(at.session_state[STORE_KEY])).sha256[:12]
    assert at.slider(key=f"fracture_c_{sha}").value == 128 and at.slider(key=f"fracture_w_{sha}").value == 255
    presets = window_presets(load_radiograph(buf.getvalue()))
    assert list(presets)[:3] == ["As opened", "Auto", "Full range"] and {
        "Lung",
        "Bone",
        "Soft tissue",
    } <= set(presets)
    assert all(isinstance(v, int) for window in presets.values() for v in window)


def test_colour_photo_is_flagged_and_refused(env: Path) -> None:
    rng = np.random.default_rng(0)
    photo = np.zeros((256, 256, 3), np.uint8)
    photo[..., 0] = np.linspace(0, 255, 256, dtype=np.uint8)[None, :]
    photo[..., 1] = 120
    photo[..., 2] = rng.integers(0, 255, (256, 256), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="JPEG")
    at = new_app()
    upload(at, [("holiday.jpg", buf.getvalue())])
    goto(at, "pages/fracture.py")
    warnings = " ".join(w.value for w in at.warning)
    assert "does not look like a radiograph" in warnings and "colour" in warnings
    # the scope gate refuses it before the model runs (issue 21): the panel, and no result at all
    errors = " ".join(e.value for e in at.error)
    assert (
        "Outside what this model was trained on" in errors and "colour" in errors and "No result." in errors
    )
    assert not any(s["data"][0].get("type") == "bar" for s in charts(at) if s["data"])
    assert not any(f"### {w}" in markdown(at).lower() for w in STATUS_WORDS)


def test_phi_never_reaches_the_page(env: Path) -> None:
    dicom = make_dicom(radiograph_like(256, seed=6), phi=True)
    at = new_app()
    upload(at, [("scan.dcm", dicom)])
    for page in PAGES:
        goto(at, page)
        text = page_text(at)
        leaked = [n for n in PHI_NEEDLES if n in text]
        assert not leaked, (page, leaked)

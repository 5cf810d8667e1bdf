"""The README's command blocks, run exactly as written.

Every ```bash block in README.md that follows a `<!-- run-by: tests/integration/test_readme_commands.py::NAME -->`
line is executed by bash, as is, in a scratch directory laid out like a checkout (the shared ML-1M splits at
`../shared/data`, the venv's `binllm` first on PATH), and must exit 0; the test then checks what the block
promised to leave behind. A block without a test here fails `test_every_marked_block_has_a_test`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app.schemas import PredictResponse
from tests.integration.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
MARK = re.compile(
    r"<!-- run-by: tests/integration/test_readme_commands\.py::(\w+) -->\s*```bash\n(.*?)```", re.S
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def readme_blocks() -> dict[str, str]:
    """NAME -> the bash text of each marked block."""
    return {name: body for name, body in MARK.findall((ROOT / "README.md").read_text(encoding="utf-8"))}


def run_block(name: str, workdir: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    """Run one README block in `workdir` (a checkout-like directory) and fail with its output on error."""
    workdir.mkdir(parents=True, exist_ok=True)
    link = workdir.parent / "shared"
    if not link.exists():
        link.symlink_to(SHARED)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + readme_blocks()[name]
    result = subprocess.run(
        ["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"README block {name!r} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_every_marked_block_has_a_test() -> None:
    blocks = readme_blocks()
    assert blocks, "README has no blocks marked run-by"
    missing = [name for name in blocks if f"test_readme_{name}" not in globals()]
    assert not missing, f"README blocks without a test: {missing}"


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The walkthrough block run once in a checkout-like folder: (that folder, its stdout)."""
    if not (SHARED / "data/ml-1m-collm/train_ood2.jsonl.gz").is_file():
        pytest.skip("no ML-1M")
    work = tmp_path_factory.mktemp("walkthrough") / "checkout"
    return work, run_block("llm_walkthrough", work, timeout=1800).stdout


def test_readme_llm_walkthrough(walkthrough: tuple[Path, str]) -> None:
    """codes train -> llm tune (both stages, --codes) -> export -> blend -> eval --report -> publish."""
    work, stdout = walkthrough
    lines = json_lines(stdout)
    assert any("best_epoch" in line for line in lines)  # codes train
    card = next(line for line in lines if "stages" in line and "with_codes" in line)  # llm tune
    assert card["with_codes"] is True and card["stages"] == [1, 2]
    blend = next(line for line in lines if "blend" in line and "p_yes" in line)
    assert set(blend) >= {"fusion", "p_yes", "blend"}
    assert "(300 rows)" in blend["fusion"]["fitted_on"]  # type: ignore[index]
    metrics = next(line for line in lines if "uauc" in line and "warm" in line)  # llm eval
    assert 0.0 <= float(metrics["auc"]) <= 1.0 and metrics["score"] == "blend"  # type: ignore[arg-type]
    assert (work / "artifacts/llm/report/roc.png").is_file()
    manifest = json.loads((work / "artifacts/llm/merged/binllm.json").read_text())
    assert manifest["fusion"] is not None and manifest["prompt_style"]["layout"] == "serving"
    snapshot = work / "artifacts/snapshot"
    active = (snapshot / "ACTIVE").read_text().strip()
    assert (snapshot / active / "users.jsonl").stat().st_size > 0


def test_readme_serve_published(walkthrough: tuple[Path, str]) -> None:
    """`binllm serve` on what the walkthrough's publish and export wrote: ready, then a real /predict."""
    work, _ = walkthrough
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env |= {"BINLLM_SERVER__PORT": str(port)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    script = "set -euo pipefail\n" + readme_blocks()["serve_published"]
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        ready = wait_ready(url, proc, timeout_s=300)
        assert ready["status"] == "ready" and ready["backend"] == "local"
        snapshot = work / "artifacts/snapshot"
        version = snapshot / (snapshot / "ACTIVE").read_text().strip()
        user = json.loads((version / "users.jsonl").read_text().splitlines()[0])["id"]
        items = [json.loads(line)["id"] for line in (version / "items.jsonl").read_text().splitlines()[:3]]
        body = json.dumps({"user_id": user, "item_ids": items}).encode()
        request = urllib.request.Request(
            f"{url}/predict", data=body, headers={"content-type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = PredictResponse.model_validate_json(response.read())
        assert answer.score_kind == "blend" and answer.degraded is None
        assert [score.item_id for score in answer.scores] == items
        assert all(0.0 < score.score < 1.0 for score in answer.scores)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # bash and the server it started
        proc.wait(timeout=30)
        log.close()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, object]:
    """Poll /readyz until it says ready (the model loads first); fail with the log's tail if the server exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"binllm serve exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                answer: dict[str, object] = json.loads(response.read())
            if answer["status"] == "ready":  # 503 "warming up" while the in-process model loads and warms up
                return answer
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url}/readyz not ready after {timeout_s} s")


def test_readme_offline_bundle(tmp_path: Path) -> None:
    """`binllm bundle` in a checkout-like folder: parts of at most 48 MiB that unpack to the GGUF, the splits and
    the CPython 3.12 wheels, every checksum checked."""
    if not (SHARED / "data/ml-1m-collm/train_ood2.jsonl.gz").is_file():
        pytest.skip("no ML-1M")
    work = tmp_path / "checkout"
    run_block("offline_bundle", work, timeout=600)
    manifest = json.loads((work / "bundle/bundle.json").read_text())
    assert all(part["bytes"] <= 48 * 2**20 for part in manifest["parts"]) and len(manifest["parts"]) >= 2
    unpacked = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_store.bundle",
            "unpack",
            str(work / "bundle"),
            "--dest",
            str(tmp_path / "u"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert unpacked.returncode == 0, unpacked.stderr
    assert (tmp_path / "u/model/SmolLM2-135M-Instruct.Q4_1.gguf").stat().st_size > 90 * 2**20
    assert (tmp_path / "u/data/train_ood2.jsonl.gz").is_file()
    assert len(list((tmp_path / "u/wheels").glob("pydantic_core-*-cp312-*.whl"))) == 1

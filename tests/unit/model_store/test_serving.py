"""`binllm serve`: the settings it gives the service, and the directories it refuses before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ServiceSettings
from model_store.errors import BinllmJobError
from model_store.serving import serve_environment


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path]:
    """A snapshot folder with ACTIVE and a model folder with binllm.json (contents beside the point here)."""
    (tmp_path / "snapshot").mkdir()
    (tmp_path / "snapshot" / "ACTIVE").write_text("v1\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "binllm.json").write_text("{}")
    return tmp_path / "snapshot", tmp_path / "model"


def test_the_service_reads_the_snapshot_and_model_it_was_given(
    published: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot, model = published
    base = {"BINLLM_STORE": "redis", "BINLLM_DEADLINE_S": "12"}  # one overridden, one kept
    env = serve_environment(snapshot, model, "0.0.0.0", 8123, base)
    for key, value in env.items():
        if key.startswith("BINLLM_"):
            monkeypatch.setenv(key, value)
    settings = ServiceSettings()
    assert (settings.store, settings.backend) == ("directory", "local")
    assert Path(settings.snapshot_dir) == snapshot and Path(settings.local.model_dir) == model
    assert (settings.server.host, settings.server.port, settings.deadline_s) == ("0.0.0.0", 8123, 12.0)


def test_host_and_port_left_out_keep_the_environment_s(published: tuple[Path, Path]) -> None:
    env = serve_environment(*published, None, None, {"BINLLM_SERVER__PORT": "9001"})
    assert env["BINLLM_SERVER__PORT"] == "9001" and "BINLLM_SERVER__HOST" not in env


def test_a_folder_that_is_not_a_snapshot_is_refused_saying_what_writes_one(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(BinllmJobError, match=r"no ACTIVE file, so not a published snapshot \(binllm publish"):
        serve_environment(tmp_path / "empty", published[1], None, None, {})


def test_a_folder_that_is_not_an_exported_model_is_refused(
    published: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(
        BinllmJobError, match=r"no binllm.json, so not an exported model \(binllm llm export\)"
    ):
        serve_environment(published[0], tmp_path, None, None, {})

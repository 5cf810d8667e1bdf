"""`binllm publish` end to end on a directory store, and its one-line errors with exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

from model_store import cli
from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.demo_data import DemoDataConfig, write_demo_data
from model_store.publish import commands as publish_commands
from model_store.publish.directory import DirectoryPublisher

SMALL = DemoDataConfig(n_users=12, n_items=20, min_per_user=5, max_per_user=8)


class FakeCodes:
    version = "codes-a"
    bits = 32

    def user_code(self, uid: int) -> int | None:
        return uid if uid % 2 else None

    def item_code(self, iid: int) -> int | None:
        return iid

    def code_score(self) -> None:
        return None


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """`binllm ARGS` through `cli.main` (its error handling), with only the publish command registered."""
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command is addressed by name as in `binllm publish`
    publish_commands.register_publish(app)
    monkeypatch.setattr(cli, "app", app)
    monkeypatch.setattr(cli, "_register", lambda: None)
    monkeypatch.setattr(sys, "argv", ["binllm", *args])
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    write_demo_data(SMALL, tmp_path / "data")
    (tmp_path / "codes").mkdir()
    (tmp_path / "model").mkdir()
    manifest = ModelManifest(
        model_version="m1",
        yes_token="Yes",
        no_token="No",
        yes_token_id=1,
        no_token_id=2,
        code_version="codes-a",
    )
    (tmp_path / "model" / MANIFEST_FILENAME).write_text(manifest.model_dump_json())
    monkeypatch.setattr(publish_commands, "load_code_source", lambda path: FakeCodes())
    return {
        "--codes": str(tmp_path / "codes"),
        "--data": str(tmp_path / "data"),
        "--model": str(tmp_path / "model"),
    }


def flat(options: dict[str, str]) -> list[str]:
    return [part for pair in options.items() for part in pair]


def test_publish_then_rollback_through_the_command_line(
    inputs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "snapshot"
    assert run_cli(["publish", *flat(inputs), "--out-dir", str(out), "--version", "v1"], monkeypatch) == 0
    assert run_cli(["publish", *flat(inputs), "--out-dir", str(out), "--version", "v2"], monkeypatch) == 0
    publisher = DirectoryPublisher(out)
    assert publisher.active_version() == "v2"
    manifest = publisher.read_manifest("v2")
    assert manifest is not None and manifest.n_users == SMALL.n_users
    assert run_cli(["publish", "rollback", "--out-dir", str(out)], monkeypatch) == 0
    assert publisher.active_version() == "v1"
    assert run_cli(["publish", "rollback", "--out-dir", str(out), "--to", "v2"], monkeypatch) == 0
    assert publisher.active_version() == "v2"


def test_the_old_rollback_flag_still_rolls_back(
    inputs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "snapshot"
    for version in ("v1", "v2"):
        assert (
            run_cli(["publish", *flat(inputs), "--out-dir", str(out), "--version", version], monkeypatch) == 0
        )
    assert run_cli(["publish", "--rollback", "--out-dir", str(out)], monkeypatch) == 0
    assert DirectoryPublisher(out).active_version() == "v1"


def test_versions_lists_newest_first_and_marks_the_active_one(
    inputs: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "snapshot"
    for version in ("v1", "v2"):
        assert (
            run_cli(["publish", *flat(inputs), "--out-dir", str(out), "--version", version], monkeypatch) == 0
        )
    assert run_cli(["publish", "rollback", "--out-dir", str(out)], monkeypatch) == 0
    capsys.readouterr()
    assert run_cli(["publish", "versions", "--out-dir", str(out)], monkeypatch) == 0
    assert capsys.readouterr().out.splitlines() == ["  v2", "* v1"]


def test_publish_options_before_a_subcommand_are_refused(
    inputs: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["publish", "--codes", inputs["--codes"], "rollback", "--out-dir", str(tmp_path / "s")]
    assert run_cli(args, monkeypatch) == 2
    assert "after `publish rollback`" in capsys.readouterr().err


def test_code_mismatch_is_one_line_and_exit_2_unless_allowed(
    inputs: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(FakeCodes, "version", "codes-b")
    out = tmp_path / "snapshot"
    assert run_cli(["publish", *flat(inputs), "--out-dir", str(out)], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "allow-code-mismatch" in err
    assert DirectoryPublisher(out).active_version() is None
    assert (
        run_cli(["publish", *flat(inputs), "--out-dir", str(out), "--allow-code-mismatch"], monkeypatch) == 0
    )


@pytest.mark.parametrize(
    ("drop", "expected"),
    [("--model", "needs --codes DIR and --model DIR"), ("--data", "give --data DIR or at least one --split")],
)
def test_missing_inputs_are_named_in_one_line(
    drop: str,
    expected: str,
    inputs: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = {k: v for k, v in inputs.items() if k != drop}
    assert run_cli(["publish", *flat(options), "--out-dir", str(tmp_path / "s")], monkeypatch) == 2
    assert expected in capsys.readouterr().err


def test_both_targets_at_once_are_refused(
    inputs: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["publish", *flat(inputs), "--out-dir", str(tmp_path / "s"), "--redis", "redis://127.0.0.1:1/0"]
    assert run_cli(args, monkeypatch) == 2
    assert "exactly one of --redis URL or --out-dir DIR" in capsys.readouterr().err


def test_the_redis_url_can_come_from_the_environment_instead_of_argv(
    inputs: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BINLLM_PUBLISH_REDIS_URL", "redis://:pw@127.0.0.1:1/0")
    args = ["publish", *flat(inputs), "--out-dir", str(tmp_path / "s")]
    assert run_cli(args, monkeypatch) == 2  # the environment's URL counts as --redis
    assert "exactly one of --redis URL or --out-dir DIR" in capsys.readouterr().err


def test_missing_data_directory_is_named(
    inputs: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = {**inputs, "--data": str(tmp_path / "nowhere")}
    assert run_cli(["publish", *flat(options), "--out-dir", str(tmp_path / "s")], monkeypatch) == 2
    assert f"data directory not found: {tmp_path / 'nowhere'}" in capsys.readouterr().err

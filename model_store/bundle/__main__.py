"""`python3 -m model_store.bundle unpack BUNDLE --dest DIR`: check and extract a bundle (standard library only).

Runs on the GPU host before anything is installed; `binllm bundle` (with the project's packages) packs one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_store.bundle.parts import BundleError, unpack_bundle


def main(argv: list[str] | None = None) -> int:
    """Unpack; print each file's path, or one error line and exit 2."""
    parser = argparse.ArgumentParser(
        prog="python3 -m model_store.bundle", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    unpack = sub.add_parser("unpack", help="check every part and file checksum, then extract")
    unpack.add_argument("bundle", type=Path, help="the folder holding bundle.json and the parts")
    unpack.add_argument("--dest", type=Path, required=True, help="where the files go (replaced whole)")
    args = parser.parse_args(argv)
    try:
        manifest = unpack_bundle(args.bundle, args.dest)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for entry in manifest["files"]:
        print(args.dest / entry["path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

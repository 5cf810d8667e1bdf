"""Read a publish's inputs: split files, the items catalogue, the model manifest; check codes fit the model.

python -c "from pathlib import Path; from model_store.publish.inputs import find_split_files as f; print(f(Path('../shared/data/ml-1m-collm')))"
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
from pydantic import ValidationError

from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.data.io import read_split
from model_store.errors import DataFormatError, PublishError
from model_store.publish.snapshot import CodeSource, Snapshot, build_snapshot

logger = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")
SPLIT_SUFFIXES: tuple[str, ...] = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")


def find_split_files(data_dir: Path) -> list[Path]:
    """Split files in a data directory: names starting with train/valid/test and a split suffix, sorted."""
    if not data_dir.is_dir():
        raise PublishError(f"data directory not found: {data_dir}")
    found = [
        path
        for path in sorted(data_dir.iterdir())
        if path.is_file()
        and path.name.startswith(SPLIT_NAMES)
        and path.name.endswith(SPLIT_SUFFIXES)
        and not path.name.startswith(".")
    ]
    if not found:
        raise PublishError(f"no split files (train*/valid*/test* .parquet or .jsonl[.gz]) in {data_dir}")
    return found


def read_splits(paths: Iterable[Path]) -> pa.Table:
    """Every row of the given split files, in file order, as one table (DataFormatError names a bad file)."""
    tables = [read_split(path) for path in paths]
    if not tables:
        raise PublishError("no split files given")
    return pa.concat_tables(tables)


def load_model_manifest(model_dir: Path) -> ModelManifest:
    """Read `binllm.json` beside an exported model."""
    path = model_dir / MANIFEST_FILENAME
    if not path.is_file():
        raise PublishError(f"model manifest not found: {path} (export the model first)")
    try:
        return ModelManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise DataFormatError(path, None, f"not a valid model manifest: {first}") from exc


def check_compatible(codes: CodeSource, model: ModelManifest, *, allow_code_mismatch: bool = False) -> None:
    """Refuse codes the model was not tuned with: the prompts would carry codes the model never learned."""
    problems = []
    if model.code_version is not None and model.code_version != codes.version:
        problems.append(f"model was tuned with codes {model.code_version!r} but --codes is {codes.version!r}")
    if model.prompt_style.bits != codes.bits:
        problems.append(
            f"model prompts use {model.prompt_style.bits}-bit codes but the codes have {codes.bits}"
        )
    if not problems:
        if model.code_version is None:
            logger.warning(
                "model manifest names no code_version; publishing codes %s unchecked", codes.version
            )
        return
    if allow_code_mismatch:
        logger.warning("publishing despite a codes/model mismatch: %s", "; ".join(problems))
        return
    raise PublishError("; ".join(problems) + " (pass --allow-code-mismatch to publish anyway)")


def read_catalogue(path: Path) -> dict[int, str]:
    """An optional items catalogue (parquet or JSON lines with `iid` and `title`), for items with no rows."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=["iid", "title"])
            return dict(zip(table["iid"].to_pylist(), table["title"].to_pylist(), strict=True))
        catalogue: dict[int, str] = {}
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict) or "iid" not in obj or "title" not in obj:
                        raise DataFormatError(path, line_number, "expected an object with iid and title")
                    catalogue[int(obj["iid"])] = str(obj["title"])
        return catalogue
    except (pa.ArrowException, json.JSONDecodeError, KeyError) as exc:
        raise DataFormatError(path, None, f"not a readable items catalogue: {exc}") from exc


def snapshot_from_paths(
    codes: CodeSource,
    split_files: Sequence[Path],
    model_dir: Path,
    *,
    version: str | None = None,
    catalogue: Path | None = None,
    allow_code_mismatch: bool = False,
    codes_dir: Path | None = None,
) -> Snapshot:
    """Read the inputs, check the codes fit the model, and build the snapshot. A CoLLM model (encoding
    'embeddings') also gets each user's and item's CF embedding, read from `codes_dir`."""
    model = load_model_manifest(model_dir)
    check_compatible(codes, model, allow_code_mismatch=allow_code_mismatch)
    table = read_splits(split_files)
    extra = read_catalogue(catalogue) if catalogue is not None else None
    features = None
    if model.prompt_style.encoding == "embeddings" and codes_dir is not None:
        from model_store.codes.features import CollabFeatures

        try:
            features = CollabFeatures.from_codes_dir(codes_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise PublishError(f"no CF embeddings in the codes directory {codes_dir}: {exc}") from exc
    return build_snapshot(codes, table, model, version=version, extra_items=extra, features=features)

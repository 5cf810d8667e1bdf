"""A servable model directory: base + LoRA merged (`merge_and_unload`), tokenizer, config and `binllm.json`.

The merged directory is an ordinary Llama checkpoint (safetensors), so vLLM, transformers and the in-process
scorer all load it with no peft at serving time. `binllm.json` (`ModelManifest`) says how to prompt it
(prompt style, with or without codes, which codes version) and which two tokens carry the answer.
`vllm_serve_command` returns the vLLM line that serves it as a two-way classifier
(`model_store.contract.vllm_command`, the one builder that Compose and the Helm chart also run): with
`classifier_from_token = [No piece, Yes piece]` and `method = from_2_way_softmax`, vLLM's score head is
`w_yes - w_no` of the LM head, so `/classify` returns sigmoid(z_yes - z_no), the same number as the local
scorer (BinLLM, Zhang et al., ACL 2024: P(Yes) over {Yes, No} at the answer position).

    binllm llm export --adapter artifacts/llm/adapter --out artifacts/llm/merged
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from model_store.codes.features import CollabFeatures
from model_store.contract.fusion import ScoreFusion
from model_store.contract.prompts import PromptStyle
from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.contract.vllm_command import serve_argv
from model_store.errors import BinllmJobError
from model_store.llm.answer import find_answer_tokens
from model_store.llm.models import load_causal_lm, smollm2_cache_dir
from model_store.llm.soft_tokens import Projector, has_projector
from model_store.llm.soft_vocab import add_embedding_tokens, packed_embeddings
from model_store.llm.tune import read_adapter_card

VERSION_HEX_CHARS = 16


def merge_adapter(
    base_dir: str | Path, adapter_dir: str | Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Base model with the LoRA deltas folded into its weights (fp32, CPU), and the base tokenizer."""
    base, tokenizer = load_causal_lm(base_dir, dtype=torch.float32, device="cpu")
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    return merged.eval(), tokenizer


def weights_digest(model_dir: Path) -> str:
    """A content hash of every safetensors file (a CoLLM projector's too): the model version (same weights ->
    same version)."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*.safetensors"), key=lambda p: p.relative_to(model_dir).as_posix()):
        digest.update(path.relative_to(model_dir).as_posix().encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:VERSION_HEX_CHARS]


def write_servable(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    prompt_style: PromptStyle,
    with_codes: bool,
    code_version: str | None,
    metrics: dict[str, Any],
    base_model: str | None,
    fusion: ScoreFusion | None = None,
    projector: Projector | None = None,
    embedding_tokens: int = 0,
) -> ModelManifest:
    """Save weights, tokenizer (and a CoLLM projector) and manifest into a temporary sibling, then move it
    into place.

    A reader (the service, a vLLM pod) therefore never sees a directory with weights but no manifest.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    answer = find_answer_tokens(tokenizer)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if projector is not None:
            projector.save(tmp)
        manifest = ModelManifest(
            model_version=weights_digest(tmp),
            prompt_style=prompt_style,
            with_codes=with_codes,
            yes_token=answer.yes_token,
            no_token=answer.no_token,
            yes_token_id=answer.yes_id,
            no_token_id=answer.no_id,
            code_version=code_version,
            metrics=metrics,
            base_model=base_model,
            fusion=fusion,
            embedding_tokens=embedding_tokens,
        )
        (tmp / MANIFEST_FILENAME).write_text(manifest.model_dump_json(indent=1) + "\n", encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def export_merged(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    base_dir: str | Path | None = None,
    metrics: dict[str, Any] | None = None,
    features: CollabFeatures | None = None,
) -> ModelManifest:
    """Merge a tuned adapter into its base and write a servable directory; the adapter's card fills the manifest.

    A CoLLM adapter (with a projector) needs `features`, its codes directory's CF embeddings: each becomes a
    vocabulary token (`soft_vocab.add_embedding_tokens`), so vLLM serves the model too.
    """
    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise BinllmJobError(f"{adapter}: not a LoRA adapter directory (no adapter_config.json)")
    card = read_adapter_card(adapter)
    base = Path(base_dir) if base_dir is not None else Path(card.base_model) if card else smollm2_cache_dir()
    if base_dir is None and not (base / "config.json").is_file():
        base = smollm2_cache_dir()  # a card written on another machine names that machine's path
    model, tokenizer = merge_adapter(base, adapter)
    projector = Projector.from_dir(adapter) if has_projector(adapter) else None
    tokens = 0
    if projector is not None:
        if features is None:
            raise BinllmJobError(
                f"{adapter} is a CoLLM adapter: export it with its codes directory (--codes)"
            )
        tokens = add_embedding_tokens(model, tokenizer, projector, packed_embeddings(features))
    return write_servable(
        model,
        tokenizer,
        out_dir,
        prompt_style=card.prompt_style if card else PromptStyle(),
        with_codes=card.with_codes if card else True,
        code_version=card.code_version if card else None,
        metrics={**(card.metrics if card else {}), **(metrics or {})},
        base_model=str(base),
        fusion=card.fusion if card else None,
        projector=projector,
        embedding_tokens=tokens,
    )


def export_base(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    with_codes: bool = False,
    prompt_style: PromptStyle | None = None,
    code_version: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> ModelManifest:
    """A servable directory from an untuned base model (the embedded demo serves SmolLM2 as it is)."""
    model, tokenizer = load_causal_lm(model_dir, dtype=torch.float32, device="cpu")
    return write_servable(
        model,
        tokenizer,
        out_dir,
        prompt_style=prompt_style or PromptStyle(),
        with_codes=with_codes,
        code_version=code_version,
        metrics=metrics or {},
        base_model=str(model_dir),
    )


def read_manifest(model_dir: str | Path) -> ModelManifest:
    """The `binllm.json` of a servable directory."""
    path = Path(model_dir) / MANIFEST_FILENAME
    if not path.is_file():
        raise BinllmJobError(f"{path}: missing; export the model with `binllm llm export`")
    return ModelManifest.model_validate_json(path.read_text(encoding="utf-8"))


def vllm_serve_command(model_dir: str | Path, env: Mapping[str, str] | None = None) -> list[str]:
    """`vllm serve DIR ...` that serves `model_dir` so that `/classify` returns sigmoid(z_yes - z_no).

    Exactly what the launcher that Compose and the Helm chart run (`model_store.contract.vllm_command`) builds
    from the directory's `binllm.json` and `config.json`; `env` holds its BINLLM_SERVE_* settings (none: the
    GPU profile).
    """
    return serve_argv(Path(model_dir), env or {})

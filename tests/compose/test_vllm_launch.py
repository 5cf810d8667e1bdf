"""The Compose vLLM service runs model_store/contract/vllm_command.py, the one builder of the vLLM command.

The file is mounted into the upstream vllm/vllm-openai image as it is, so it must run with the standard library
alone; with Compose's environment it must build exactly the line `binllm llm export` prints (its GPU profile).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from model_store.contract import vllm_command
from model_store.contract.snapshot import MANIFEST_FILENAME

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "model_store/contract/vllm_command.py"


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def _compose_env(services: dict[str, dict[str, Any]], model_dir: Path) -> dict[str, str]:
    # An empty `KEY: ${VAR:-}` parses as None here; Compose passes it as "".
    env = {k: "" if v is None else str(v) for k, v in services["vllm"]["environment"].items()}
    return {**env, vllm_command.MODEL_DIR_ENV: str(model_dir)}


def test_compose_mounts_and_runs_the_one_launcher(services: dict[str, dict[str, Any]]) -> None:
    vllm = services["vllm"]
    target = vllm["entrypoint"][-1]
    assert vllm["entrypoint"] == ["python3", target]
    assert f"./{LAUNCHER.relative_to(REPO)}:{target}:ro" in vllm["volumes"]


def test_compose_builds_the_line_export_prints(services: dict[str, dict[str, Any]], model_dir: Path) -> None:
    # `binllm llm export` prints serve_argv(dir, {}) (tests/unit/model_store/llm/test_export.py).
    assert vllm_command.serve_argv(model_dir, _compose_env(services, model_dir)) == vllm_command.serve_argv(
        model_dir, {}
    )


def test_compose_sets_only_variables_the_launcher_reads(services: dict[str, dict[str, Any]]) -> None:
    names = set(services["vllm"]["environment"]) - {"HF_HUB_OFFLINE"}
    assert names <= vllm_command.env_names()


def test_compose_serves_on_the_port_the_api_and_healthcheck_use(services: dict[str, dict[str, Any]]) -> None:
    port = services["vllm"]["environment"]["BINLLM_SERVE_PORT"]
    assert services["api"]["environment"]["BINLLM_VLLM__BASE_URL"] == f"http://vllm:{port}"
    assert f"127.0.0.1:{port}/health" in " ".join(services["vllm"]["healthcheck"]["test"])


def test_launcher_runs_on_the_standard_library_alone(model_dir: Path) -> None:
    # -I -S: no site-packages and no repository on sys.path, as in the vLLM image with only this file mounted.
    env = {vllm_command.MODEL_DIR_ENV: str(model_dir), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(LAUNCHER), "--print-only"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert shlex.split(done.stdout) == vllm_command.serve_argv(model_dir, {})


def test_gpu_profile_serves_bf16_with_prefix_caching_and_a_batch_token_limit(model_dir: Path) -> None:
    argv = vllm_command.serve_argv(model_dir, {})
    assert argv[:3] == ["vllm", "serve", str(model_dir)]
    assert _flag(argv, "--runner") == "pooling" and _flag(argv, "--convert") == "classify"
    assert "--enable-prefix-caching" in argv
    assert _flag(argv, "--dtype") == "bfloat16"
    assert int(_flag(argv, "--max-num-batched-tokens")) >= int(_flag(argv, "--max-model-len"))
    assert "--enforce-eager" not in argv


def test_cpu_profile_is_what_the_vllm_cpu_tests_run(model_dir: Path) -> None:
    argv = vllm_command.serve_argv(model_dir, {vllm_command.DEVICE_ENV: "cpu"})
    assert _flag(argv, "--dtype") == "float32"
    assert _flag(argv, "--block-size") == "32"
    assert "--enforce-eager" in argv and "--enable-prefix-caching" in argv
    assert "--gpu-memory-utilization" not in argv


def test_hf_overrides_put_the_no_piece_first_so_index_1_is_p_yes(model_dir: Path) -> None:
    overrides = json.loads(_flag(vllm_command.serve_argv(model_dir, {}), "--hf-overrides"))
    assert overrides == {
        "architectures": ["LlamaForSequenceClassification"],
        "classifier_from_token": ["ĠNo", "ĠYes"],
        "method": "from_2_way_softmax",
    }


def test_environment_overrides_single_settings_and_appends_extra_args(model_dir: Path) -> None:
    env = {
        "BINLLM_SERVE_PORT": "9000",
        "BINLLM_SERVE_MAX_NUM_BATCHED_TOKENS": "8192",
        "BINLLM_SERVE_MAX_MODEL_LEN": "",  # empty, as Compose passes an unset variable: the profile's value
        "BINLLM_SERVE_EXTRA_ARGS": "--swap-space 4",
    }
    argv = vllm_command.serve_argv(model_dir, env)
    assert _flag(argv, "--port") == "9000"
    assert _flag(argv, "--max-num-batched-tokens") == "8192"
    assert _flag(argv, "--max-model-len") == str(vllm_command.PROFILES["gpu"].max_model_len)
    assert argv[-2:] == ["--swap-space", "4"]


def test_a_malformed_setting_is_refused_naming_the_variable(model_dir: Path) -> None:
    with pytest.raises(vllm_command.LaunchError, match="BINLLM_SERVE_MAX_NUM_SEQS"):
        vllm_command.serve_argv(model_dir, {"BINLLM_SERVE_MAX_NUM_SEQS": "many"})
    with pytest.raises(vllm_command.LaunchError, match="BINLLM_SERVE_DEVICE"):
        vllm_command.serve_argv(model_dir, {"BINLLM_SERVE_DEVICE": "tpu"})


def test_missing_manifest_is_refused_with_a_hint_to_export(tmp_path: Path) -> None:
    with pytest.raises(vllm_command.LaunchError, match="export"):
        vllm_command.serve_argv(tmp_path, {})


def test_non_causal_architecture_is_refused(model_dir: Path) -> None:
    (model_dir / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(vllm_command.LaunchError, match="ForCausalLM"):
        vllm_command.serve_argv(model_dir, {})


def test_main_exits_2_with_one_line_when_the_model_is_missing(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(vllm_command.MODEL_DIR_ENV, str(tmp_path))
    assert vllm_command.main(["--print-only"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_main_appends_its_own_arguments_last(model_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(vllm_command.MODEL_DIR_ENV, str(model_dir))
    assert vllm_command.main(["--print-only", "--swap-space", "4"]) == 0
    assert shlex.split(capsys.readouterr().out)[-2:] == ["--swap-space", "4"]


def test_manifest_file_name_is_the_contracts() -> None:
    assert vllm_command.MANIFEST == MANIFEST_FILENAME


def settings_table_rows() -> list[str]:
    """The lines of README's "One vLLM command" table (its header row up to the first line that is no row)."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("| setting | GPU (Compose, chart"))
    end = next((k for k in range(start, len(lines)) if not lines[k].startswith("|")), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_readme_settings_table_states_the_launchers_profiles(model_dir: Path, device: str) -> None:
    """README "One vLLM command": each row's first word per column is what the profile passes (or n/a, default)."""
    argv = vllm_command.serve_argv(model_dir, {vllm_command.DEVICE_ENV: device})
    column = 2 if device == "gpu" else 3
    rows = [line.split("|") for line in settings_table_rows() if line.startswith("| `--")]
    assert len(rows) >= 8
    for row in rows:
        flag, stated = row[1].split()[0].strip("`"), row[column].split()[0].strip("`")
        if stated in {"on", "off"}:
            assert (flag in argv) == (stated == "on"), flag
        elif stated in {"n/a", "vLLM's"}:
            assert flag not in argv, flag
        else:
            assert _flag(argv, flag) == stated, flag

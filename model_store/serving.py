"""`binllm serve`: the online service on a published directory snapshot and an exported model.

The one step from the offline job to a running service: what `binllm publish --out-dir` and `binllm llm
export` wrote, served by `python -m app.server` (the same server `make serve`, the images and the chart run)
with the in-process model. The command only checks both directories and sets the service's settings;
every other `BINLLM_*` setting in the environment still applies.

    binllm serve --snapshot artifacts/snapshot --model artifacts/llm/merged
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from model_store.contract.snapshot import ACTIVE_FILENAME, MANIFEST_FILENAME
from model_store.errors import BinllmJobError


def serve_environment(
    snapshot: Path, model: Path, host: str | None, port: int | None, base: dict[str, str]
) -> dict[str, str]:
    """`base` plus the settings that serve `snapshot` with `model` in process; refuses directories that are not."""
    if not (snapshot / ACTIVE_FILENAME).is_file():
        raise BinllmJobError(
            f"{snapshot}: no {ACTIVE_FILENAME} file, so not a published snapshot (binllm publish --out-dir DIR)"
        )
    if not (model / MANIFEST_FILENAME).is_file():
        raise BinllmJobError(f"{model}: no {MANIFEST_FILENAME}, so not an exported model (binllm llm export)")
    env = {
        **base,
        "BINLLM_STORE": "directory",
        "BINLLM_BACKEND": "local",
        "BINLLM_SNAPSHOT_DIR": str(snapshot),
        "BINLLM_LOCAL__MODEL_DIR": str(model),
    }
    if host is not None:
        env["BINLLM_SERVER__HOST"] = host
    if port is not None:
        env["BINLLM_SERVER__PORT"] = str(port)
    return env


def serve_command(
    snapshot: Annotated[
        Path, typer.Option("--snapshot", help="Directory written by `binllm publish --out-dir`.")
    ],
    model: Annotated[Path, typer.Option("--model", help="Model directory written by `binllm llm export`.")],
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default: BINLLM_SERVER__HOST, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port (default: BINLLM_SERVER__PORT, 8000).")
    ] = None,
) -> None:
    """Serve a published snapshot with an exported model: POST /predict, /readyz, /metrics."""
    env = serve_environment(snapshot, model, host, port, dict(os.environ))
    # The server replaces this process (signals and exit status are uvicorn's); the service stays a separate
    # layer that the offline job does not import.
    os.execvpe(sys.executable, [sys.executable, "-m", "app.server"], env)

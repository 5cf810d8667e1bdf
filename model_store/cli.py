"""`binllm`: the offline job's command line (typer).

    binllm codes train --train ../shared/data/ml-1m-collm/train_ood2.jsonl.gz \
        --valid ../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz --out artifacts/codes
    binllm codes eval --codes artifacts/codes --split ../shared/data/ml-1m-collm/valid_ood2.jsonl.gz

Errors the user can fix (`BinllmJobError`) print one line and exit with status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import sys

import typer

from model_store.errors import BinllmJobError

app = typer.Typer(name="binllm", help="BinLLM offline job: data, codes, LLM tuning, export, publish.")
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for user errors.")) -> None:
    _state["debug"] = debug


def _register() -> None:
    """Attach each area's sub-app. None of them imports torch at import time (only when a command runs),
    so `binllm --help` and `binllm publish` work in an image without the ML extras."""
    from model_store.bundle.commands import bundle_command
    from model_store.codes.commands import codes_app
    from model_store.data.commands import data_app
    from model_store.demo import demo_app
    from model_store.llm.commands import llm_app
    from model_store.publish.commands import register_publish
    from model_store.serving import serve_command

    app.add_typer(data_app, name="data")
    app.add_typer(codes_app, name="codes")
    app.add_typer(llm_app, name="llm")
    register_publish(app)
    app.add_typer(demo_app, name="demo")
    app.command("bundle")(bundle_command)
    app.command("serve")(serve_command)


def main() -> None:
    """Console-script entry point."""
    _register()
    try:
        app(standalone_mode=False)
    except BinllmJobError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click's own usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise

"""Entry point of the ``rlx`` console script.

Errors a user can fix print one line (``error: ...``) and exit non-zero; ``--debug``
shows the traceback instead. Nothing here imports torch, transformers or mlflow until a
command needs them.
"""

from __future__ import annotations

import os
import sys

import click
import typer

from rlx.cli import plugins_cmd, run_cmd, runs_cmd
from rlx.errors import RlxError

app = typer.Typer(name="rlx", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="rlx: compose RL experiments from plugins; every run tracked in MLflow.")
app.command("run", context_settings={"help_option_names": ["-h", "--help"]})(run_cmd.run)
app.add_typer(plugins_cmd.app, name="plugins")
app.add_typer(runs_cmd.app, name="runs")
app.command("ui")(runs_cmd.ui)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the rlx version and exit.")) -> None:
    if version:
        from rlx import __version__

        typer.echo(__version__)
        raise typer.Exit()


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("RLX_DEBUG") == "1"
    if debug:
        os.environ["RLX_DEBUG"] = "1"
    from rlx.registry import get_registry

    try:
        get_registry().add_commands(app)
    except Exception as exc:  # a broken registry must not take the CLI down
        typer.echo(f"warning: plugin commands unavailable: {exc}", err=True)
    try:
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns exit codes
        code = app(args=args, prog_name="rlx", standalone_mode=False)
        if code == 130:
            _fail("interrupted; the run was marked KILLED", 130)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("interrupted; the run was marked KILLED", 130)
    except RlxError as exc:
        if debug:
            raise
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)


if __name__ == "__main__":
    main()

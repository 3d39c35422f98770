"""Entry point of the ``rlx`` console script.

Errors a user can fix print one line (``error: ...``) and exit non-zero; ``--debug``
shows the traceback instead. Nothing here imports torch, transformers or mlflow until a
command needs them.
"""

from __future__ import annotations

import os
import sys

from rlx.cli import gcpause

_paused_here = gcpause.pause()  # see rlx.cli.gcpause
try:
    import typer

    from rlx.cli import compare_cmd, plugins_cmd, run_cmd, runs_cmd, sweep_cmd, ui_cmd
    from rlx.errors import RlxError
finally:
    if _paused_here:
        gcpause.resume()

app = typer.Typer(name="rlx", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="rlx: compose RL experiments from plugins; every run tracked in MLflow.")
app.command("run", context_settings={"help_option_names": ["-h", "--help"]})(run_cmd.run)
app.add_typer(plugins_cmd.app, name="plugins")
app.add_typer(runs_cmd.app, name="runs")
app.command("ui")(ui_cmd.ui)
app.command("sweep", context_settings={"help_option_names": ["-h", "--help"]})(sweep_cmd.sweep)
app.command("compare")(compare_cmd.compare)


# commands that return within a fraction of a second; anything else collects garbage again
_SHORT = ("plugins", "runs")


@app.callback(invoke_without_command=True)  # so that `rlx --version` reaches it
def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", help="Print the rlx version and exit.")) -> None:
    if version:
        from rlx import __version__

        typer.echo(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        ctx.fail("Missing command.")
    if ctx.invoked_subcommand not in _SHORT:  # rlx run, rlx ui, plugin commands (runs resume: its own call)
        gcpause.resume()


def _is_usage_error(exc: BaseException) -> bool:
    """Click's and typer's (vendored click) exceptions for bad flags and arguments."""
    names = {c.__name__ for c in type(exc).__mro__}
    return "ClickException" in names and hasattr(exc, "format_message")


def _fail(message: str, code: int) -> None:
    try:
        typer.echo(f"error: {message}", err=True)
    except OSError:  # the terminal is gone (SIGHUP): the exit code still tells
        pass
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    from rlx.cli.launch import exit_child, is_child

    if not is_child():
        paused = gcpause.pause()
        try:
            _main(argv)
        finally:
            if paused:
                gcpause.resume()
        return
    try:
        _main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    exit_child(code)


def _main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    from rlx.cli import launch

    launch.ARGV[:] = args
    debug = "--debug" in args or os.environ.get("RLX_DEBUG") == "1"
    if debug:
        os.environ["RLX_DEBUG"] = "1"
    try:
        # only plugins that add commands are imported here; which ones do comes from the
        # plugin cache (rlx.registry.cache) while it is valid. A built-in command (or
        # --version) never needs them: a broken or slow plugin must not delay `rlx runs list`
        from rlx.registry.cache import summary

        builtin = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
        if not (args and (args[0] in builtin or args[0] == "--version")) and summary().commands:
            from rlx.registry import get_registry

            get_registry().add_commands(app)
    except Exception as exc:  # a broken registry must not take the CLI down
        typer.echo(f"warning: plugin commands unavailable: {exc}", err=True)
    try:
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns exit codes
        code = app(args=args, prog_name="rlx", standalone_mode=False)
        if code == 130:
            _fail("interrupted (Ctrl-C)", 130)  # a run records its own end: see rlx.interrupts
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except KeyboardInterrupt:
        if debug:
            raise
        _fail("interrupted (Ctrl-C)", 130)
    except RlxError as exc:
        if debug:
            raise
        _fail(str(exc), exc.exit_code)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help text was printed: nothing else to say
            sys.exit(0)
        if _is_usage_error(exc) and not debug:  # bad flags: one line like every other error
            command = f"rlx {args[0]}" if args and not args[0].startswith("-") else "rlx"
            message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
            _fail(f"{message} (see `{command} --help`)", int(getattr(exc, "exit_code", 2)))
        if debug:
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", 1)


if __name__ == "__main__":
    main()

"""The ``sovereign`` command: a Typer app filled through the ``register_commands`` hook.

The built-in groups live one per module in this package (listed in :mod:`sovereign.cli.commands`);
a plugin adds its own through the same hook.
Every :class:`~sovereign.errors.SovereignError` is printed as a one-line message with exit code 1.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from sovereign.errors import SovereignError

app = typer.Typer(
    name="sovereign",
    help="Sovereign: a self-hosted, local-first AI stack (OpenAI-compatible gateway on llama.cpp).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _register_commands() -> None:
    """Built-in and plugin commands, through the ``register_commands`` hook."""
    from sovereign.plugins import manager

    manager().hook.register_commands(cli=app)


_register_commands()


def main() -> None:
    """Console-script entry point: run the app, turning Sovereign errors into clean exits."""
    try:
        code = app(standalone_mode=False)  # click returns a typer.Exit's code instead of raising it
    except SovereignError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)

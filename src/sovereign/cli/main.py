"""The ``sovereign`` command: a Typer app whose command groups live one per module in this package.

Each module ``sovereign.cli.<name>`` exposes ``register(app: typer.Typer) -> None``; they are found
by :func:`pkgutil.iter_modules`, so a new command group is one new module and no central edit.
Every :class:`~sovereign.errors.SovereignError` is printed as a one-line message with exit code 1.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console

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
    import sovereign.cli as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name in {"main", "common"} or module.name.startswith("_"):
            continue
        loaded = importlib.import_module(f"sovereign.cli.{module.name}")
        register = getattr(loaded, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    """Console-script entry point: run the app, turning Sovereign errors into clean exits."""
    try:
        app(standalone_mode=False)
    except SovereignError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}")
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

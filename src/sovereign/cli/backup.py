"""``sovereign backup DEST`` and ``sovereign restore SRC DATA_DIR``: consistent snapshots of data_dir.

The logic lives in :mod:`sovereign.storage.backup` and :mod:`sovereign.storage.restore`; this module
resolves the paths from the settings, draws the progress with Rich and prints one summary line.
Errors are :class:`~sovereign.errors.SovereignError` (one line, exit 1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from sovereign.cli.common import ConfigOption, settings_from
from sovereign.config import CONFIG_FILE_ENV


class RichProgress:
    """A :class:`sovereign.storage.backup.Progress` drawn as one Rich bar per phase (bytes, speed)."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description:<8}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeElapsedColumn(), TextColumn("{task.fields[name]}"),
                            console=console, transient=False)
        self.task: TaskID | None = None

    def start(self, phase: str, total_bytes: int) -> None:
        if self.task is None:
            self.bar.start()  # on the first phase: an error found before any copy prints alone
        else:
            self.bar.update(self.task, name="")
        self.task = self.bar.add_task(phase, total=max(total_bytes, 1), name="")
        if total_bytes == 0:
            self.bar.update(self.task, completed=1)

    def advance(self, nbytes: int, name: str) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=nbytes, name=name)

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.task is not None:
            self.bar.update(self.task, name="")
            self.bar.stop()


def _config_files(config: Path | None, flags_file: Path | None) -> list[Path]:
    """The settings files a snapshot carries: the TOML file (``--config`` or ``$SOVEREIGN_CONFIG``)
    and the flags file (``flags.file``), when set."""
    toml = config or (Path(os.environ[CONFIG_FILE_ENV]) if os.environ.get(CONFIG_FILE_ENV) else None)
    files = [p.expanduser() for p in (toml, flags_file) if p is not None]
    return list(dict.fromkeys(files))


def _skip_paths() -> list[Path]:
    """``PROMETHEUS_MULTIPROC_DIR`` when set: rebuilt at start, never backed up (only matters when the
    operator put it inside data_dir)."""
    metrics = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return [Path(metrics)] if metrics else []


def backup(
    dest: Annotated[Path, typer.Argument(help="New or empty directory outside data_dir for the snapshot.")],
    borg: Annotated[str | None, typer.Option("--borg", metavar="REPO",
                                             help="Then run `borg create REPO::sovereign-TIMESTAMP` on it.")] = None,
    config: ConfigOption = None,
) -> None:
    """Take a consistent snapshot of data_dir while the server runs (databases, indexes, keys, config)."""
    from sovereign.storage.backup import borg_archive_name, borg_create, create_backup, find_borg

    settings = settings_from(config)
    program = find_borg() if borg else None  # a missing borg fails before the copy, not after
    console = Console()
    with RichProgress(console) as progress:
        manifest = create_backup(settings.data_dir, dest, config_files=_config_files(config, settings.flags.file),
                                 skip=_skip_paths(), progress=progress)
    databases = sum(1 for f in manifest.files if f.kind == "sqlite")
    total = sum(f.size for f in manifest.files)
    console.print(f"backed up {settings.data_dir} to {dest}: {len(manifest.files)} files ({databases} SQLite "
                  f"databases), {decimal(total)}; manifest {dest / 'manifest.json'}", highlight=False, soft_wrap=True)
    if borg and program:
        archive = borg_create(borg, dest, borg_archive_name(manifest), borg=program)
        console.print(f"borg archive {archive} created from {dest}", highlight=False, soft_wrap=True)


def restore(
    src: Annotated[Path, typer.Argument(help="A snapshot made by `sovereign backup` (or a `borg extract` of one).")],
    data_dir: Annotated[Path, typer.Argument(help="New or empty directory to restore into.")],
    config_dir: Annotated[Path | None, typer.Option(
        "--config-dir", help="Also write the snapshot's config files (TOML, flags file) here.")] = None,
) -> None:
    """Verify a snapshot's checksums, then restore it into an empty data directory."""
    from sovereign.storage.restore import restore_backup

    console = Console()
    with RichProgress(console) as progress:
        report = restore_backup(src, data_dir, config_dir=config_dir, progress=progress)
    console.print(f"restored {len(report.data_files)} files from the backup of {report.manifest.created_at} "
                  f"into {data_dir}; start it with SOVEREIGN_DATA_DIR={data_dir}", highlight=False, soft_wrap=True)
    kept = [e.path for e in report.manifest.files if e.kind == "config"]
    if report.config_files:
        console.print("config written: " + ", ".join(str(p) for p in report.config_files), highlight=False)
    elif kept:
        console.print("config files kept in the backup (use --config-dir to write them): "
                      + ", ".join(str(src / p) for p in kept), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to ``app``."""
    app.command("backup")(backup)
    app.command("restore")(restore)

"""Restore a snapshot made by :mod:`sovereign.storage.backup` onto an empty data directory.

Order of work, so that a bad snapshot never touches the target:

1. read ``SRC/manifest.json`` (missing: :class:`~sovereign.errors.NotFoundError`; malformed or
   naming a path outside ``data/`` / ``config/``: :class:`~sovereign.errors.StorageError`);
2. refuse a target that exists and is not an empty directory
   (:class:`~sovereign.errors.ConflictError`);
3. verify every file of the manifest: present, of the recorded size and SHA-256 (a tampered,
   truncated or missing file: :class:`~sovereign.errors.StorageError`, nothing written);
4. copy ``data/...`` into the target, hashing the bytes written (a file changed between the check
   and the copy is caught too), with the recorded permission bits (``secret.key`` 0600); the target
   is created with data_dir's recorded mode. On any failure what was written is removed again.
5. optionally copy ``config/...`` into a folder the caller names (never overwriting a file).

The restored gateway opens the databases as usual (migrations run if this Sovereign is newer) and
the embedded store reconciles its ANN indexes with SQLite on open (see
:mod:`sovereign.storage.backup`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from sovereign.errors import ConflictError, NotFoundError, StorageError
from sovereign.storage.backup import (
    BLOCK,
    CONFIG,
    DATA,
    MANIFEST,
    Manifest,
    ManifestEntry,
    Progress,
    SilentProgress,
    is_empty_dir,
    remove_contents,
    safe_relative,
    sha256_of,
)


@dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore_backup` did: the snapshot's manifest, the data files written (relative
    to the target) and the config files written (absolute paths; empty without ``config_dir``)."""

    manifest: Manifest
    data_files: list[str]
    config_files: list[Path]


def read_manifest(src: Path) -> Manifest:
    """The parsed ``src/manifest.json``.

    Raises:
        NotFoundError: ``src`` is not a directory or has no manifest (an incomplete snapshot).
        StorageError: the manifest is unreadable or malformed. ConfigError: a newer format.
    """
    path = src / MANIFEST
    if not src.is_dir():
        raise NotFoundError(f"The backup {src} does not exist or is not a directory.", param="src")
    if not path.is_file():
        raise NotFoundError(f"{src} has no {MANIFEST}: it is not a Sovereign backup, or the backup did not "
                            "finish (the manifest is written last).", param="src")
    try:
        return Manifest.from_json(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageError(f"Cannot read {path}: {exc}.") from exc


def verify_snapshot(src: Path, manifest: Manifest, progress: Progress | None = None) -> None:
    """Check every file of ``manifest`` under ``src``: present, same size, same SHA-256.

    Raises:
        StorageError: the first file that is missing, truncated or altered (named in the message).
    """
    progress = progress or SilentProgress()
    progress.start("verify", sum(e.size for e in manifest.files))
    for entry in manifest.files:
        path = src / safe_relative(entry.path)
        try:
            size = path.stat().st_size
            if size != entry.size:
                raise StorageError(f"Backup file {entry.path} has {size} bytes, the manifest says {entry.size}: "
                                   "it was truncated or changed. Nothing was restored.")
            digest = sha256_of(path, progress, entry.path)
        except FileNotFoundError as exc:
            raise StorageError(f"Backup file {entry.path} is missing. Nothing was restored.") from exc
        except OSError as exc:
            raise StorageError(f"Cannot read backup file {entry.path}: {exc.strerror or exc}.") from exc
        if digest != entry.sha256:
            raise StorageError(f"Backup file {entry.path} does not match its SHA-256 in the manifest: it was "
                               "altered. Nothing was restored.")


def check_target(data_dir: Path) -> None:
    """Refuse a restore target that exists and is not an empty directory (ConflictError)."""
    if data_dir.exists() and not is_empty_dir(data_dir):
        raise ConflictError(f"The restore target {data_dir} is not empty; restore into a new or empty "
                            "directory (the running data is never overwritten).", param="data_dir")


def restore_backup(src: Path, data_dir: Path, *, config_dir: Path | None = None,
                   progress: Progress | None = None) -> RestoreReport:
    """Verify the snapshot ``src`` whole, then copy its data into the empty ``data_dir``.

    Args:
        src: a snapshot directory (``manifest.json``, ``data/``, ``config/``).
        data_dir: a new or empty directory (created with the snapshot's data_dir mode).
        config_dir: where to write the snapshot's config files; None leaves them in ``src/config``.
        progress: receives a ``verify`` phase then a ``restore`` phase.

    Raises:
        NotFoundError / StorageError / ConfigError: see :func:`read_manifest`, :func:`verify_snapshot`.
        ConflictError: ``data_dir`` is not empty, or a config file already exists in ``config_dir``.
        StorageError: a write failed (what was written is removed again).
    """
    progress = progress or SilentProgress()
    manifest = read_manifest(src)
    check_target(data_dir)
    data = [e for e in manifest.files if e.kind != "config"]
    configs = [e for e in manifest.files if e.kind == "config"]
    if config_dir is not None:
        for entry in configs:
            if (config_dir / Path(entry.path).name).exists():
                raise ConflictError(f"{config_dir / Path(entry.path).name} already exists; choose another "
                                    "--config-dir or move the file away.", param="config_dir")
    verify_snapshot(src, manifest, progress)
    created = not data_dir.exists()
    written_configs: list[Path] = []
    progress.start("restore", sum(e.size for e in data) + (sum(e.size for e in configs) if config_dir else 0))
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=manifest.data_dir_mode)
        if created:
            os.chmod(data_dir, manifest.data_dir_mode)
        for entry in data:
            rel = safe_relative(entry.path).relative_to(DATA)
            _restore_file(src, entry, data_dir / rel, progress)
        if config_dir is not None:
            config_dir.mkdir(parents=True, exist_ok=True)
            for entry in configs:
                target = config_dir / safe_relative(entry.path).relative_to(CONFIG)
                _restore_file(src, entry, target, progress)
                written_configs.append(target)
    except BaseException:
        remove_contents(data_dir, remove_root=created)
        for path in written_configs:
            path.unlink(missing_ok=True)
        raise
    return RestoreReport(manifest, [str(safe_relative(e.path).relative_to(DATA)) for e in data], written_configs)


def _restore_file(src: Path, entry: ManifestEntry, target: Path, progress: Progress) -> None:
    """Copy one verified file to ``target`` (a new file), re-hashing the bytes written."""
    digest = hashlib.sha256()
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (src / entry.path).open("rb") as source, target.open("xb") as out:
            os.chmod(target, entry.mode)  # before the bytes: a secret is never readable by others
            while block := source.read(BLOCK):
                out.write(block)
                digest.update(block)
                progress.advance(len(block), entry.path)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise StorageError(f"Cannot restore {entry.path} to {target}: {exc.strerror or exc}.") from exc
    if digest.hexdigest() != entry.sha256:
        raise StorageError(f"Backup file {entry.path} changed while it was restored; nothing was restored.")

"""Consistent online snapshots of ``data_dir`` (``sovereign backup``), taken while the gateway serves.

A snapshot is a directory::

    DEST/manifest.json        written last (atomically): its presence marks a complete snapshot
    DEST/data/...             data_dir's files under their relative paths
    DEST/config/...           the TOML settings file and the flags file, when the caller names them

What is taken, and how (every file found in ``data_dir`` is classified, none is guessed by name):

- **SQLite databases** (recognised by their 16-byte header ``SQLite format 3\\0``: the response
  cache ``cache.sqlite3``, ``conversations.sqlite3``, the embedded RAG store ``rag/store.sqlite3``,
  the agents' checkpoints ``agents.sqlite``, ``control.sqlite3`` with flag values, rollouts, the
  audit log and API keys) are copied with SQLite's online backup API
  (``sqlite3.Connection.backup``, all pages in one step): one read transaction, so the copy is the
  database as of one commit, WAL content included, while the server keeps writing (in WAL mode a
  reader never blocks a writer). Their ``-wal``/``-shm``/``-journal`` side files are not copied.
  The copy is checked with ``PRAGMA quick_check``. Databases are copied whole: no column is read.
- **Other regular files** are copied byte for byte: the embedded store's HNSW index files
  ``rag/ann/<collection>.usearch`` and ``secret.key`` (the key-hashing secret, mode 0600).
- **Skipped**: ``prometheus-multiproc/`` and ``logs/`` (rebuilt at start), ``*.log``, ``*.tmp``
  (an index being saved), SQLite side files, symbolic links, and paths the caller adds to ``skip``.

Why the copied ANN files are consistent with the copied ``rag/store.sqlite3``: SQLite holds every
chunk's float32 vector (the source of truth) and the index is keyed by the chunk's ``AUTOINCREMENT``
rowid, which is never reused and whose vector is never updated, so a key present in both always
means the same vector. The store replaces an index file by ``rename`` (atomic), so a copy reads one
whole saved version. On open, :class:`~sovereign.rag.stores.embedded.EmbeddedStore` reconciles each
index with SQLite: keys missing from the file are added from the stored vectors, keys SQLite no
longer has are removed, an unreadable file is rebuilt. The restored index therefore holds exactly
the snapshot's chunks whichever moment each file was taken at, and keeps the live graph (a rebuild
from scratch would build a different HNSW graph, and approximate results could differ).

Order: the response cache is copied first, the RAG store after it. Cache keys of RAG models carry
the collection's index version, a counter that only grows; copying the cache first means every
cached answer refers to a version the restored store has reached, never to a later one it will
reuse for different content.

Errors: an unusable destination or source is :class:`~sovereign.errors.InvalidRequestError`,
:class:`~sovereign.errors.ConflictError` or :class:`~sovereign.errors.NotFoundError`; a failed
copy is :class:`~sovereign.errors.StorageError` (the partial snapshot is removed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from sovereign import __version__
from sovereign.errors import ConfigError, ConflictError, InvalidRequestError, NotFoundError, StorageError

FORMAT = "sovereign-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATA = "data"
CONFIG = "config"
SQLITE_MAGIC = b"SQLite format 3\x00"
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
SKIP_DIRS = ("prometheus-multiproc", "logs")
SKIP_SUFFIXES = (".log", ".tmp")
BLOCK = 1 << 20
BUSY_TIMEOUT_S = 30.0
# copied first: the cache's keys name RAG index versions (see the module docstring)
FIRST = ("cache.sqlite3",)

Kind = Literal["sqlite", "file", "config"]


class Progress(Protocol):
    """Receives the progress of a backup or restore (the CLI draws it with Rich)."""

    def start(self, phase: str, total_bytes: int) -> None:
        """A phase begins (``"backup"``, ``"verify"``, ``"restore"``) over ``total_bytes`` bytes."""
        ...

    def advance(self, nbytes: int, name: str) -> None:
        """``nbytes`` more bytes of file ``name`` (relative path) are done."""
        ...


class SilentProgress:
    """A :class:`Progress` that shows nothing."""

    def start(self, phase: str, total_bytes: int) -> None:
        return None

    def advance(self, nbytes: int, name: str) -> None:
        return None


@dataclass(frozen=True)
class ManifestEntry:
    """One file of a snapshot.

    Attributes:
        path: POSIX path relative to the snapshot root (``data/...`` or ``config/...``).
        size: bytes. sha256: hex digest of the snapshot's file. mode: permission bits (``0o600``).
        kind: ``sqlite`` (online backup), ``file`` (byte copy) or ``config`` (settings files).
        source: the original absolute path (config files only, for the operator).
    """

    path: str
    size: int
    sha256: str
    mode: int
    kind: Kind
    source: str | None = None


@dataclass
class Manifest:
    """The snapshot's table of contents (``manifest.json``); ``created_at`` is ISO 8601 UTC."""

    created_at: str
    sovereign_version: str
    data_dir: str
    data_dir_mode: int
    files: list[ManifestEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        """The JSON text written to ``manifest.json`` (modes as octal strings)."""
        body = {"format": self.format, "format_version": self.format_version, **asdict(self)}
        body["data_dir_mode"] = oct(self.data_dir_mode)
        for entry in body["files"]:
            entry["mode"] = oct(entry["mode"])
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and validate ``manifest.json``.

        Raises:
            StorageError: not JSON, not a Sovereign manifest, or an entry with an unsafe path.
            ConfigError: written by a newer format version.
        """
        try:
            body = json.loads(text)
            if body.get("format") != FORMAT:
                raise StorageError("manifest.json is not a Sovereign backup manifest.")
            if int(body["format_version"]) > FORMAT_VERSION:
                raise ConfigError(f"The backup has format version {body['format_version']}; this Sovereign reads "
                                  f"up to {FORMAT_VERSION}. Upgrade Sovereign to restore it.")
            files = [ManifestEntry(str(f["path"]), int(f["size"]), str(f["sha256"]), int(str(f["mode"]), 8),
                                   f["kind"], f.get("source")) for f in body["files"]]
            manifest = cls(str(body["created_at"]), str(body["sovereign_version"]), str(body["data_dir"]),
                           int(str(body["data_dir_mode"]), 8), files, list(body.get("skipped", [])),
                           FORMAT, int(body["format_version"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError(f"manifest.json is malformed ({type(exc).__name__}: {exc}).") from exc
        for entry in manifest.files:
            safe_relative(entry.path)
        return manifest


def safe_relative(path: str) -> Path:
    """``path`` as a relative Path under ``data/`` or ``config/``; StorageError for anything else
    (absolute, ``..``, another top folder): a manifest never writes outside the restore target."""
    rel = Path(path)
    if rel.is_absolute() or ".." in rel.parts or len(rel.parts) < 2 or rel.parts[0] not in (DATA, CONFIG):
        raise StorageError(f"manifest.json names an unsafe path {path!r}.")
    return rel


def is_sqlite(path: Path) -> bool:
    """True when ``path`` starts with SQLite's database header."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def sha256_of(path: Path, progress: Progress | None = None, name: str = "") -> str:
    """Hex SHA-256 of ``path``, reporting bytes to ``progress``. Raises OSError."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
            if progress is not None:
                progress.advance(len(block), name)
    return digest.hexdigest()


def is_empty_dir(path: Path) -> bool:
    """True when ``path`` is a directory with no entries."""
    return path.is_dir() and next(path.iterdir(), None) is None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True)
class _Item:
    source: Path
    rel: str
    kind: Kind


def plan(data_dir: Path, skip: Iterable[Path] = ()) -> tuple[list[_Item], list[str]]:
    """What a snapshot of ``data_dir`` takes and what it skips (relative paths), cache first.

    ``skip``: further absolute paths (files or folders) to leave out.
    """
    skipped: list[str] = []
    items: list[_Item] = []
    extra = [Path(p).resolve() for p in skip]
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        for name in sorted(dirs):
            path = here / name
            if (here == data_dir and name in SKIP_DIRS) or path.resolve() in extra or path.is_symlink():
                skipped.append(path.relative_to(data_dir).as_posix() + "/")
                dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            path = here / name
            rel = path.relative_to(data_dir).as_posix()
            if name.endswith(SIDE_SUFFIXES):
                continue  # folded into the database by the backup API
            if name.endswith(SKIP_SUFFIXES) or path.is_symlink() or not path.is_file() or path.resolve() in extra:
                skipped.append(rel)
                continue
            items.append(_Item(path, f"{DATA}/{rel}", "sqlite" if is_sqlite(path) else "file"))
    items.sort(key=lambda i: (i.rel.removeprefix(f"{DATA}/") not in FIRST, i.rel))
    return items, skipped


def check_destination(dest: Path, data_dir: Path) -> None:
    """Refuse a destination inside ``data_dir``, a non-empty one, or one that cannot be written.

    Raises:
        InvalidRequestError: ``dest`` is ``data_dir`` or lies inside it.
        ConflictError: ``dest`` exists and is not an empty directory.
        StorageError: ``dest`` cannot be created or written.
    """
    real_dest, real_data = dest.resolve(), data_dir.resolve()
    if _inside(real_dest, real_data):
        raise InvalidRequestError(f"The backup destination {dest} lies inside data_dir {data_dir}; "
                                  "choose a folder outside it (a snapshot must not copy itself).", param="dest")
    if dest.exists() and not is_empty_dir(dest):
        raise ConflictError(f"The backup destination {dest} is not an empty directory; give a new or empty one.",
                            param="dest")
    probe = dest / ".sovereign-write-probe"
    try:
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"Cannot write the backup destination {dest}: {exc.strerror or exc}.") from exc


def _backup_sqlite(source: Path, target: Path) -> None:
    """Online-backup ``source`` into the new file ``target`` and quick_check the copy."""
    # mode=rw: never create a database that vanished since the plan (FileNotFoundError-like error)
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: every page in one step, inside one read transaction
            check = dst.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise StorageError(f"The copy of {source} fails PRAGMA quick_check: {check}.")
        finally:
            dst.close()
    finally:
        src.close()
    for suffix in SIDE_SUFFIXES:  # closing the copy's only connection checkpoints and removes them
        if Path(f"{target}{suffix}").exists():
            raise StorageError(f"The copy of {source} left a {suffix} file behind; it is not self-contained.")


def _copy_file(source: Path, target: Path, progress: Progress, name: str) -> str:
    """Copy ``source`` to ``target`` (new file) hashing what is written; returns the hex SHA-256."""
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("xb") as dst:
        while block := src.read(BLOCK):
            dst.write(block)
            digest.update(block)
            progress.advance(len(block), name)
        dst.flush()
        os.fsync(dst.fileno())
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_backup(
    data_dir: Path, dest: Path, *, config_files: Sequence[Path] = (), skip: Iterable[Path] = (),
    progress: Progress | None = None,
) -> Manifest:
    """Snapshot ``data_dir`` into ``dest`` while the server runs; returns the manifest written last.

    Args:
        data_dir: the gateway's data directory (must exist).
        dest: a new or empty directory outside ``data_dir`` (created with mode 0700).
        config_files: settings files copied to ``config/<name>`` (the TOML file, the flags file).
        skip: absolute paths inside ``data_dir`` to leave out (e.g. ``PROMETHEUS_MULTIPROC_DIR``).
        progress: receives one ``backup`` phase over the bytes to copy.

    Raises:
        NotFoundError: ``data_dir`` or a config file does not exist.
        InvalidRequestError / ConflictError / StorageError: see :func:`check_destination`; a copy
            failed (the partial snapshot is removed, ``dest`` is left as it was).
    """
    progress = progress or SilentProgress()
    if not data_dir.is_dir():
        raise NotFoundError(f"data_dir {data_dir} does not exist; nothing to back up.", param="data_dir")
    for config in config_files:
        if not config.is_file():
            raise NotFoundError(f"The config file {config} does not exist.", param="config")
    existed = dest.exists()
    check_destination(dest, data_dir)
    items, skipped = plan(data_dir, skip)
    names: set[str] = set()
    for i, config in enumerate(config_files):
        name = config.name if config.name not in names else f"{i}-{config.name}"  # two files, one name
        names.add(name)
        items.append(_Item(config.resolve(), f"{CONFIG}/{name}", "config"))
    manifest = Manifest(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), __version__, str(data_dir.resolve()),
                        stat.S_IMODE(data_dir.stat().st_mode), skipped=skipped)
    progress.start("backup", sum(_size(i.source) for i in items))
    try:
        for item in items:
            entry = _snapshot_one(item, dest, progress)
            if entry is None:
                manifest.skipped.append(item.rel.removeprefix(f"{DATA}/") + " (vanished)")
            else:
                manifest.files.append(entry)
        tmp = dest / (MANIFEST + ".tmp")
        tmp.write_text(manifest.to_json())
        _fsync(tmp)
        tmp.replace(dest / MANIFEST)
        _fsync(dest)
    except BaseException:
        remove_contents(dest, remove_root=not existed)
        raise
    return manifest


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _snapshot_one(item: _Item, dest: Path, progress: Progress) -> ManifestEntry | None:
    """Copy one planned item into ``dest``; None when it vanished since the plan."""
    target = dest / item.rel
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = stat.S_IMODE(item.source.stat().st_mode)
        if item.kind == "sqlite":
            try:
                _backup_sqlite(item.source, target)
            except sqlite3.Error as exc:
                if not item.source.exists():
                    raise FileNotFoundError(item.source) from exc
                raise StorageError(f"Cannot back up the database {item.source}: {exc}.") from exc
            _fsync(target)
            digest = sha256_of(target, progress, item.rel)
        else:
            digest = _copy_file(item.source, target, progress, item.rel)
        os.chmod(target, mode)
    except FileNotFoundError as exc:
        if item.kind == "config" or item.source.exists():
            raise StorageError(f"Cannot copy {item.source} into the backup: {exc.strerror or exc}.") from exc
        target.unlink(missing_ok=True)
        return None  # e.g. the index file of a collection deleted meanwhile
    except OSError as exc:
        raise StorageError(f"Cannot copy {item.source} into the backup: {exc.strerror or exc}.") from exc
    source = str(item.source) if item.kind == "config" else None
    return ManifestEntry(item.rel, target.stat().st_size, digest, mode, item.kind, source)


def remove_contents(root: Path, *, remove_root: bool) -> None:
    """Delete what a failed backup or restore wrote under ``root`` (``root`` too when it made it)."""
    if not root.exists():
        return
    if remove_root:
        shutil.rmtree(root, ignore_errors=True)
        return
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def borg_archive_name(manifest: Manifest) -> str:
    """``sovereign-<created_at>``, e.g. ``sovereign-2025-01-31T12:00:00Z``."""
    return f"sovereign-{manifest.created_at}"


def find_borg() -> str:
    """The path of the ``borg`` program. Raises ConfigError naming the install command when missing."""
    program = shutil.which("borg")
    if not program:
        raise ConfigError("--borg needs BorgBackup, which is not installed: `apt-get install borgbackup` "
                          "(Debian/Ubuntu) or see https://borgbackup.readthedocs.io/en/stable/installation.html.")
    return program


def borg_create(repo: str, snapshot: Path, archive: str, *, borg: str | None = None,
                timeout_s: float | None = None) -> str:
    """Run ``borg create REPO::ARCHIVE .`` inside ``snapshot`` (archive paths are the snapshot's
    contents: ``manifest.json``, ``data/...``, ``config/...``); returns ``REPO::ARCHIVE``.

    The environment (``BORG_PASSPHRASE``, ``BORG_RSH``, ``BORG_BASE_DIR``...) passes through; stdin
    is closed, so a question borg would ask (an unknown unencrypted repository) fails instead of
    waiting.

    Raises:
        ConfigError: the ``borg`` program is not installed.
        StorageError: borg failed (its last message is quoted) or did not finish in ``timeout_s``.
    """
    program = borg or find_borg()
    target = f"{repo}::{archive}"
    try:
        done = subprocess.run([program, "create", target, "."], cwd=snapshot, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StorageError(f"borg create {target} did not finish in {timeout_s} s.") from exc
    except OSError as exc:
        raise ConfigError(f"Cannot run {program}: {exc.strerror or exc}.") from exc
    if done.returncode not in (0, 1):  # 1: finished with warnings
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise StorageError(f"borg create {target} failed (exit {done.returncode}): "
                           f"{lines[-1] if lines else 'no message'}")
    return target

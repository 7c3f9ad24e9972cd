"""The embedded store's SQLite schema and its migrations (store ``rag_embedded``).

Version 1 (``m001_initial``) is the schema of the release before versioned migrations, adopted as is.
Version 2 (``m002_tenants``) partitions the store by tenant: ``collections`` is keyed by
``(tenant, name)``, ``documents`` and ``chunks`` carry ``tenant``, a path is unique per
``(tenant, collection)``. Existing rows belong to tenant ``anonymous``, so a single-user install
keeps its documents, ids, chunk row ids (the FTS5 rowids and ANN keys) and index files.

SQLite cannot change a primary key or a table constraint in place, so ``m002_tenants`` rebuilds the
three tables (https://www.sqlite.org/lang_altertable.html#otheralter) inside the migration's
``BEGIN IMMEDIATE``: new tables referencing each other, rows copied with their ids, the old tables
dropped child first (a parent dropped first would cascade its ``DELETE`` into the new chunks), then
the new ones renamed (SQLite rewrites the foreign keys that name them). The FTS5 table is keyed by
chunk row id and is kept as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from sovereign.storage import Migrations, execute_script

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, collection TEXT NOT NULL REFERENCES collections(name), path TEXT NOT NULL,
    title TEXT NOT NULL, content_hash TEXT NOT NULL, size INTEGER NOT NULL, metadata TEXT NOT NULL,
    UNIQUE (collection, path));
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE, collection TEXT NOT NULL,
    ordinal INTEGER NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL, content_hash TEXT NOT NULL,
    token_count INTEGER NOT NULL, vector BLOB NOT NULL, UNIQUE (doc_id, ordinal));
CREATE INDEX IF NOT EXISTS chunks_collection ON chunks (collection);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks (content_hash);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (title, heading, text, tokenize = 'porter unicode61');
"""

# Version 2: the same tables keyed by tenant (created as *_v2, renamed by m002_tenants).
_TABLES_V2 = """
CREATE TABLE collections_v2 (
    tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tenant, name));
CREATE TABLE documents_v2 (
    doc_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, collection TEXT NOT NULL, path TEXT NOT NULL,
    title TEXT NOT NULL, content_hash TEXT NOT NULL, size INTEGER NOT NULL, metadata TEXT NOT NULL,
    UNIQUE (tenant, collection, path), FOREIGN KEY (tenant, collection) REFERENCES collections_v2 (tenant, name));
CREATE TABLE chunks_v2 (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents_v2(doc_id) ON DELETE CASCADE, tenant TEXT NOT NULL,
    collection TEXT NOT NULL, ordinal INTEGER NOT NULL, heading TEXT NOT NULL, text TEXT NOT NULL,
    content_hash TEXT NOT NULL, token_count INTEGER NOT NULL, vector BLOB NOT NULL, UNIQUE (doc_id, ordinal));
INSERT INTO collections_v2 (tenant, name, version) SELECT 'anonymous', name, version FROM collections;
INSERT INTO documents_v2 (doc_id, tenant, collection, path, title, content_hash, size, metadata)
    SELECT doc_id, 'anonymous', collection, path, title, content_hash, size, metadata FROM documents;
INSERT INTO chunks_v2 (id, chunk_id, doc_id, tenant, collection, ordinal, heading, text, content_hash,
    token_count, vector)
    SELECT id, chunk_id, doc_id, 'anonymous', collection, ordinal, heading, text, content_hash, token_count, vector
    FROM chunks;
DROP TABLE chunks;
DROP TABLE documents;
DROP TABLE collections;
ALTER TABLE collections_v2 RENAME TO collections;
ALTER TABLE documents_v2 RENAME TO documents;
ALTER TABLE chunks_v2 RENAME TO chunks;
CREATE INDEX chunks_space ON chunks (tenant, collection);
CREATE INDEX chunks_hash ON chunks (content_hash)
"""

MIGRATIONS: Migrations[Callable[[sqlite3.Connection], None]] = Migrations("rag_embedded")


@MIGRATIONS.step
def m001_initial(db: sqlite3.Connection) -> None:
    """The schema of the release before versioned migrations (adopted as is)."""
    execute_script(db, SCHEMA_V1)


@MIGRATIONS.step
def m002_tenants(db: sqlite3.Connection) -> None:
    """Collections, documents and chunks belong to a tenant; existing rows to ``anonymous`` (see the
    module docstring for why the tables are rebuilt). Chunk row ids and the AUTOINCREMENT high-water
    mark are kept, so the FTS5 rows and the ANN files stay valid."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
    execute_script(db, _TABLES_V2)
    if row is not None:  # never hand out an id a deleted chunk had (a stale ANN key could match it)
        db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'chunks'", (row[0],))
        db.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'chunks', ? "
                   "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'chunks')", (row[0],))

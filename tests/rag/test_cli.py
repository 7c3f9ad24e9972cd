"""``sovereign ingest / search / ask / migrate-store`` as commands: real files, real MiniLM, real SQLite,
real PostgreSQL + pgvector, the real SmolLM2. Happy paths run in-process (``typer.testing.CliRunner``);
bad input runs ``python -m sovereign`` as a user does, to see the message and the exit status."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from sovereign.cli.main import app
from sovereign.config import load_settings
from sovereign.rag.embeddings import OnnxMiniLMEmbedder
from tests.rag.conftest import CORPUS
from tests.rag.test_loaders_chunking import pdf_with_text

QUESTION = "What does functools.lru_cache do with its maxsize argument?"
SUMMARY = re.compile(r"added (\d+), updated (\d+), unchanged (\d+), removed (\d+), failed (\d+)")
# 1 thread: no OpenMP spin on busy cores; a 1024-token window keeps the model fast
ENGINE_ENV = {"SOVEREIGN_ENGINE__N_CTX": "1024", "SOVEREIGN_ENGINE__N_THREADS": "1"}


def cli(*args: str, env: dict[str, str]) -> Result:
    """Run ``sovereign ARGS`` in-process; a wide terminal so Rich does not wrap paths."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400", **env})


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sovereign ARGS`` as a separate process (the console script's error mapping)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    return subprocess.run([sys.executable, "-m", "sovereign", *args], capture_output=True, text=True,
                          env={**full, "COLUMNS": "400", **env}, timeout=180)


def user_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A one-line ``error:`` message naming the problem, exit status 1, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def ranked(output: str) -> list[tuple[float, str, str]]:
    """``(score, path, chunk_id)`` of each result printed by ``sovereign search``, in order."""
    scores = [float(s) for s in re.findall(r"^\d+\. .* score ([0-9.]+)$", output, re.M)]
    places = re.findall(r"^   (\S+) \((\S+)\)$", output, re.M)
    assert len(scores) == len(places), output
    return [(s, p, c) for s, (p, c) in zip(scores, places, strict=True)]


@pytest.fixture(scope="module")
def pydocs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The fixture corpus ingested once with ``sovereign ingest`` into collection ``pydocs``; its env."""
    env = {"SOVEREIGN_DATA_DIR": str(tmp_path_factory.mktemp("cli") / "data")}
    output = ok(cli("ingest", str(CORPUS), "--collection", "pydocs", env=env))
    assert SUMMARY.search(output).groups() == ("5", "0", "0", "0", "0"), output  # type: ignore[union-attr]
    return env


def test_ingest_ends_with_a_summary_of_added_updated_unchanged_and_failed(tmp_path: Path, small_corpus: Path) -> None:
    root = small_corpus
    env = {"SOVEREIGN_DATA_DIR": str(tmp_path / "data")}
    first = ok(cli("ingest", str(root), env=env))
    assert SUMMARY.search(first).groups() == ("3", "0", "0", "0", "0"), first  # type: ignore[union-attr]
    assert re.search(r"(\d+) chunks embedded, 0 reused", first) and "files" in first  # the progress line

    readme = root / "README.md"
    readme.write_text(readme.read_text() + "\nA new closing paragraph about walruses.\n")
    (root / "scan.pdf").write_bytes(pdf_with_text(["Walrus tusks grow all life long."]))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really")  # bad input: a corrupt PDF
    (root / "latin1.txt").write_bytes(b"caf\xe9")  # bad input: not UTF-8
    second = ok(cli("ingest", str(root), env=env))
    assert SUMMARY.search(second).groups() == ("1", "1", "2", "0", "2"), second  # type: ignore[union-attr]
    assert re.search(r"failed \S*broken\.pdf: ", second) and re.search(r"failed \S*latin1\.txt: .*UTF-8", second)

    (root / "howto" / "sorting.rst").unlink()
    third = ok(cli("ingest", str(root), "--prune", env=env))
    assert SUMMARY.search(third).groups() == ("0", "0", "3", "1", "2"), third  # type: ignore[union-attr]


def test_search_prints_ranked_chunks_with_source_and_score(pydocs: dict[str, str]) -> None:
    hits = ranked(ok(cli("search", "lru_cache maxsize", "-k", "3", "--collection", "pydocs", env=pydocs)))
    assert len(hits) == 3
    assert hits[0][1].endswith("library/functools.html")
    assert [s for s, _, _ in hits] == sorted((s for s, _, _ in hits), reverse=True)
    assert all(re.fullmatch(r"\S+:\d+", cid) for _, _, cid in hits)  # chunk ids: <doc id>:<ordinal>
    howto = ranked(ok(cli("search", "sorting with a key function", "--path-glob", "*/howto/*", env=pydocs)))
    assert howto and all("/howto/" in path for _, path, _ in howto)
    assert ok(cli("search", "zyzzyva qwxq", "--path-glob", "*/nothing/*", env=pydocs)).strip() == "no results"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["search", "   "], ["query is empty"]),  # bad input: empty query
        (["search", "heap", "-k", "0"], ["top_k"]),  # bad input: top_k <= 0
        (["search", "heap", "--collection", "typo"], ["Unknown collection 'typo'"]),  # bad input: unknown
        (["ask", QUESTION, "--collection", "typo"], ["Unknown collection 'typo'"]),  # bad input: unknown
        (["ask", QUESTION, "--collection", "pydocs", "-k", "0"], ["top_k", "got 0"]),  # bad input: top_k 0
        (["ask", QUESTION, "--collection", "pydocs", "-k", "-3"], ["top_k"]),  # bad input: negative
        (["ask", QUESTION, "--collection", "../x"], ["Invalid collection name"]),  # bad input: bad name
    ],
)
def test_bad_search_and_ask_input_is_a_message_and_exit_1(pydocs: dict[str, str], args: list[str],
                                                          needles: list[str]) -> None:
    user_error(run_cli(*args, env=pydocs), *needles)


def test_ask_answers_and_lists_its_sources(pydocs: dict[str, str]) -> None:
    output = ok(cli("ask", QUESTION, "--collection", "pydocs", "-k", "2", "--max-tokens", "24",
                    env={**pydocs, **ENGINE_ENV}))
    answer, sources = output.split("\nSources\n")
    assert answer.strip()
    lines = [line for line in sources.splitlines() if line.strip()]
    assert [line[:4] for line in lines] == ["[1] ", "[2] "]  # -k 2: two numbered sources
    assert "functools.html" in lines[0] and re.search(r"\(\S+:\d+, score [0-9.]+\)$", lines[0])


@pytest.fixture
def pg_env(pydocs: dict[str, str], pg_uri: str) -> Iterator[dict[str, str]]:
    """``pydocs`` plus a pgvector store in a fresh schema (the DSN read from an env var, as configured)."""
    schema = f"cli_{uuid.uuid4().hex[:12]}"
    yield {**pydocs, "SOVEREIGN_RAG__PG_DSN_ENV": "RAG_TEST_PG_DSN", "RAG_TEST_PG_DSN": pg_uri,
           "SOVEREIGN_RAG__PG_SCHEMA": schema}
    import psycopg

    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _nearest(embedder: OnnxMiniLMEmbedder, queries: Sequence[str], kind: str) -> list[list[str]]:
    """Top-3 chunk ids by vector search alone for each query, on store ``kind`` (configured by the env)."""
    from sovereign.rag.stores import build_store

    store = build_store(load_settings(), kind)
    await store.open()
    try:
        vectors, _ = await embedder.embed(list(queries))
        return [[cid for cid, _ in await store.vector_search(v, 3, collection="pydocs")] for v in vectors]
    finally:
        await store.close()


def test_migrate_store_copies_a_collection_to_pgvector(pg_env: dict[str, str], embedder: OnnxMiniLMEmbedder,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    output = ok(cli("migrate-store", "--collection", "pydocs", env=pg_env))
    match = re.search(r"copied (\d+) documents \((\d+) chunks\) of 'pydocs' to pgvector", output)
    assert match, output
    db = Path(pg_env["SOVEREIGN_DATA_DIR"]) / "rag" / "store.sqlite3"
    with sqlite3.connect(db) as lite:
        docs, chunks = lite.execute("SELECT COUNT(DISTINCT doc_id), COUNT(*) FROM chunks "
                                    "WHERE collection = 'pydocs'").fetchone()
    assert (int(match[1]), int(match[2])) == (docs, chunks) and docs == 5 and chunks > 20
    schema = pg_env["SOVEREIGN_RAG__PG_SCHEMA"]
    with psycopg.connect(pg_env["RAG_TEST_PG_DSN"]) as conn:
        assert conn.execute(f"SELECT COUNT(*) FROM {schema}.documents").fetchone() == (5,)
        assert conn.execute(f"SELECT COUNT(*) FROM {schema}.chunks").fetchone() == (chunks,)

    queries = (QUESTION, "push an item onto the heap priority queue")
    for query in queries:  # hybrid search through the command: the same best page on both stores
        embedded = ranked(ok(cli("search", query, "-k", "1", "--collection", "pydocs", env=pg_env)))
        pg = ranked(ok(cli("search", query, "-k", "1", "--collection", "pydocs", "--store", "pgvector",
                           env=pg_env)))
        assert embedded[0][1] == pg[0][1]
    # the vectors were copied, not re-embedded: nearest chunks agree exactly (the keyword sides differ:
    # FTS5 bm25 vs ts_rank_cd, so the fused order may differ lower down)
    for key, value in pg_env.items():
        monkeypatch.setenv(key, value)
    assert asyncio.run(_nearest(embedder, queries, "embedded")) == asyncio.run(_nearest(embedder, queries, "pgvector"))

    again = ok(cli("migrate-store", "--collection", "pydocs", env=pg_env))  # a re-run copies nothing
    assert "copied 0 documents (0 chunks)" in again


def test_migrate_store_bad_input(pg_env: dict[str, str]) -> None:
    """Bad input: an unknown collection, another tenant's collection, no PostgreSQL DSN."""
    user_error(run_cli("migrate-store", "--collection", "typo", env=pg_env), "no collection 'typo'")
    user_error(run_cli("migrate-store", "--collection", "pydocs", "--tenant", "key-9", env=pg_env),
               "no collection 'pydocs' of tenant 'key-9'")  # pydocs is the anonymous tenant's
    no_dsn = {k: v for k, v in pg_env.items() if k != "SOVEREIGN_RAG__PG_DSN_ENV"}
    user_error(run_cli("migrate-store", "--collection", "pydocs", env=no_dsn), "pg_dsn_env")


def test_cli_acts_as_the_anonymous_tenant_unless_told_another(tmp_path: Path, small_corpus: Path) -> None:
    """``ingest/search --tenant NAME`` read and write that tenant's documents; without it the CLI is
    ``anonymous`` (a gateway without keys). Bad input: searching as a tenant that ingested nothing,
    and naming another tenant's collection, finds nothing of the first tenant's."""
    env = {"SOVEREIGN_DATA_DIR": str(tmp_path / "data")}
    first = ok(cli("ingest", str(small_corpus / "bisect.html"), "--collection", "docs", "--tenant", "key-0", env=env))
    assert SUMMARY.search(first).groups() == ("1", "0", "0", "0", "0"), first  # type: ignore[union-attr]
    again = ok(cli("ingest", str(small_corpus / "bisect.html"), "--collection", "docs", env=env))  # anonymous
    assert SUMMARY.search(again).groups() == ("1", "0", "0", "0", "0"), again  # type: ignore[union-attr]
    assert re.search(r"(\d+) chunks embedded, 0 reused", again)  # nothing reused across tenants
    question = "insertion point in a sorted list"
    mine = ranked(ok(cli("search", question, "--tenant", "key-0", env=env)))
    anonymous = ranked(ok(cli("search", question, env=env)))
    assert mine and anonymous and not {c for _, _, c in mine} & {c for _, _, c in anonymous}
    assert ok(cli("search", question, "--tenant", "key-1", env=env)).strip() == "no results"
    user_error(run_cli("search", question, "--tenant", "key-1", "--collection", "docs", env=env),
               "Unknown collection 'docs'")

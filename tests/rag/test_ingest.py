"""Ingestion on real files with the real MiniLM embedder and the real embedded store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sovereign.config import Settings, load_settings
from sovereign.errors import InvalidRequestError, NotFoundError
from sovereign.rag.embeddings import OnnxMiniLMEmbedder
from sovereign.rag.service import RagService
from tests.rag.conftest import CORPUS
from tests.rag.test_loaders_chunking import pdf_with_text

pytestmark = pytest.mark.anyio


def settings_for(data_dir: Path, **rag: object) -> Settings:
    return load_settings(data_dir=data_dir, rag={"chunk_tokens": 200, "chunk_overlap": 32, **rag})


@pytest.fixture
async def service(tmp_path: Path, embedder: OnnxMiniLMEmbedder) -> AsyncIterator[RagService]:
    svc = await RagService.open(settings_for(tmp_path / "data"), embedder=embedder)
    yield svc
    await svc.close()


async def test_second_run_embeds_nothing_and_changes_replace_exactly(service: RagService, small_corpus: Path) -> None:
    events: list[tuple[list[str], str]] = []
    service.on_change.append(lambda ids, col: events.append((ids, col)))
    first = await service.ingest_paths([small_corpus])
    assert (first.added, first.updated, first.unchanged, first.failed) == (3, 0, 0, [])
    assert first.chunks_embedded > 20
    docs = {d.path: d for d in await service.store.list_documents("default")}
    assert sum(d.chunk_count for d in docs.values()) == first.chunks_embedded + first.chunks_reused
    assert events and sorted(events[0][0]) == sorted(d.doc_id for d in docs.values())

    again = await service.ingest_paths([small_corpus])
    assert (again.added, again.updated, again.unchanged, again.chunks_embedded) == (0, 0, 3, 0)
    assert len(events) == 1  # nothing changed, nobody notified

    rst = small_corpus / "howto" / "sorting.rst"
    rst.write_text(rst.read_text() + "\n\nAppendix\n========\n\nA brand new paragraph about stable ordering.\n")
    bisect_before = await service.store.fetch_hits([f"{docs[str(small_corpus / 'bisect.html')].doc_id}:0"])
    changed = await service.ingest_paths([small_corpus])
    assert (changed.added, changed.updated, changed.unchanged) == (0, 1, 2)
    assert 1 <= changed.chunks_embedded <= 3  # only the new or shifted windows are embedded
    assert events[-1] == ([docs[str(rst)].doc_id], "default")
    hits = await service.retriever.search("brand new paragraph stable ordering", top_k=1)
    assert hits[0].path == str(rst) and hits[0].heading == "Appendix"
    bisect_after = await service.store.fetch_hits(list(bisect_before))
    assert bisect_after == bisect_before  # the other documents' chunks are untouched

    (small_corpus / "README.md").unlink()
    kept = await service.ingest_paths([small_corpus])  # without --prune nothing is removed
    assert kept.removed == 0 and len(await service.store.list_documents()) == 3
    pruned = await service.ingest_paths([small_corpus], prune=True)
    assert pruned.removed == 1
    assert str(small_corpus / "README.md") not in await service.store.known_documents("default")


async def test_bad_files_are_reported_and_skipped(service: RagService, tmp_path: Path) -> None:
    root = tmp_path / "messy"
    root.mkdir()
    (root / "good.md").write_text("# Good\nThe walrus is a large marine mammal.\n")
    (root / "empty.txt").write_bytes(b"")  # bad input: empty file
    (root / "latin1.txt").write_bytes(b"caf\xe9 cr\xe8me")  # bad input: not UTF-8
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really")  # bad input: corrupt PDF
    (root / "nul.md").write_bytes(b"# x\x00\x01\x02binary")  # bad input: binary content, text suffix
    (root / "photo.png").write_bytes(b"\x89PNG\r\n")  # bad input: unknown type
    (root / "scan.pdf").write_bytes(pdf_with_text(["Walrus tusks grow all life long."]))
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret walrus")
    (root / "escape.txt").symlink_to(outside)  # bad input: symlink leading outside the root
    (root / "dangling.txt").symlink_to(root / "missing.txt")  # bad input: unreadable (dangling link)
    report = await service.ingest_paths([root])
    assert report.added == 2  # good.md and scan.pdf
    assert sorted(Path(p).name for p, _ in report.failed) == ["broken.pdf", "dangling.txt", "latin1.txt"]
    assert "not UTF-8" in dict((Path(p).name, r) for p, r in report.failed)["latin1.txt"]
    assert report.skipped == {"empty": 1, "binary": 1, "unknown_type": 1, "outside_root": 1}
    paths = sorted(Path(d.path).name for d in await service.store.list_documents())
    assert paths == ["good.md", "scan.pdf"]
    hits = await service.retriever.search("walrus secret", top_k=5)
    assert all("secret" not in h.text for h in hits)


async def test_bad_requests_leave_the_store_unchanged(service: RagService, tmp_path: Path) -> None:
    before = await service.stats()
    with pytest.raises(NotFoundError):  # bad input: a path that does not exist
        await service.ingest_paths([tmp_path / "nope"])
    with pytest.raises(InvalidRequestError):  # bad input: a collection name with a path in it
        await service.ingest_paths([CORPUS / "README.md"], collection="../x")
    assert await service.stats() == before


@pytest.mark.integration
async def test_sigkill_during_ingest_then_rerun_has_no_duplicate_and_no_missing_chunk(
    tmp_path: Path, corpus: Path, embedder: OnnxMiniLMEmbedder
) -> None:
    """Kill ``sovereign ingest`` with SIGKILL after its first committed batch, run it again, and
    compare the store with what the chunker says the corpus holds."""
    (corpus / "library" / "functools.html").unlink()  # 4 files, ~60 chunks: keeps the test short
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOVEREIGN_")}
    env.update({"SOVEREIGN_DATA_DIR": str(data), "SOVEREIGN_RAG__INGEST_BATCH_CHUNKS": "8"})
    proc = subprocess.Popen([sys.executable, "-m", "sovereign", "ingest", str(corpus)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db_path = data / "rag" / "store.sqlite3"
    committed = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db_path.exists():
                try:
                    with sqlite3.connect(db_path, timeout=1) as db:
                        committed = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
                except sqlite3.OperationalError:
                    committed = 0  # schema not created yet
            if committed >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "ingest finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert 1 <= committed < 4

    service = await RagService.open(settings_for(data, ingest_batch_chunks=8), embedder=embedder)
    try:
        report = await service.ingest_paths([corpus])
        assert report.failed == []
        assert report.unchanged >= committed and report.added + report.unchanged == 4
        expected = 0
        for doc in await service.store.list_documents():
            from sovereign.rag.loaders import file_kind, load_bytes

            path = Path(doc.path)
            loaded = load_bytes(path.read_bytes(), path.name, file_kind(path) or "text")
            chunks = service.chunker.chunk(doc.doc_id, loaded.title, loaded.sections)
            stored, _ = await service.store._run(service.store._chunks_sync, doc.doc_id)  # type: ignore[attr-defined]
            assert [(c.chunk_id, c.content_hash) for c in stored] == [(c.chunk_id, c.content_hash) for c in chunks]
            expected += len(chunks)
        db = service.store.db  # type: ignore[attr-defined]
        counts = await service.store._run(lambda: (  # type: ignore[attr-defined]
            db.execute("SELECT COUNT(*), COUNT(DISTINCT chunk_id) FROM chunks").fetchone(),
            db.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]))
        assert counts == ((expected, expected), expected)
        assert len(service.store._ann.indexes["default"]) == expected  # type: ignore[attr-defined]
    finally:
        await service.close()

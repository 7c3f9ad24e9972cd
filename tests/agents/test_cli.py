"""``sovereign agent ask``: the node view renders, degrades without documents, rejects bad input."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sovereign.agents.cli_view import NodeBoard, _print_footer, run_agent_view
from sovereign.cli.main import app
from sovereign.config import load_settings
from sovereign.errors import InvalidRequestError

pytestmark = pytest.mark.anyio

VERDICT_LINE = re.compile(
    r"^validator: (passed|failed|skipped) · (grounded|not grounded) · conversation (\S+)\s*$", re.M)


def verdict_line(output: str) -> tuple[str, bool, str]:
    """``(validator status, grounded, conversation id)`` from the view's one footer verdict line."""
    found = VERDICT_LINE.findall(output)
    assert len(found) == 1, f"expected one verdict line, got {found!r} in:\n{output}"
    status, grounded, conversation = found[0]
    return status, grounded == "grounded", conversation


@pytest.mark.parametrize(("meta", "expected"), [
    ({"grounded": True, "validator": {"status": "passed"}, "conversation_id": "c-1"}, ("passed", True, "c-1")),
    ({"grounded": False, "validator": {"status": "failed"}, "conversation_id": "c-2"}, ("failed", False, "c-2")),
    ({"grounded": False, "validator": {"status": "skipped"}, "conversation_id": "c-3",
      "warnings": ["retrieval failed; degraded to the simple path"]}, ("skipped", False, "c-3")),
])
def test_footer_verdict_line_parses(meta: dict[str, object], expected: tuple[str, bool, str]) -> None:
    out = io.StringIO()
    _print_footer(Console(file=out, width=120), meta)
    assert verdict_line(out.getvalue()) == expected


def test_board_tracks_node_events() -> None:
    board = NodeBoard()
    board.update({"type": "node_start", "node": "router"})
    assert board.rows["router"]["status"] == "running"
    board.update({"type": "node_end", "node": "router", "ms": 0.2, "summary": "retrieve (rules)", "error": None})
    board.update({"type": "node_end", "node": "retrieval", "ms": 1.0, "error": "NotFoundError: x"})
    out = io.StringIO()
    Console(file=out, width=100).print(board.render())
    assert "retrieve (rules)" in out.getvalue() and "NotFoundError" in out.getvalue()


@pytest.mark.slow
async def test_view_answers_and_degrades_without_documents() -> None:
    out = io.StringIO()
    settings = load_settings(engine={"n_ctx": 1024}, agents={"max_tokens": 8, "node_timeout_s": 300})
    meta = await run_agent_view("How do I read a CSV file in Python?", settings, max_tokens=8,
                                console=Console(file=out, width=120))
    text = out.getvalue()
    assert "router" in text
    assert verdict_line(text)[:2] == ("skipped", False)  # the simple path: no validation
    assert meta["degraded"] and meta["warnings"]


async def test_view_rejects_bad_input() -> None:
    with pytest.raises(InvalidRequestError):
        await run_agent_view("  ", load_settings())
    with pytest.raises(InvalidRequestError):
        await run_agent_view("ok?", load_settings(), conversation_id="no spaces allowed")


def test_agent_command_registered() -> None:
    result = CliRunner().invoke(app, ["agent", "ask", "--help"])
    assert result.exit_code == 0 and "--conversation" in result.output


@pytest.mark.integration
@pytest.mark.slow
def test_ask_agent_cli_cites_ingested_docs(tmp_path: Path) -> None:
    """``sovereign ingest`` then ``sovereign ask --agent`` as a user runs them (subprocesses)."""
    env = {**os.environ, "SOVEREIGN_DATA_DIR": str(tmp_path / "data"), "SOVEREIGN_ENGINE__N_CTX": "2048"}
    corpus = Path(__file__).resolve().parent.parent / "fixtures" / "docs"
    ingest = subprocess.run([sys.executable, "-m", "sovereign", "ingest", str(corpus)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stderr
    answer = subprocess.run(
        [sys.executable, "-m", "sovereign", "ask", "--agent", "--max-tokens", "48",
         "What does functools.lru_cache do with its maxsize argument?"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert answer.returncode == 0, answer.stderr
    assert "functools.html" in answer.stdout  # a source pointing at the right page
    status, grounded, conversation = verdict_line(answer.stdout)
    assert status in {"passed", "failed"}  # the validator ran: not degraded, not skipped
    assert grounded == (status == "passed") and re.fullmatch(r"[0-9a-f]{32}", conversation)
    bad = subprocess.run([sys.executable, "-m", "sovereign", "ask", "--agent", "   "], env=env,
                         capture_output=True, text=True, timeout=120)  # bad input: a blank question
    assert bad.returncode == 1 and "error:" in bad.stderr

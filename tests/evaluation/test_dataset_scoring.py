"""Datasets (loading, versioning, bad lines) and the metric formulas, on plain values.

Bad input tried: a line without a question, an empty question, a question that is a number, a
boolean id, an unknown field, a line that is not JSON, a JSON array line, an empty file, a file that
is not UTF-8, a missing file, pages holding a non-string, a malformed bound, an unknown metric.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from sovereign.evaluation import scoring
from sovereign.evaluation.dataset import DatasetError, load_dataset
from sovereign.evaluation.gate import EvalGate, failures, parse_bounds
from sovereign.evaluation.runner import aggregate

SHARED = Path(__file__).resolve().parents[3] / "shared" / "eval"


def write(tmp_path: Path, *rows: object, raw: str | None = None) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text(raw if raw is not None else "\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_a_dataset_loads_with_its_content_hash_as_version(tmp_path: Path) -> None:
    path = write(tmp_path, {"question": "What is X?", "answer": "X is a letter.", "source": "x.html"},
                 {"question": " Why Y? ", "pages": ["a/y.html"], "id": 7, "model": "m", "collection": "c"})
    data = load_dataset(path)
    assert [c.line for c in data.cases] == [1, 2]
    assert data.cases[0].pages == ("x.html",) and data.cases[0].id == "1"
    assert data.cases[1].question == "Why Y?" and data.cases[1].id == "7" and data.cases[1].model == "m"
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and data.version == data.sha256[:12]
    path.write_text(path.read_text().replace("letter", "symbol"))
    assert load_dataset(path).sha256 != data.sha256  # a changed answer is a new version
    assert len(load_dataset(path, limit=1).cases) == 1


@pytest.mark.parametrize(("line", "message"), [
    ('{"answer": "no question"}', "has no question"),
    ('{"question": "   "}', "has no question"),
    ('{"question": 3}', "field 'question' must be str, not int"),
    ('{"question": "q", "id": true}', "field 'id' must be str or int, not bool"),
    ('{"question": "q", "questoin": "typo"}', "unknown field 'questoin'"),
    ('{"question": "q", "pages": [1]}', "'pages' must be a list of non-empty strings"),
    ("not json", "not JSON"),
    ('["question"]', "must be a JSON object"),
])
def test_a_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, raw='{"question": "fine"}\n\n' + line + "\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert caught.value.message.startswith(f"{path}:3: ") and message in caught.value.message


def test_unusable_files_are_clear_errors(tmp_path: Path) -> None:
    for raw, message in (("\n\n", "has no questions"), (None, "cannot read")):
        path = write(tmp_path, raw=raw) if raw is not None else tmp_path / "missing.jsonl"
        with pytest.raises(DatasetError, match=message):
            load_dataset(path)
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_dataset(binary)


def test_the_shared_faq_sets_load() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not here (the developers' and CI's shared/ lies beside the checkout)")
    paths = sorted(SHARED.glob("*.jsonl"))
    assert len(paths) >= 4, f"no question sets in {SHARED}"
    for path in paths:
        data = load_dataset(path)
        assert all(c.answer and c.pages for c in data.cases), path


def test_relevance_by_answer_key_or_by_page() -> None:
    key = scoring.answer_key("You should put your personal name, generally a form using a given name.")
    assert key == "you should put your personal name generally a"
    assert scoring.relevant("Q? You SHOULD put your personal-name, generally a form...", "x", key=key, pages=())
    assert not scoring.relevant("you should put your name generally a", "x", key=key, pages=())  # a word missing
    assert not scoring.relevant("ayou should put your personal name generally a", "x", key=key, pages=())
    assert scoring.relevant("anything", "/usr/share/doc/git/gitfaq.html", key=None, pages=("gitfaq.html",))
    assert not scoring.relevant("anything", "/doc/notgitfaq.html", key=None, pages=("gitfaq.html",))


def test_rank_metrics_match_hand_computed_values() -> None:
    relevance = [False, False, True, False, True]
    rank = scoring.first_rank(relevance)
    assert rank == 3 and scoring.reciprocal_rank(rank) == pytest.approx(1 / 3)
    assert (scoring.hit_at(rank, 1), scoring.hit_at(rank, 5)) == (0.0, 1.0)
    dcg = 1 / math.log2(4) + 1 / math.log2(6)
    assert scoring.ndcg_at(relevance, 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    assert scoring.ndcg_at([True, False], 10) == 1.0 and scoring.ndcg_at([False] * 3, 10) == 0.0
    assert scoring.first_rank([False]) is None and scoring.reciprocal_rank(None) == 0.0


def test_answer_metrics_follow_squad() -> None:
    assert scoring.exact_match("The Eiffel tower!", "eiffel tower") == 1.0
    assert scoring.token_f1("the cat sat on the mat", "a cat on a mat") == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    assert scoring.token_f1("", "x") == 0.0
    rows = [{"cited": [1], "supported": True}, {"cited": [2], "supported": False}, {"cited": [], "supported": True}]
    assert scoring.citation_counts(rows) == (2, 1)
    assert scoring.percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0 and scoring.percentile([], 0.5) is None


def test_aggregate_and_bounds() -> None:
    rows = [{"hit_at_1": 1.0, "hit_at_5": 1.0, "mrr": 1.0, "search_ms": 5.0, "grounded": True, "cited_sentences": 2,
             "supported_citations": 2, "latency_s": 1.0, "prompt_tokens": 10, "completion_tokens": 4},
            {"hit_at_1": 0.0, "hit_at_5": 1.0, "mrr": 0.5, "search_ms": 7.0, "grounded": False, "cited_sentences": 2,
             "supported_citations": 0, "latency_s": 3.0, "prompt_tokens": 20, "completion_tokens": 6},
            {"search_ms": 6.0}]  # a question without a relevance rule: not in the retrieval means
    metrics = aggregate(rows)
    assert metrics["hit_at_1"] == 0.5 and metrics["mrr"] == 0.75 and metrics["grounded_rate"] == 0.5
    assert metrics["citation_precision"] == 0.5 and metrics["exact_match"] is None and metrics["cases"] == 3
    assert metrics["prompt_tokens_mean"] == 15 and metrics["search_p50_ms"] == 6.0
    assert failures(metrics, {"hit_at_1": 0.5}, {"answer_p50_s": 5}) == []
    assert failures(metrics, {"hit_at_1": 0.6, "exact_match": 0.1}) == ["hit_at_1 0.5 < 0.6", "exact_match n/a < 0.1"]
    assert parse_bounds(["hit_at_5=0.8", " mrr = 0.5 "]) == {"hit_at_5": 0.8, "mrr": 0.5}
    for bad, message in (("hit_at_5>0.8", "is not METRIC=NUMBER"), ("recall=0.3", "Unknown metric 'recall'")):
        with pytest.raises(Exception, match=message):
            parse_bounds([bad])
    with pytest.raises(ValueError, match="Unknown metric"):
        EvalGate.model_validate({"dataset": "x.jsonl", "minimum": {"accuracy": 1}})

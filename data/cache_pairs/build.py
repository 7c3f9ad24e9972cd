"""Build ``pairs.jsonl`` from ``source_pairs.py``, checking every original against its FAQ page.

Run: ``.venv/bin/python data/cache_pairs/build.py`` (needs Debian ``python3.11-doc``).
Each line: ``{"id", "a", "b", "label": "hit"|"miss", "kind", "source", "verbatim"}``; ``a`` is the
cached question, ``b`` the incoming one. ``verbatim`` says whether ``a`` is a heading of ``source``.
"""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAQ = Path("/usr/share/doc/python3.11/html/faq")
sys.path.insert(0, str(HERE))

from source_pairs import EXTRA, ROWS  # noqa: E402


def _norm(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip()


def headings(page: str) -> set[str]:
    raw = (FAQ / page).read_text(encoding="utf-8")
    found = re.findall(r"<h[234][^>]*>(.*?)<a class=\"headerlink\"", raw, flags=re.S)
    return {_norm(html.unescape(re.sub(r"<[^>]+>", "", h))) for h in found}


def main() -> None:
    out = []
    cache: dict[str, set[str]] = {}
    for group, rows in (("faq", ROWS), ("faq-derived", EXTRA)):
        for page, original, paraphrases, near in rows:
            known = cache.setdefault(page, headings(page))
            verbatim = _norm(original) in known
            if group == "faq" and not verbatim:
                raise SystemExit(f"not a heading of {page}: {original!r}")
            source = f"python3.11-doc:/usr/share/doc/python3.11/html/faq/{page}"
            for b in paraphrases:
                out.append({"a": original, "b": b, "label": "hit", "kind": "paraphrase"})
                out[-1].update(source=source, verbatim=verbatim)
            for b, kind in near:
                out.append(
                    {"a": original, "b": b, "label": "miss", "kind": kind, "source": source, "verbatim": verbatim}
                )
    with (HERE / "pairs.jsonl").open("w", encoding="utf-8") as fh:
        for i, row in enumerate(out):
            fh.write(json.dumps({"id": i, **row}, ensure_ascii=False) + "\n")
    hits = sum(r["label"] == "hit" for r in out)
    print(json.dumps({"pairs": len(out), "hit": hits, "miss": len(out) - hits}))


if __name__ == "__main__":
    main()

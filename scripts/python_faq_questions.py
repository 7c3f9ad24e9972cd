"""Build deploy/dvc/data/questions.jsonl: the Python 3.11 FAQ as an evaluation set.

Run: ``.venv/bin/python scripts/python_faq_questions.py`` (after ``apt-get install python3.11-doc``).
Each FAQ section whose heading is a question becomes one line in the shape of ``../shared/eval``:
``corpus``, ``package``, ``source`` (the FAQ page), ``question`` (the heading), ``answer`` (the
section's first paragraph, when it has at least 8 words).
"""

from __future__ import annotations

import json
from pathlib import Path

from selectolax.lexbor import LexborHTMLParser

DOCS = Path("/usr/share/doc/python3.11/html")
OUT = Path(__file__).resolve().parent.parent / "deploy" / "dvc" / "data" / "questions.jsonl"


def main() -> None:
    rows = []
    for page in sorted((DOCS / "faq").glob("*.html")):
        for section in LexborHTMLParser(page.read_text()).css("section"):
            heading, paragraph = section.css_first("h3"), section.css_first("p")
            if heading is None or paragraph is None or len(section.css("section")) > 1:  # innermost only
                continue
            question = heading.text().replace("¶", "").strip()
            answer = " ".join(paragraph.text().split())
            if question.endswith("?") and len(answer.split()) >= 8:
                rows.append({"corpus": "python3.11-faq", "package": "python3.11-doc", "source": f"faq/{page.name}",
                             "question": question, "answer": answer})
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} questions -> {OUT}")


if __name__ == "__main__":
    main()

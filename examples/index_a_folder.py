"""Index a folder into a knowledge base, then search it, pack a context and ask a question.

    .venv/bin/python examples/index_a_folder.py docs/ "How is the knowledge base laid out on disk?"
"""

from __future__ import annotations

import sys
from pathlib import Path

from hybridctx import Pipeline


def main(folder: str, question: str) -> None:
    kb = Path(".hybridctx-example-kb")
    with Pipeline.open(kb) as pipe:
        report = pipe.add(folder)  # re-running skips unchanged files
        print(f"added {report.documents_added}, unchanged {report.documents_unchanged}, "
              f"failed {len(report.failed)}; {pipe.stats()['chunks']} chunks in {kb}/")
        for hit in pipe.retrieve(question, k=5):
            print(f"  {hit.rank}. {hit.score:.3f} {hit.chunk.location}")
        context = pipe.pack(question, budget_tokens=2000)
        print(f"packed {len(context.chunks)} passages into {context.token_count} of {context.budget_tokens} tokens")
        answer = pipe.generate(context)
        print("answer:", answer.text)
        for citation in answer.citations:
            print("  cites", citation.location)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

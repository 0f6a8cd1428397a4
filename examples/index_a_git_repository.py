"""Index the tracked files of a git repository at a revision (commit id, author and date land
in each chunk's metadata), then search it.

    .venv/bin/python examples/index_a_git_repository.py . HEAD "How does a commit stay durable?"
"""

from __future__ import annotations

import sys

from hybridctx import Pipeline
from hybridctx_connectors.sources import GitSource


def main(repository: str, revision: str, question: str) -> None:
    source = GitSource(repository, revision=revision, exclude=["bench/**"])
    with Pipeline.open(".hybridctx-git-kb") as pipe:
        report = pipe.add(source)
        print(f"{source.commit[:12]} by {source.author}: added {report.documents_added}, "
              f"unchanged {report.documents_unchanged}, failed {len(report.failed)}")
        for hit in pipe.retrieve(question, k=5):
            meta = hit.chunk.metadata
            print(f"  {hit.rank}. {meta['path']}:{hit.chunk.start_line} @ {meta['commit'][:12]}")


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""End to end across processes: index a folder, reopen the KB in a new Python process,
retrieve a known passage, pack within budget and answer with a citation to a real chunk."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import json, sys
    from hybridctx import Pipeline
    pipe = Pipeline.open(sys.argv[1], show_progress=False)
    question = "How do I configure retries?"
    hits = pipe.retrieve(question, k=10)
    ctx = pipe.pack(question, budget_tokens=1200)
    answer = pipe.ask(question, budget_tokens=1200, max_new_tokens=48)
    print(json.dumps({
        "stats": pipe.stats(),
        "top": hits[0].chunk.metadata["name"],
        "context_chunk_ids": [c.id for c in ctx.chunks],
        "token_count": ctx.token_count,
        "answer": answer.text,
        "citations": [c.model_dump() for c in answer.citations],
        "answer_chunk_ids": [c.id for c in answer.context.chunks],
        "prompt_tokens": answer.usage.prompt_tokens,
        "answer_context_tokens": answer.context.token_count,
    }))
    """
)


def test_index_then_reopen_in_a_new_process_and_answer(open_pipe, corpus, tmp_path, monkeypatch):
    # Added by a relative path, so the prompt's sources ("corpus/retries.md") do not carry the
    # test's temporary folder: a 270M model's greedy answer flipped with its number.
    monkeypatch.chdir(tmp_path)
    pipe = open_pipe()
    report = pipe.add([corpus.name])
    pipe.close()
    assert report.documents_added == 4

    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "kb")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["stats"] == {"documents": 4, "chunks": report.chunks_added}
    assert result["top"] == "retries.md"
    assert result["token_count"] <= 1200
    assert result["prompt_tokens"] == result["answer_context_tokens"] <= 1200  # the model read what was packed
    assert result["answer"].strip()
    assert result["citations"], f"no citation for answer {result['answer']!r}"
    for citation in result["citations"]:
        assert set(citation["chunk_ids"]) <= set(result["answer_chunk_ids"])
    assert any("retries.md" in c["location"] for c in result["citations"]), result

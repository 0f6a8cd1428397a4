"""The LangChain retriever passes LangChain's own standard retriever tests (langchain-tests),
and the packed-context runnable composes into a chain."""

from __future__ import annotations

import tempfile
from functools import cache

import pytest
from langchain_core.runnables import RunnablePassthrough
from langchain_tests.integration_tests import RetrieversIntegrationTests

from hybridctx import Document, Pipeline
from hybridctx_connectors.langchain import HybridCtxRetriever, packed_context

pytestmark = pytest.mark.slow

NOTES = [
    ("relay", "The Zephyr relay restarts after 45 seconds of silence.", None),
    ("fuse", "Error ZR-118 on the Zephyr relay means its fuse blew; replace the fuse.", None),
    ("cabinet", "The Zephyr relay cabinet is locked; the key hangs in the control room.", None),
    ("garden", "Tomatoes need six hours of sunlight a day.", None),
    ("plan", "The Zephyr relay will be replaced by Project Nightjar in June.", {"alice"}),
]


@cache
def knowledge_base() -> Pipeline:
    """One real KB for the standard tests (they build retrievers from plain parameters)."""
    pipe = Pipeline.open(tempfile.mkdtemp(prefix="hybridctx-lc-") + "/kb", show_progress=False)
    pipe.add([Document(id=i, text=t, acl=acl, metadata={"source": f"notes/{i}.md"}) for i, t, acl in NOTES])
    return pipe


@pytest.fixture(scope="module", autouse=True)
def _close_knowledge_base():
    yield
    knowledge_base().close()


class TestHybridCtxRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[HybridCtxRetriever]:
        return HybridCtxRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"pipeline": knowledge_base(), "k": 3}

    @property
    def retriever_query_example(self) -> str:
        return "Zephyr relay"


def test_documents_carry_source_offsets_and_scores_and_respect_the_principal():
    docs = HybridCtxRetriever(pipeline=knowledge_base(), k=5).invoke("What does error ZR-118 mean?")
    top = docs[0]
    assert top.metadata["doc_id"] == "fuse" and top.metadata["source"] == "notes/fuse.md"
    assert top.page_content == NOTES[1][1][top.metadata["start"] : top.metadata["end"]]
    assert top.metadata["rank"] == 1 and top.id == "fuse#0"
    assert "plan" not in {d.metadata["doc_id"] for d in docs}
    exact = HybridCtxRetriever(pipeline=knowledge_base(), k=5).invoke(NOTES[4][1])  # its exact text as the query
    assert "plan" not in {d.metadata["doc_id"] for d in exact}
    alice = HybridCtxRetriever(pipeline=knowledge_base(), k=5, principal="alice").invoke("Project Nightjar")
    assert alice[0].metadata["doc_id"] == "plan"
    retriever = HybridCtxRetriever(pipeline=knowledge_base(), k=5)
    filtered = retriever.invoke("relay", filters={"source": "notes/cabinet.md"})
    assert [d.metadata["doc_id"] for d in filtered] == ["cabinet"]


def test_the_packed_context_runnable_feeds_a_chain():
    chain = {"context": packed_context(knowledge_base(), budget_tokens=600), "question": RunnablePassthrough()} \
        | RunnablePassthrough.assign(prompt=lambda x: f"{x['context']}Question: {x['question']}")
    out = chain.invoke("Why does the relay restart?")
    assert '<passage id="1" source="notes/' in out["context"] and "45 seconds" in out["context"]
    assert "Nightjar" not in out["context"]  # the runnable reads as its principal (none here)
    assert out["prompt"].endswith("Question: Why does the relay restart?")


async def test_the_async_methods_use_the_pipelines_async_twins_and_answer_as_the_sync_ones():
    from unittest.mock import patch

    retriever = HybridCtxRetriever(pipeline=knowledge_base(), k=5, principal="alice")
    runnable = packed_context(knowledge_base(), budget_tokens=600)
    awaited: list[str] = []

    def counted(name):
        real = getattr(Pipeline, name)

        async def twin(self, *args, **kwargs):
            awaited.append(name)
            return await real(self, *args, **kwargs)
        return twin

    with patch.object(Pipeline, "aretrieve", counted("aretrieve")), patch.object(Pipeline, "apack", counted("apack")):
        docs = await retriever.ainvoke("Project Nightjar")
        context = await runnable.ainvoke("Why does the relay restart?")
    assert awaited == ["aretrieve", "apack"]  # not LangChain's default (the sync method in an executor)
    assert [(d.id, d.metadata["score"]) for d in docs] == [
        (d.id, d.metadata["score"]) for d in retriever.invoke("Project Nightjar")]
    assert docs[0].metadata["doc_id"] == "plan"
    assert context == runnable.invoke("Why does the relay restart?")

"""A LangChain chain over a knowledge base: the hybridctx retriever for ranked documents, and
the packed-context runnable feeding a prompt template (any chat model can follow it).

    .venv/bin/hybridctx index docs/ --kb .hybridctx-example-kb
    .venv/bin/python examples/langchain_chain.py .hybridctx-example-kb "How are commits made durable?"
"""

from __future__ import annotations

import sys

from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from hybridctx import Pipeline
from hybridctx_connectors.langchain import HybridCtxRetriever, packed_context

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "Answer from the passages below only, citing their ids.\n\n{context}"),
    ("human", "{question}"),
])


def main(kb: str, question: str) -> None:
    with Pipeline.open(kb, show_progress=False) as pipe:
        for doc in HybridCtxRetriever(pipeline=pipe, k=3).invoke(question):
            meta = doc.metadata
            print(f"{meta['rank']}. {meta['source']}:{meta['start_line']} ({meta['score']:.3f})")
        chain = {"context": packed_context(pipe, budget_tokens=1500), "question": RunnablePassthrough()} | PROMPT
        messages = chain.invoke(question).to_messages()
        print(f"\n{messages[0].content[:1200]}\n...\n{messages[1].content}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""Trying to get a forbidden document out through every path that returns text: a direct query
for its exact text, an identifier lookup, the whole-corpus and retrieved packing routes,
sessions, a near-duplicate of an allowed document, answers and their citations, and the CLI.
Alice may read it; bob and anonymous readers must get nothing of it. (MCP and LangChain
adapters get the same suite when they exist.)"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hybridctx import Document, Pipeline
from hybridctx.cli import app

pytestmark = pytest.mark.slow

SECRET = "The acquisition target is Halvorsen Maritime, code KX-7731, closing on 3 March."
PUBLIC_LAUNCH = "The launch window opens on 12 May at the northern pad, weather permitting."
SECRET_LAUNCH = "The launch window opens on 12 May at the hidden southern pad, weather permitting."
SECRET_WORDS = ("Halvorsen", "KX-7731", "hidden southern")
OUTSIDERS = (None, "bob")


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder, backend):
    root = tmp_path_factory.mktemp("acl") / "kb"
    public = [Document(id=f"memo-{i}", text=f"Memo {i}: the canteen serves soup number {i} on Tuesdays.")
              for i in range(12)]
    with Pipeline.open(root, embedder=embedder, backend=backend, show_progress=False) as pipe:
        pipe.add([*public, Document(id="launch", text=PUBLIC_LAUNCH),
                  Document(id="deal", text=SECRET, acl={"alice"}),
                  Document(id="launch-secret", text=SECRET_LAUNCH, acl={"alice", "carol"})])
    return root


@pytest.fixture
def pipe(kb, embedder, backend):
    with Pipeline.open(kb, embedder=embedder, backend=backend, show_progress=False) as opened:
        yield opened


def leaked(text: str) -> list[str]:
    return [word for word in SECRET_WORDS if word in text]


def documents_of(ctx) -> str:
    """The prompt without the question (which may name the secret itself)."""
    return ctx.prompt.replace(ctx.query, "")


@pytest.mark.parametrize("retrieval", ["hybrid", "dense", "lexical"])
def test_queries_for_its_exact_text_or_identifier_find_nothing(kb, embedder, backend, retrieval):
    with Pipeline.open(kb, embedder=embedder, backend=backend, retrieval=retrieval, show_progress=False) as pipe:
        for principal in OUTSIDERS:
            for query in (SECRET, "KX-7731", SECRET_LAUNCH):
                hits = pipe.retrieve(query, k=100, principal=principal)
                assert not leaked(" ".join(h.chunk.text for h in hits))
        assert pipe.retrieve("KX-7731", k=1, principal="alice")[0].chunk.doc_id == "deal"


def test_both_packing_routes_and_sessions_leave_it_out(pipe):
    for principal in OUTSIDERS:
        whole = pipe.pack("What is the acquisition target?", principal=principal)
        assert whole.recall == "whole_corpus" and not leaked(documents_of(whole))
        retrieved = pipe.pack("What is the acquisition target and code KX-7731?", budget_tokens=400,
                              max_new_tokens=50, principal=principal)
        assert retrieved.recall == "retrieved" and not leaked(documents_of(retrieved))
        session = pipe.session(principal=principal)
        for question in ("Where is the launch pad?", "Which company is being acquired?", "What is KX-7731?"):
            assert not leaked(documents_of(session.pack(question, budget_tokens=400, max_new_tokens=50)))
    alice = pipe.pack("What is the acquisition target?", principal="alice")
    assert leaked(alice.prompt)  # the control: the text is there for a reader allowed to see it


def test_a_near_duplicate_of_an_allowed_document_does_not_leak_its_difference(pipe):
    for principal in OUTSIDERS:
        ctx = pipe.pack("When and where does the launch window open?", budget_tokens=400, max_new_tokens=50,
                        principal=principal)
        assert "northern pad" in ctx.prompt and not leaked(documents_of(ctx))
    carol = pipe.pack("When and where does the launch window open?", principal="carol")
    assert "hidden southern" in carol.prompt


def test_answers_and_citations_come_only_from_what_the_reader_may_see(pipe):
    allowed = {f"memo-{i}" for i in range(12)} | {"launch"}
    for principal in OUTSIDERS:
        answer = pipe.ask("What is the code of the acquisition?", budget_tokens=600, max_new_tokens=40,
                          principal=principal)
        assert not leaked(documents_of(answer.context)) and not leaked(answer.text)
        assert {c.doc_id for c in answer.citations} <= allowed


def test_the_cli_leaves_it_out(kb):
    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})
    for command in (["search", "KX-7731", "-k", "20"], ["pack", "What is the acquisition target?"]):
        out = runner.invoke(app, [*command, "--kb", str(kb), "--principal", "bob"])
        assert out.exit_code == 0, out.output
        assert not leaked(out.output)
    alice = runner.invoke(app, ["search", "KX-7731", "-k", "3", "--kb", str(kb), "--principal", "alice"])
    assert "deal" in alice.output or "KX-7731" in alice.output


def test_a_scopes_search_equals_the_unfiltered_ranking_with_what_it_may_not_see_left_out(tmp_path, embedder, backend):
    """Filters and ACLs applied inside the search (visibility bitmaps, FAISS id selector,
    lexical hits checked) give the same hits, in the same order, as ranking everything and
    dropping what the scope may not see: nothing visible is lost, nothing hidden comes back."""
    documents = [
        Document(
            id=f"note-{i}",
            text=f"Note {i}: shipment {i * 7 % 97} of valve parts left dock {i % 5}.",
            metadata={"dock": str(i % 5)},
            acl=None if i % 3 == 0 else {("red", "blue")[i % 2]},
        )
        for i in range(240)
    ]
    readable = {d.id: d for d in documents}

    def sees(scope: dict, doc_id: str) -> bool:
        document = readable[doc_id]
        if "filters" in scope and document.metadata["dock"] != scope["filters"]["dock"]:
            return False
        return document.acl is None or scope.get("principal") in document.acl

    with Pipeline.open(tmp_path / "kb", embedder=embedder, backend=backend, show_progress=False) as pipe:
        pipe.add(documents)
    scopes = [dict(principal="red"), dict(filters={"dock": "2"}), dict(principal="blue", filters={"dock": "1"}), {}]
    query = "valve shipment dock"
    for retrieval in ("dense", "lexical"):
        with Pipeline.open(
            tmp_path / "kb", embedder=embedder, backend=backend, show_progress=False, retrieval=retrieval, hops=0
        ) as reader:
            kb = reader.kb
            _, ids = (
                kb.index.search(reader.embedder.embed([query])[0], 1_000)
                if retrieval == "dense"
                else kb.lexical.search(query, 1_000)
            )  # every chunk ranked, no scope
            chunks = kb.store.chunks(ids.tolist())
            everything = [chunks[i].doc_id for i in ids.tolist()]
            for scope in scopes:
                found = [h.chunk.doc_id for h in reader.retrieve(query, k=25, **scope)]
                assert found == [d for d in everything if sees(scope, d)][:25], (retrieval, scope)
                assert len(found) == min(25, sum(sees(scope, d) for d in readable))

"""Trying to get a forbidden document out through every path that returns text: a direct query
for its exact text, an identifier lookup, the whole-corpus and retrieved packing routes,
sessions, a near-duplicate of an allowed document, answers and their citations, and the CLI.
Alice may read it; bob and anonymous readers must get nothing of it. (MCP and LangChain
adapters get the same suite when they exist.)"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import hybridctx.index.kb as kb_module
from hybridctx import Document, Pipeline
from hybridctx.cli import app
from hybridctx.schema import Scope

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


@pytest.fixture(autouse=True, params=["listed", "checked"])
def visibility(request, monkeypatch):
    """Every test both ways: the ids a scope sees listed for the search (a scope that sees
    little), and the search's best results checked instead (one that sees much)."""
    if request.param == "checked":
        monkeypatch.setattr(kb_module, "PREFILTER_CHUNKS", -1)
    return request.param


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


def test_checking_results_finds_what_listing_the_visible_ids_finds(tmp_path, embedder, backend, monkeypatch):
    """A scope that sees much has its search's best results checked, fetching more until k
    pass: the same hits, in the same order, as searching among its listed ids."""
    documents = [Document(id=f"note-{i}", text=f"Note {i}: shipment {i * 7 % 97} of valve parts left dock {i % 5}.",
                          metadata={"dock": str(i % 5)}, acl=None if i % 3 == 0 else {("red", "blue")[i % 2]})
                 for i in range(240)]
    with Pipeline.open(tmp_path / "kb", embedder=embedder, backend=backend, show_progress=False) as pipe:
        pipe.add(documents)
        assert pipe.kb.store.visible_share(Scope(principal="red")) == pytest.approx(2 / 3, abs=0.05)
        assert pipe.kb.store.visible_share(Scope()) == pytest.approx(1 / 3, abs=0.05)  # ACLs exist: a scope
        scopes = [dict(principal="red"), dict(filters={"dock": "2"}), dict(principal="blue", filters={"dock": "1"}), {}]
        for retrieval in ("dense", "lexical", "hybrid"):
            found = {}
            for listed in (True, False):
                monkeypatch.setattr(kb_module, "PREFILTER_CHUNKS", 10**9 if listed else -1)
                with Pipeline.open(tmp_path / "kb", embedder=embedder, backend=backend, show_progress=False,
                                   retrieval=retrieval, hops=0) as reader:
                    found[listed] = [[h.chunk.id for h in reader.retrieve("valve shipment dock", k=25, **scope)]
                                     for scope in scopes]
            assert found[True] == found[False], retrieval
            assert [len(ids) for ids in found[True]] == [25, 16, 25, 25]  # dock 2 without a principal: 16 public

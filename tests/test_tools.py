"""OpenAI-style tool definitions and calls: schemas from pydantic, JSON in and out, errors
that name the argument, and a principal no argument can change."""

from __future__ import annotations

import json

import pytest

from hybridctx import Document
from hybridctx_connectors.tools import Toolbox

pytestmark = pytest.mark.slow


@pytest.fixture
def toolbox(open_pipe):
    pipe = open_pipe()
    pipe.add([Document(id="relay", text="The Zephyr relay restarts after 45 seconds of silence.",
                       metadata={"team": "ops"}),
              Document(id="plan", text="Project Nightjar ships on 4 June.", acl={"alice"})])
    return Toolbox(pipe, principal="bob", allow_add=True)


def test_definitions_are_openai_function_schemas(toolbox):
    definitions = {d["function"]["name"]: d for d in toolbox.definitions()}
    assert set(definitions) == {"search", "get_context", "ask", "add_documents"}
    search = definitions["search"]
    assert search["type"] == "function"
    parameters = search["function"]["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["query"]
    assert parameters["properties"]["k"]["maximum"] == 2000 and "principal" not in parameters["properties"]
    assert Toolbox(toolbox.pipeline).definitions()[-1]["function"]["name"] == "ask"  # adding is opt-in


def test_a_call_as_openai_returns_it_gives_json_results(toolbox):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "search", "arguments": json.dumps({"query": "relay restart", "k": 5})}}
    result = json.loads(toolbox.call(call))
    assert result["passages"][0]["doc_id"] == "relay" and "45 seconds" in result["passages"][0]["text"]
    assert [p["rank"] for p in result["passages"]] == list(range(1, len(result["passages"]) + 1))
    assert not any("score" in p for p in result["passages"])  # scores carry corpus-wide BM25 statistics
    context = json.loads(toolbox.call({"name": "get_context", "arguments": {"query": "When does the relay restart?",
                                                                           "budget_tokens": 512}}))
    assert '<passage id="1"' in context["context"] and "45 seconds" in context["context"]
    assert context["token_count"] <= 512 and context["passages"][0]["chunk_ids"] == ["relay#0"]


def test_the_principal_is_the_toolbox_s_and_no_argument_changes_it(toolbox):
    found = json.loads(toolbox.call({"name": "search", "arguments": {"query": "Nightjar ships", "k": 10}}))
    assert all(p["doc_id"] != "plan" for p in found["passages"])
    smuggled = json.loads(toolbox.call({"name": "search", "arguments": {"query": "Nightjar", "principal": "alice"}}))
    assert "principal" in smuggled["error"] and "Extra inputs" in smuggled["error"]
    alice = Toolbox(toolbox.pipeline, principal="alice")
    assert json.loads(alice.call({"name": "search", "arguments": {"query": "Nightjar ships", "k": 1}}))[
        "passages"][0]["doc_id"] == "plan"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"name": "search", "arguments": {"k": 5}}, "query: Field required"),
        ({"name": "search", "arguments": {"query": "x", "k": 0}}, "k: Input should be greater than or equal to 1"),
        ({"name": "search", "arguments": "{not json"}, "not valid JSON"),
        ({"name": "search", "arguments": {"query": "   "}}, "query is empty"),
        ({"name": "drop_tables", "arguments": {}}, "unknown tool 'drop_tables'"),
    ],
)
def test_bad_calls_come_back_as_errors_naming_the_argument(toolbox, call, message):
    assert message in json.loads(toolbox.call(call))["error"]


def test_added_documents_are_readable_by_the_adding_principal_only(toolbox):
    added = json.loads(toolbox.call({"name": "add_documents", "arguments": {
        "documents": [{"id": "bob-note", "text": "Bob's bicycle is parked at gate 12."}]}}))
    assert added["added"] == 1 and added["ids"] == ["agent:bob:bob-note"]
    assert toolbox.pipeline.retrieve("bicycle gate", k=1, principal="bob")[0].chunk.doc_id == "agent:bob:bob-note"
    assert all(h.chunk.doc_id != "agent:bob:bob-note"
               for h in toolbox.pipeline.retrieve("bicycle gate", k=5, principal="carol"))


def test_an_add_cannot_replace_or_reveal_another_principals_document(toolbox):
    def add(doc_id: str) -> dict:
        return json.loads(toolbox.call({"name": "add_documents", "arguments": {
            "documents": [{"id": doc_id, "text": "Bob was here: the plan is cancelled."}]}}))

    taken, fresh = add("plan"), add("never-used")  # "plan" is alice's
    assert taken["added"] == fresh["added"] == 1 and not taken["failed"]  # the same answer: no existence oracle
    hits = toolbox.pipeline.retrieve("Nightjar ships", k=5, principal="alice")
    (plan,) = [h for h in hits if h.chunk.doc_id == "plan"]
    assert "4 June" in plan.chunk.text  # alice's text and ACL are untouched
    assert toolbox.pipeline.retrieve("Nightjar ships", k=5, principal="bob")[0].chunk.doc_id != "plan"
    again = add("plan")  # bob's own "plan" is his to replace (here: unchanged)
    assert again["unchanged"] == 1

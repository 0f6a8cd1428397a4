"""The MCP server, driven by a real client of the same SDK over stdio and over streamable HTTP:
tools with JSON schemas, documents as resources, the server's principal fixed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import anyio
import pytest

from hybridctx import Document, Pipeline
from hybridctx_connectors.mcp import reassemble

pytestmark = pytest.mark.slow

RELAY = "The Zephyr relay restarts after 45 seconds of silence. Error code ZR-118 means the fuse blew."
SECRET = "Project Nightjar ships on 4 June to the Oslo office."
TODO_ID, TODO = "/srv/bob/../bob/todo list?.md", "Bob must renew the parking permit by Friday."  # path-like


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("mcp") / "kb"
    with Pipeline.open(root, embedder=embedder, show_progress=False) as pipe:
        pipe.add([Document(id="relay", text=RELAY, metadata={"source": "ops/relay.md"}),
                  Document(id="nightjar", text=SECRET, acl={"alice"}),
                  Document(id=TODO_ID, text=TODO, acl={"bob"})])
    return root


def server_command(kb, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hybridctx", "mcp", "--kb", str(kb), "--principal", "bob", *extra]


def server_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


async def exercise(session) -> dict:  # type: ignore[no-untyped-def]
    """What a client sees of the server: tools, a search, a context, resources, a smuggled principal."""
    await session.initialize()
    tools = {t.name: t for t in (await session.list_tools()).tools}
    found = await session.call_tool("search", {"query": "ZR-118", "k": 5})
    context = await session.call_tool("get_context", {"query": "Why does the relay restart?", "budget_tokens": 600})
    secret = await session.call_tool("search", {"query": "Nightjar ships", "k": 5})
    secret_context = await session.call_tool("get_context", {"query": SECRET, "budget_tokens": 600})
    smuggled = await session.call_tool("search", {"query": "Nightjar", "principal": "alice"})
    listing = await session.read_resource("hybridctx://documents")
    document = await session.read_resource("hybridctx://documents/relay")
    listed = {d["id"]: d["uri"] for d in json.loads(listing.contents[0].text)}
    todo = await session.read_resource(listed[TODO_ID])  # the URI as listed reads back, whatever the id
    return {
        "tools": tools,
        "found": json.loads(found.content[0].text),
        "context": json.loads(context.content[0].text),
        "secret": json.loads(secret.content[0].text),
        "secret_context": json.loads(secret_context.content[0].text),
        "smuggled": smuggled,
        "listing": json.loads(listing.contents[0].text),
        "document": document.contents[0].text,
        "todo": todo.contents[0].text,
    }


def check(seen: dict) -> None:
    assert set(seen["tools"]) == {"search", "get_context", "ask"}  # add_documents is off by default
    schema = seen["tools"]["search"].input_schema
    assert schema["required"] == ["query"] and "principal" not in schema["properties"]
    assert seen["found"]["passages"][0]["doc_id"] == "relay"
    assert "45 seconds" in seen["context"]["context"] and seen["context"]["token_count"] <= 600
    assert all(p["doc_id"] != "nightjar" for p in seen["secret"]["passages"])
    assert "Oslo" not in seen["secret_context"]["context"]  # its exact text as the query finds nothing of it
    smuggled = seen["smuggled"]  # the SDK drops the unknown argument; the principal stays bob
    assert smuggled.is_error or "nightjar" not in smuggled.content[0].text
    assert sorted(d["id"] for d in seen["listing"]) == sorted(["relay", TODO_ID])
    assert seen["document"] == RELAY and seen["todo"] == TODO


def test_a_client_over_stdio(kb):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.shared.exceptions import MCPError

    async def main() -> dict:
        command = server_command(kb)
        params = StdioServerParameters(command=command[0], args=command[1:], env=server_env())
        with open(os.devnull, "w") as quiet:
            async with stdio_client(params, errlog=quiet) as (read, write), ClientSession(read, write) as session:
                seen = await exercise(session)
                try:
                    await session.read_resource("hybridctx://documents/nightjar")
                    seen["forbidden_read"] = "read"
                except MCPError as exc:  # absent and forbidden look alike
                    seen["forbidden_read"] = str(exc)
                return seen

    seen = anyio.run(main)
    check(seen)
    assert "no document 'nightjar'" in seen["forbidden_read"]


def test_a_client_over_streamable_http(kb, tmp_path):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(server_command(kb, "--http", f"127.0.0.1:{port}"), env=server_env(),
                              stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the server loads the embedding model first
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)

        async def main() -> dict:
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write, *_), \
                    ClientSession(read, write) as session:
                return await exercise(session)

        check(anyio.run(main))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_reassembled_documents_show_overlaps_once():
    from hybridctx.schema import Chunk

    text = "Alpha beta gamma.\n\nDelta epsilon zeta eta."
    def chunk(start, end, line):  # noqa: E306
        return Chunk(id=f"d#{start}", doc_id="d", text=text[start:end], start=start, end=end,
                     start_line=line, end_line=text.count("\n", 0, end - 1) + 1, token_count=1)
    pieces = [chunk(0, 17, 1), chunk(6, 17, 1), chunk(19, 33, 3), chunk(26, 42, 3)]
    assert reassemble(pieces) == text

"""An agent's side of the MCP server: start `hybridctx mcp` over stdio, list its tools, and
fetch a packed, cited context for a question (what an agent pastes into its own prompt).

    .venv/bin/hybridctx index docs/ --kb .hybridctx-example-kb
    .venv/bin/python examples/agent_over_mcp.py .hybridctx-example-kb "How are commits made durable?"
"""

from __future__ import annotations

import json
import os
import sys

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


async def main(kb: str, question: str) -> None:
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "hybridctx", "mcp", "--kb", kb],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for tool in (await session.list_tools()).tools:
            print(f"tool {tool.name}: {tool.description}")
        found = await session.call_tool("search", {"query": question, "k": 3})
        for passage in json.loads(found.content[0].text)["passages"]:
            print(f"  {passage['rank']}. {passage['location']}")
        result = await session.call_tool("get_context", {"query": question, "budget_tokens": 1500})
        context = json.loads(result.content[0].text)
        print(f"\ncontext: {len(context['passages'])} passages, {context['token_count']} tokens\n")
        print(context["context"][:1500])


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])

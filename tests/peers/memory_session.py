"""One session against @modelcontextprotocol/server-memory through the official Python SDK.
Usage: memory_session.py --tag TAG -- COMMAND [ARGS...]. Creates an entity named after TAG and
reads the graph back. Prints one JSON object; exits non-zero on failure."""
import argparse
import json

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main(tag: str, command: list[str]) -> dict:
    params = StdioServerParameters(command=command[0], args=command[1:])
    with anyio.fail_after(60):
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                name = f"entity-{tag}"
                await session.call_tool(
                    "create_entities",
                    {"entities": [{"name": name, "entityType": "test", "observations": [f"made by {tag}"]}]},
                )
                graph = await session.call_tool("read_graph", {})
                text = json.dumps(graph.model_dump(mode="json"))
                if name not in text:
                    raise SystemExit(f"{name} missing from graph: {text[:500]}")
                return {"tag": tag, "server_name": init.server_info.name, "found": True, "graph": text}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--tag", required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.command[1:] if a.command and a.command[0] == "--" else a.command
    print(json.dumps(anyio.run(main, a.tag, cmd)))

"""One session against @modelcontextprotocol/server-memory through the official Python SDK
(stateful handshake).

Usage: memory_session.py [--tag TAG] [--timeout S] -- COMMAND [ARGS...]

Creates the entity `entity-TAG` (type "test", observation "made by TAG") with `create_entities`,
reads the whole graph with `read_graph` and checks the entity is in it. Prints one JSON object:
  {"tag", "server_name", "protocol_version", "found": true, "entities": [names in the graph],
   "graph": "<the read_graph result as JSON text>"}
and exits 0; on any failure exits 1 with the reason on stderr. The server keeps its graph in
MEMORY_FILE_PATH (absolute, or relative to its dist/ folder; default dist/memory.jsonl), which
this script passes through from its own environment.
"""
from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import stdio_client

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts in the source tree
from peer_common import Failure, check_tool_ok, parser, run, server_params


async def main(command: list[str], tag: str) -> dict[str, Any]:
    async with stdio_client(server_params(command)) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            name = f"entity-{tag}"
            check_tool_ok(
                "create_entities",
                await session.call_tool(
                    "create_entities",
                    {"entities": [{"name": name, "entityType": "test", "observations": [f"made by {tag}"]}]},
                ),
            )
            graph = await session.call_tool("read_graph", {})
            check_tool_ok("read_graph", graph)
            text = json.dumps(graph.model_dump(mode="json"))
            entities = [e["name"] for e in json.loads(graph.content[0].text).get("entities", [])]
            if name not in entities:
                raise Failure(f"{name} missing from the graph: {entities!r}")
            return {
                "tag": tag,
                "server_name": init.server_info.name,
                "protocol_version": init.protocol_version,
                "found": True,
                "entities": entities,
                "graph": text,
            }


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--tag", default=None, help="names the entity (default: random)")
    a = p.parse_args()
    run("memory_session.py", a, main, a.tag or uuid.uuid4().hex[:8])

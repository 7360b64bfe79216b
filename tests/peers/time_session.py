"""One session against mcp-server-time through the official Python SDK (stateful handshake:
initialize + notifications/initialized, never server/discover).

Usage: time_session.py [--timeout S] -- COMMAND [ARGS...]

Calls `get_current_time` with {"timezone": "UTC"} and checks the answer. Prints one JSON object:
  {"server_name": "mcp-time", "protocol_version", "tools": [...],
   "time": {"timezone": "UTC", "datetime": "...+00:00", "day_of_week", "is_dst": false}}
and exits 0; on any failure exits 1 with the reason on stderr.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import stdio_client

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts in the source tree
from peer_common import Failure, check_tool_ok, parser, run, server_params


async def main(command: list[str]) -> dict[str, Any]:
    async with stdio_client(server_params(command)) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            tools = [t.name for t in (await session.list_tools()).tools]
            text = check_tool_ok("get_current_time", await session.call_tool("get_current_time", {"timezone": "UTC"}))
            try:
                data = json.loads(text)
            except ValueError as e:
                raise Failure(f"get_current_time returned non-JSON text {text!r}") from e
            if data.get("timezone") != "UTC" or not str(data.get("datetime", "")).endswith("+00:00"):
                raise Failure(f"unexpected answer {text}")
            return {
                "server_name": init.server_info.name,
                "protocol_version": init.protocol_version,
                "tools": tools,
                "time": data,
            }


if __name__ == "__main__":
    a = parser(__doc__).parse_args()
    run("time_session.py", a, main)

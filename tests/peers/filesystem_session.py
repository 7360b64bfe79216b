"""One session against @modelcontextprotocol/server-filesystem through the official Python SDK,
started in the caller's working folder (as a host starts a server in its workspace).

Usage: filesystem_session.py [--timeout S] -- COMMAND [ARGS...]

Lists the server's allowed folders (`list_allowed_directories`) and the entries of the working
folder (`list_directory`), and tries to list the folder above it. Prints one JSON object:
  {"cwd", "allowed": "<text>", "entries": ["[FILE] name", ...], "parent_refused": bool}
and exits 0; on any failure exits 1 with the reason on stderr.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import stdio_client

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts in the source tree
from peer_common import check_tool_ok, parser, run, server_params


async def main(command: list[str]) -> dict[str, Any]:
    cwd = os.getcwd()
    async with stdio_client(server_params(command)) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            allowed = check_tool_ok("list_allowed_directories", await session.call_tool("list_allowed_directories", {}))
            listing = check_tool_ok("list_directory", await session.call_tool("list_directory", {"path": cwd}))
            parent = await session.call_tool("list_directory", {"path": os.path.dirname(cwd)})
            return {
                "cwd": cwd,
                "allowed": allowed,
                "entries": sorted(line for line in listing.splitlines() if line.strip()),
                "parent_refused": bool(getattr(parent, "isError", False) or getattr(parent, "is_error", False)),
            }


if __name__ == "__main__":
    a = parser(__doc__).parse_args()
    run("filesystem_session.py", a, main)

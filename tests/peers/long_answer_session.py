"""One session that calls one tool and checks that its text answer came whole, through the
official Python SDK (stateful handshake).

Usage: long_answer_session.py --tool NAME --args JSON --length N --char C [--timeout S] -- COMMAND [ARGS...]

Prints {"server_name": ..., "length": N} and exits 0 when the answer's text is N copies of C;
exits 1 with the reason on stderr otherwise.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import stdio_client

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts in the source tree
from peer_common import Failure, check_tool_ok, parser, run, server_params


async def main(command: list[str], tool: str, args: dict[str, Any], length: int, char: str) -> dict[str, Any]:
    async with stdio_client(server_params(command)) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            text = check_tool_ok(tool, await session.call_tool(tool, args))
            if len(text) != length or text.strip(char):
                raise Failure(f"{tool} gave {len(text)} characters, not {length} of {char!r}: {text[:80]!r}")
            return {"server_name": init.server_info.name, "length": len(text)}


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--tool", required=True)
    p.add_argument("--args", required=True, help="the tool's arguments as JSON")
    p.add_argument("--length", type=int, required=True)
    p.add_argument("--char", required=True)
    a = p.parse_args()
    run("long_answer_session.py", a, main, a.tool, json.loads(a.args), a.length, a.char)

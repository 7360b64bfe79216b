"""An MCP server built on the official Python SDK (mcp 2.x `MCPServer`) with one tool whose
answer is as long as asked: `text(n)` returns n bytes of "b". No reference server returns a
long answer on demand, and the SDK's own serialisation (pydantic, the id before the result)
is the shape the daemon passes on while it arrives.

Usage: big_answer_server.py   (stdio)
"""
from __future__ import annotations

import sys

sys.dont_write_bytecode = True
from mcp.server.mcpserver import MCPServer

app = MCPServer("big-answer")


@app.tool()
def text(n: int) -> str:
    """n bytes of "b"."""
    return "b" * n


if __name__ == "__main__":
    app.run()

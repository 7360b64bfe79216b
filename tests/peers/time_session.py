"""One session against mcp-server-time through the official Python SDK (stateful handshake).
Usage: time_session.py -- COMMAND [ARGS...]. Prints one JSON object; exits non-zero on failure."""
import argparse
import json

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main(command: list[str]) -> dict:
    params = StdioServerParameters(command=command[0], args=command[1:])
    with anyio.fail_after(60):
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                res = await session.call_tool("get_current_time", {"timezone": "UTC"})
                text = res.content[0].text
                data = json.loads(text)
                if data.get("timezone") != "UTC":
                    raise SystemExit(f"unexpected answer {text}")
                return {"server_name": init.server_info.name, "protocol_version": init.protocol_version, "time": data}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.command[1:] if a.command and a.command[0] == "--" else a.command
    print(json.dumps(anyio.run(main, cmd)))

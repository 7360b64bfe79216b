"""One MCP host session against @modelcontextprotocol/server-everything, driven by the official
Python SDK. Usage: everything_session.py --tag TAG -- COMMAND [ARGS...]

Prints one JSON object with what it saw; exits non-zero (reason on stderr) on any failure.
Texts carry TAG so that sessions running at once can each check they got only their own.
With --no-sampling the session declares no sampling capability and skips the sampling tool.
"""
import argparse
import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


async def main(tag: str, command: list[str], with_sampling: bool) -> dict:
    params = StdioServerParameters(command=command[0], args=command[1:])
    sampled: list[str] = []

    async def sampling(_ctx, req: types.CreateMessageRequestParams):
        sampled.append(json.dumps(req.model_dump(mode="json")))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled-by-{tag}"),
            model="test-model",
        )

    out: dict = {"tag": tag}
    with anyio.fail_after(60):
        async with stdio_client(params) as (read, write):
            callback = sampling if with_sampling else None
            async with ClientSession(read, write, sampling_callback=callback) as session:
                init = await session.initialize()
                out["server_name"] = init.server_info.name
                out["protocol_version"] = init.protocol_version
                tools = [t.name for t in (await session.list_tools()).tools]
                out["tools"] = tools

                echo = await session.call_tool("echo", {"message": f"hello-{tag}"})
                echo_text = echo.content[0].text
                out["echo_ok"] = echo_text.endswith(f"hello-{tag}")
                if not out["echo_ok"]:
                    raise SystemExit(f"echo returned {echo_text!r}")

                progress: list[float] = []

                async def on_progress(p: float, total, message):
                    progress.append(p)

                await session.call_tool(
                    "trigger-long-running-operation",
                    {"duration": 1, "steps": 4},
                    progress_callback=on_progress,
                )
                out["progress"] = progress
                if len(progress) != 4 or progress != sorted(progress):
                    raise SystemExit(f"progress {progress!r}")

                if with_sampling and "trigger-sampling-request" in tools:
                    res = await session.call_tool(
                        "trigger-sampling-request", {"prompt": f"prompt-{tag}", "maxTokens": 5}
                    )
                    text = json.dumps(res.model_dump(mode="json"))
                    out["sampling_ok"] = f"sampled-by-{tag}" in text and any(
                        f"prompt-{tag}" in s for s in sampled
                    )
                    if not out["sampling_ok"]:
                        raise SystemExit(f"sampling result {text} after requests {sampled}")
                else:
                    out["sampling_ok"] = None
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", required=True)
    parser.add_argument(
        "--no-sampling",
        action="store_true",
        help="declare no sampling capability (the mux must then never send this session sampling requests)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    cmd = a.command[1:] if a.command and a.command[0] == "--" else a.command
    print(json.dumps(anyio.run(main, a.tag, cmd, not a.no_sampling)))

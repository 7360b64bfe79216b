"""One MCP host session against @modelcontextprotocol/server-everything, driven by the official
Python SDK (stdio_client + ClientSession: the stateful initialize/initialized handshake).

Usage: everything_session.py [--tag TAG] [--no-sampling] [--elicitation] [--cancel] [--timeout S] -- COMMAND [ARGS...]
       everything_session.py [...] --url http://127.0.0.1:PORT/NAME/mcp [--token-file F]

Initializes, lists tools, calls `echo` with a TAG-unique text and checks the exact echo, calls
`trigger-long-running-operation` (duration 1 s, 4 steps) with a progress callback and checks it
got exactly progress 1,2,3,4 of total 4, then (unless --no-sampling, which also declares no
sampling capability) calls `trigger-sampling-request` with a TAG-unique prompt and answers the
server's sampling/createMessage with a TAG-unique marker, checking both came back. With
--elicitation it declares elicitation, calls `trigger-elicitation-request` and accepts with a
TAG-unique name. With --cancel it abandons a 30 s call after 1 s (the SDK sends
notifications/cancelled) and checks that an echo is answered at once. Because every text carries TAG, two sessions run at once each check that they
got only their own data.

Prints one JSON object:
  {"tag", "server_name", "protocol_version", "tools": [...], "echo_ok": true,
   "progress": [1.0, 2.0, 3.0, 4.0], "progress_total": [4.0, ...], "sampling_ok": true|null,
   "sampling_requests": N, "cancel_ok": true|null, "elicitation_ok": true|null, "notifications": {method: count}}
and exits 0; on any failure exits 1 with the reason on stderr.
"""
from __future__ import annotations

import sys
import uuid

import anyio
from collections import Counter
from typing import Any

from mcp import ClientSession, types

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts in the source tree
from peer_common import Failure, check_tool_ok, connect, parser, run

STEPS = 4


async def main(
    command: list[str], args: Any, tag: str, with_sampling: bool, with_elicitation: bool, with_cancel: bool
) -> dict[str, Any]:
    sampled: list[str] = []  # the prompt texts of the sampling requests this session got
    elicited: list[str] = []
    notifications: Counter[str] = Counter()

    async def sampling(_ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        sampled.append(" ".join(getattr(m.content, "text", "") for m in params.messages))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled-by-{tag}"),
            model="rmcp-mux-test-model",
        )

    async def elicitation(_ctx: Any, params: Any) -> types.ElicitResult:
        elicited.append(getattr(params, "message", ""))
        return types.ElicitResult(action="accept", content={"name": f"elicited-by-{tag}"})

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            raise Failure(f"transport error: {message!r}")
        notifications[getattr(message, "method", type(message).__name__)] += 1

    out: dict[str, Any] = {"tag": tag}
    async with connect(args, command) as (read, write):
        async with ClientSession(
            read,
            write,
            sampling_callback=sampling if with_sampling else None,
            elicitation_callback=elicitation if with_elicitation else None,
            message_handler=on_message,
        ) as session:
            init = await session.initialize()
            out["server_name"] = init.server_info.name
            out["protocol_version"] = init.protocol_version
            tools = [t.name for t in (await session.list_tools()).tools]
            out["tools"] = tools

            # echo: the exact text back, and nobody else's
            message = f"hello-{tag}-{uuid.uuid4().hex[:8]}"
            echo = check_tool_ok("echo", await session.call_tool("echo", {"message": message}))
            if echo != f"Echo: {message}":
                raise Failure(f"echo sent {message!r}, got {echo!r}")
            out["echo_ok"] = True

            # progress: the SDK puts a progressToken (= its request id) in _meta
            progress: list[float] = []
            totals: list[float | None] = []

            async def on_progress(p: float, total: float | None, _message: str | None) -> None:
                progress.append(p)
                totals.append(total)

            check_tool_ok(
                "trigger-long-running-operation",
                await session.call_tool(
                    "trigger-long-running-operation",
                    {"duration": 1, "steps": STEPS},
                    progress_callback=on_progress,
                ),
            )
            out["progress"] = progress
            out["progress_total"] = totals
            if progress != [float(i) for i in range(1, STEPS + 1)]:
                raise Failure(f"progress: expected 1..{STEPS} in order, got {progress!r}")
            if any(t != STEPS for t in totals):
                raise Failure(f"progress totals: expected {STEPS}, got {totals!r}")

            # sampling: server -> client request, answered by this session's callback
            out["sampling_ok"] = None
            if with_sampling:
                if "trigger-sampling-request" not in tools:
                    raise Failure("sampling declared but trigger-sampling-request is not listed")
                prompt = f"prompt-{tag}"
                text = check_tool_ok(
                    "trigger-sampling-request",
                    await session.call_tool("trigger-sampling-request", {"prompt": prompt, "maxTokens": 5}),
                )
                if f"sampled-by-{tag}" not in text:
                    raise Failure(f"sampling result lacks this session's marker sampled-by-{tag}: {text[:500]}")
                if not sampled or any(prompt not in s for s in sampled):
                    raise Failure(f"sampling requests seen by this session: {sampled!r} (expected only {prompt!r})")
                out["sampling_ok"] = True
            elif sampled:
                raise Failure(f"got sampling requests without declaring sampling: {sampled!r}")
            out["sampling_requests"] = len(sampled)

            # cancellation (optional): a long call abandoned after a moment sends
            # notifications/cancelled; the session must go on answering at once
            out["cancel_ok"] = None
            if with_cancel:
                started = anyio.current_time()
                with anyio.move_on_after(1.0) as scope:
                    await session.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 30})
                if not scope.cancelled_caught:
                    raise Failure("the 30 s operation finished before it was cancelled")
                message = f"after-cancel-{tag}"
                echo = check_tool_ok("echo", await session.call_tool("echo", {"message": message}))
                if echo != f"Echo: {message}":
                    raise Failure(f"after the cancel, echo sent {message!r}, got {echo!r}")
                if anyio.current_time() - started > 10:
                    raise Failure("the session waited for the cancelled operation")
                out["cancel_ok"] = True

            # elicitation (optional)
            out["elicitation_ok"] = None
            if with_elicitation:
                if "trigger-elicitation-request" not in tools:
                    raise Failure("elicitation declared but trigger-elicitation-request is not listed")
                text = check_tool_ok(
                    "trigger-elicitation-request",
                    await session.call_tool("trigger-elicitation-request", {}),
                )
                if f"elicited-by-{tag}" not in text or len(elicited) != 1:
                    raise Failure(f"elicitation: {len(elicited)} request(s), result {text[:500]}")
                out["elicitation_ok"] = True
    out["notifications"] = dict(notifications)
    return out


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--tag", default=None, help="unique text for this session (default: random)")
    p.add_argument(
        "--no-sampling",
        action="store_true",
        help="declare no sampling capability (the mux must then never send this session sampling requests)",
    )
    p.add_argument("--elicitation", action="store_true", help="declare elicitation and exercise it")
    p.add_argument("--cancel", action="store_true", help="abandon a long call and check the session goes on")
    a = p.parse_args()
    tag = a.tag or uuid.uuid4().hex[:8]
    run("everything_session.py", a, main, a, tag, not a.no_sampling, a.elicitation, a.cancel)

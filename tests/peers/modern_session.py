"""One session through the official Python SDK's high-level `Client`, in the protocol era MODE:
"2026-07-28" (every request enveloped, no handshake, results checked strictly), "auto" (probe
server/discover, fall back to initialize) or "legacy" (initialize).

Usage: modern_session.py [--mode MODE] [--server everything|time] [--tag TAG] [--sampling]
                         [--elicitation] [--timeout S] -- COMMAND [ARGS...]
       modern_session.py [OPTIONS] --url URL [--token-file FILE]   (over Streamable HTTP)

everything (@modelcontextprotocol/server-everything): lists tools, calls `echo` with a TAG-unique
text and checks the exact echo, lists resources and reads the first, calls
`trigger-long-running-operation` (1 s, 4 steps) with a progress callback and checks progress
1,2,3,4 of 4, then starts a 10-step one and cancels it after its first progress, and checks that
an echo right after still works. In the 2026-07-28 era it then opens a subscriptions/listen on
that resource and waits for the update `toggle-subscriber-updates` makes the server announce.
With --sampling / --elicitation it declares that capability and calls `trigger-sampling-request`
/ `trigger-elicitation-request`, answering with TAG-unique markers that must come back (in the
2026-07-28 era the server's request arrives as an input request of the call: MRTR).
time (mcp-server-time): lists tools and calls `get_current_time` for UTC.

Prints one JSON object:
  {"tag", "mode", "protocol_version", "server_name", "tools": [...], "echo_ok", "resource_ok",
   "progress": [...], "cancel_ok", "listen_ok", "sampling_ok", "elicitation_ok", "time": {...}}
(the members of the server asked for) and exits 0; on any failure exits 1 with the reason.
"""
from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import anyio
from mcp import Client, types

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts in the source tree
from peer_common import Failure, check_tool_ok, connect, parser, run, server_params

STEPS = 4


class Asked:
    """The callbacks of the server's sampling and elicitation requests, and what they saw."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.sampled: list[str] = []
        self.elicited: list[str] = []

    async def sampling(self, _ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.sampled.append(" ".join(getattr(m.content, "text", "") for m in params.messages))
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled-by-{self.tag}"),
            model="rmcp-mux-test-model",
        )

    async def elicitation(self, _ctx: Any, params: Any) -> types.ElicitResult:
        self.elicited.append(getattr(params, "message", ""))
        return types.ElicitResult(action="accept", content={"name": f"elicited-by-{self.tag}"})


async def interactive(client: Client, asked: Asked, sampling: bool, elicitation: bool, out: dict[str, Any]) -> None:
    tag = asked.tag
    tools = out["tools"]
    if sampling:
        if "trigger-sampling-request" not in tools:
            raise Failure("trigger-sampling-request is not listed (the mux declares sampling upstream)")
        prompt = f"prompt-{tag}"
        text = check_tool_ok(
            "trigger-sampling-request",
            await client.call_tool("trigger-sampling-request", {"prompt": prompt, "maxTokens": 5}),
        )
        if f"sampled-by-{tag}" not in text:
            raise Failure(f"sampling result lacks the marker sampled-by-{tag}: {text[:500]}")
        if len(asked.sampled) != 1 or prompt not in asked.sampled[0]:
            raise Failure(f"sampling requests seen: {asked.sampled!r} (expected one with {prompt!r})")
        out["sampling_ok"] = True
    if elicitation:
        if "trigger-elicitation-request" not in tools:
            raise Failure("trigger-elicitation-request is not listed (the mux declares elicitation upstream)")
        text = check_tool_ok(
            "trigger-elicitation-request", await client.call_tool("trigger-elicitation-request", {})
        )
        if f"elicited-by-{tag}" not in text or len(asked.elicited) != 1:
            raise Failure(f"elicitation: {len(asked.elicited)} request(s), result {text[:500]}")
        out["elicitation_ok"] = True


async def everything(client: Client, tag: str, out: dict[str, Any]) -> None:
    message = f"hello-{tag}-{uuid.uuid4().hex[:8]}"
    echo = check_tool_ok("echo", await client.call_tool("echo", {"message": message}))
    if echo != f"Echo: {message}":
        raise Failure(f"echo sent {message!r}, got {echo!r}")
    out["echo_ok"] = True

    resources = (await client.list_resources()).resources
    if not resources:
        raise Failure("no resources listed")
    uri = str(resources[0].uri)
    read = await client.read_resource(uri)
    if not read.contents or str(read.contents[0].uri) != uri:
        raise Failure(f"read {uri}: unexpected contents {read!r:.500}")
    out["resource_ok"] = True

    progress: list[float] = []

    async def on_progress(p: float, total: float | None, _message: str | None) -> None:
        if total != STEPS:
            raise Failure(f"progress total {total!r}, expected {STEPS}")
        progress.append(p)

    check_tool_ok(
        "trigger-long-running-operation",
        await client.call_tool(
            "trigger-long-running-operation", {"duration": 1, "steps": STEPS}, progress_callback=on_progress
        ),
    )
    out["progress"] = progress
    if progress != [float(i) for i in range(1, STEPS + 1)]:
        raise Failure(f"progress: expected 1..{STEPS} in order, got {progress!r}")

    # Cancellation: give up on a long call once it has started, then the session goes on.
    started = anyio.Event()

    async def on_first(_p: float, _total: float | None, _message: str | None) -> None:
        started.set()

    async with anyio.create_task_group() as tg:

        async def long_call() -> None:
            await client.call_tool(
                "trigger-long-running-operation", {"duration": 10, "steps": 10}, progress_callback=on_first
            )
            raise Failure("the cancelled call completed")

        tg.start_soon(long_call)
        with anyio.fail_after(10):
            await started.wait()
        tg.cancel_scope.cancel()
    again = check_tool_ok("echo", await client.call_tool("echo", {"message": f"after-{tag}"}))
    if again != f"Echo: after-{tag}":
        raise Failure(f"echo after the cancel got {again!r}")
    out["cancel_ok"] = True

    if client.protocol_version == "2026-07-28":
        await listen(client, uri, out)


async def listen(client: Client, uri: str, out: dict[str, Any]) -> None:
    """A subscription to `uri` through subscriptions/listen: server-everything's
    `toggle-subscriber-updates`, when it turns the updates on, announces an update of every
    subscribed resource at once (and every 5 s after), which must arrive on the stream."""
    async with client.listen(resource_subscriptions=[uri], tools_list_changed=True) as sub:
        honoured = sub.honored.resource_subscriptions or []
        if honoured != [uri]:
            raise Failure(f"listen on {uri} honoured {sub.honored!r}")
        # The updates are on or off for the whole child (one stdio session, shared): another
        # client may have turned them on, then this toggle turns them off; the second turns
        # them on again, which announces the subscribed resources at once.
        for _ in range(2):
            text = check_tool_ok("toggle-subscriber-updates", await client.call_tool("toggle-subscriber-updates", {}))
            if text.startswith("Started"):
                break
        else:
            raise Failure(f"toggle-subscriber-updates did not start the updates: {text!r}")
        with anyio.fail_after(10):
            event = await sub.__anext__()
        if getattr(event, "uri", None) != uri:
            raise Failure(f"listen on {uri} got {event!r}")
    out["listen_ok"] = True


async def time(client: Client, out: dict[str, Any]) -> None:
    text = check_tool_ok("get_current_time", await client.call_tool("get_current_time", {"timezone": "UTC"}))
    try:
        data = json.loads(text)
    except ValueError as e:
        raise Failure(f"get_current_time returned non-JSON text {text!r}") from e
    if data.get("timezone") != "UTC" or not str(data.get("datetime", "")).endswith("+00:00"):
        raise Failure(f"unexpected answer {text}")
    out["time"] = data


async def main(
    command: list[str], args: Any, mode: str, server: str, tag: str, sampling: bool, elicitation: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {"tag": tag, "mode": mode}
    asked = Asked(tag)
    async with Client(
        connect(args, command) if args.url else server_params(command),
        mode=mode,
        sampling_callback=asked.sampling if sampling else None,
        elicitation_callback=asked.elicitation if elicitation else None,
    ) as client:
        out["protocol_version"] = client.protocol_version
        info = client.server_info
        out["server_name"] = info.name if info is not None else None
        out["tools"] = [t.name for t in (await client.list_tools()).tools]
        if server == "everything":
            await everything(client, tag, out)
            await interactive(client, asked, sampling, elicitation, out)
        else:
            await time(client, out)
    return out


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--mode", default="2026-07-28", help="the SDK client's mode (default 2026-07-28)")
    p.add_argument("--server", choices=["everything", "time"], default="everything")
    p.add_argument("--tag", default=None, help="a text unique to this session")
    p.add_argument("--sampling", action="store_true", help="declare sampling and exercise it")
    p.add_argument("--elicitation", action="store_true", help="declare elicitation and exercise it")
    a = p.parse_args()
    tag = a.tag or uuid.uuid4().hex[:8]
    run("modern_session.py", a, main, a, a.mode, a.server, tag, a.sampling, a.elicitation)

"""Shared plumbing of the *_session.py scripts: argv, the server command, the overall timeout,
one JSON object on stdout, and a non-zero exit with a one-line reason on stderr."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
from mcp import StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


class Failure(Exception):
    """A check failed: the message is the reason printed on stderr."""


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timeout", type=float, default=60.0, help="overall limit in seconds (default 60)")
    p.add_argument(
        "--url",
        default=None,
        help="connect over Streamable HTTP to this URL instead of launching COMMAND",
    )
    p.add_argument(
        "--token-file",
        default=None,
        help="with --url: send the token in this file as Authorization: Bearer",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...] launching the server")
    return p


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace, command: list[str]) -> AsyncIterator[tuple[Any, Any]]:
    """The (read, write) streams of the session: over HTTP with --url, else over COMMAND's stdio."""
    if args.url:
        headers = {}
        if args.token_file:
            with open(args.token_file) as f:
                headers["Authorization"] = f"Bearer {f.read().strip()}"
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(args.url, http_client=http) as (read, write):
                yield read, write
    else:
        async with stdio_client(server_params(command)) as (read, write):
            yield read, write


def server_params(command: list[str]) -> StdioServerParameters:
    # The SDK passes only a few "safe" variables by default; pass everything, so that the
    # server (or rmcp-mux-proxy) sees e.g. MEMORY_FILE_PATH or RUST_LOG set by the caller.
    return StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in _leaves(sub)]
    return [e]


def run(name: str, args: argparse.Namespace, main: Callable[..., Awaitable[dict[str, Any]]], *a: Any) -> None:
    """Runs main(command, *a) under args.timeout; prints its dict as JSON or exits 1 with the reason."""
    command = args.command[1:] if args.command and args.command[0] == "--" else args.command
    if not command and not getattr(args, "url", None):
        print(f"{name}: missing server command (usage: {name} [OPTIONS] -- COMMAND [ARGS...])", file=sys.stderr)
        sys.exit(2)

    async def guarded() -> dict[str, Any]:
        with anyio.fail_after(args.timeout):
            return await main(command, *a)

    try:
        out = anyio.run(guarded)
    except BaseException as e:  # noqa: BLE001 - every failure must become exit 1 + reason
        if isinstance(e, SystemExit) and e.code in (0, None):
            raise
        leaves = _leaves(e)
        traceback.print_exception(e, file=sys.stderr)
        reasons = []
        for leaf in leaves:
            if isinstance(leaf, TimeoutError):
                reasons.append(f"timed out after {args.timeout:g}s")
            elif isinstance(leaf, Failure):
                reasons.append(str(leaf))
            else:
                reasons.append(f"{type(leaf).__name__}: {leaf}")
        print(f"{name}: FAILED: {'; '.join(reasons)}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out), flush=True)


def text_of(result: Any) -> str:
    """All text content of a tool result, joined (the SDK's CallToolResult)."""
    return "\n".join(getattr(c, "text", "") for c in result.content if getattr(c, "type", None) == "text")


def check_tool_ok(name: str, result: Any) -> str:
    text = text_of(result)
    if getattr(result, "is_error", False):
        raise Failure(f"tool {name} returned an error: {text[:500]}")
    return text

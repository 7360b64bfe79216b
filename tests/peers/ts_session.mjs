// One session through the official TypeScript SDK v2 client (`@modelcontextprotocol/client`)
// in the version negotiation MODE: "legacy" (its default: `initialize`) or "auto" (probe
// `server/discover` on a short-lived sibling process, then the era it found).
//
// Usage: node ts_session.mjs [--mode legacy|auto] [--tag TAG] -- COMMAND [ARGS...]
//
// Against @modelcontextprotocol/server-everything: lists tools, calls `echo` with a TAG-unique
// text and checks the exact echo, then declares sampling and calls `trigger-sampling-request`,
// answering with a TAG-unique marker that must come back in the tool's result (in the
// 2026-07-28 era the server's request arrives as an input request of the call, which the SDK
// fulfils and retries by itself).
//
// Prints one JSON object:
//   {"tag", "mode", "protocol_version", "era", "server_name", "tools": [...], "echo_ok",
//    "sampling_ok", "sampled": [...]}
// and exits 0; on any failure prints the reason on stderr and exits 1.

import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';

const TIMEOUT_MS = 30000;

function parse(argv) {
    const opts = { mode: 'legacy', tag: 'ts' };
    const dash = argv.indexOf('--');
    if (dash < 0 || dash + 1 >= argv.length) {
        throw new Error('usage: ts_session.mjs [--mode legacy|auto] [--tag TAG] -- COMMAND [ARGS...]');
    }
    const flags = argv.slice(0, dash);
    for (let i = 0; i < flags.length; i += 2) {
        const [key, value] = [flags[i], flags[i + 1]];
        if (key === '--mode') opts.mode = value;
        else if (key === '--tag') opts.tag = value;
        else throw new Error(`unknown flag ${key}`);
    }
    opts.command = argv[dash + 1];
    opts.args = argv.slice(dash + 2);
    return opts;
}

function text(result) {
    if (result.isError) {
        throw new Error(`tool error: ${JSON.stringify(result).slice(0, 500)}`);
    }
    return (result.content ?? []).map(c => c.text ?? '').join('');
}

async function session(opts) {
    const out = { tag: opts.tag, mode: opts.mode };
    const sampled = [];
    const client = new Client(
        { name: `rmcp-mux-ts-${opts.tag}`, version: '1.0.0' },
        { capabilities: { sampling: {} }, versionNegotiation: { mode: opts.mode } }
    );
    client.setRequestHandler('sampling/createMessage', async request => {
        sampled.push(request.params.messages.map(m => m.content?.text ?? '').join(' '));
        return {
            model: 'rmcp-mux-test-model',
            role: 'assistant',
            content: { type: 'text', text: `sampled-by-${opts.tag}` }
        };
    });
    const transport = new StdioClientTransport({ command: opts.command, args: opts.args, stderr: 'inherit' });
    await client.connect(transport);
    try {
        out.protocol_version = client.getNegotiatedProtocolVersion() ?? null;
        out.era = client.getProtocolEra() ?? null;
        out.server_name = client.getServerVersion()?.name ?? null;
        const tools = await client.listTools();
        out.tools = tools.tools.map(t => t.name);
        const message = `hello-${opts.tag}-${process.pid}`;
        const echo = text(await client.callTool({ name: 'echo', arguments: { message } }));
        if (!echo.includes(message)) throw new Error(`echo gave ${echo}`);
        out.echo_ok = true;
        const prompt = `prompt-${opts.tag}`;
        const sampling = text(
            await client.callTool({ name: 'trigger-sampling-request', arguments: { prompt, maxTokens: 5 } })
        );
        if (!sampling.includes(`sampled-by-${opts.tag}`)) {
            throw new Error(`sampling result lacks the marker: ${sampling.slice(0, 500)}`);
        }
        if (sampled.length !== 1 || !sampled[0].includes(prompt)) {
            throw new Error(`sampling requests seen: ${JSON.stringify(sampled)}`);
        }
        out.sampling_ok = true;
        out.sampled = sampled;
    } finally {
        await client.close();
    }
    return out;
}

const opts = parse(process.argv.slice(2));
const timer = setTimeout(() => {
    process.stderr.write(`ts_session: no result within ${TIMEOUT_MS} ms\n`);
    process.exit(1);
}, TIMEOUT_MS);
try {
    const out = await session(opts);
    clearTimeout(timer);
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
} catch (e) {
    process.stderr.write(`ts_session: ${e?.stack ?? e}\n`);
    process.exit(1);
}

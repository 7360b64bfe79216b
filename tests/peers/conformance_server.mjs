// A stdio MCP server with the tools, resources and prompts the official conformance suite
// (@modelcontextprotocol/conformance) asks of the server it tests, written from the suite's
// scenario descriptions. tools/conformance.sh runs it behind the daemon's HTTP front, so the
// suite judges the mux. Built on the TypeScript SDK that server-everything brings along.
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  ReadResourceRequestSchema,
  SetLevelRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";

// A 1x1 red PNG and a 44-byte silent WAV.
const PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const WAV = "UklGRiQAAABXQVZFZm10IBAAAAABAAEARKwAAIhYAQACABAAZGF0YQAAAAA=";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const noArgs = { type: "object", properties: {} };

const server = new Server(
  { name: "rmcp-mux-conformance-fixture", version: "1.0.0" },
  {
    capabilities: {
      tools: {},
      resources: { subscribe: true },
      prompts: {},
      logging: {},
      completions: {},
    },
  },
);

const tools = [
  ["test_simple_text", "Returns simple text", noArgs],
  ["test_image_content", "Returns an image", noArgs],
  ["test_audio_content", "Returns audio", noArgs],
  ["test_embedded_resource", "Returns an embedded resource", noArgs],
  ["test_multiple_content_types", "Returns text, an image and a resource", noArgs],
  ["test_tool_with_logging", "Logs three messages while it runs", noArgs],
  ["test_tool_with_progress", "Reports progress 0, 50, 100 of 100", noArgs],
  ["test_error_handling", "Always fails", noArgs],
  [
    "test_sampling",
    "Asks the client's LLM",
    { type: "object", properties: { prompt: { type: "string" } }, required: ["prompt"] },
  ],
  [
    "test_elicitation",
    "Asks the user",
    { type: "object", properties: { message: { type: "string" } }, required: ["message"] },
  ],
  ["test_elicitation_sep1034_defaults", "Asks with defaults for every primitive type", noArgs],
  ["test_elicitation_sep1330_enums", "Asks with every enum form", noArgs],
  [
    "json_schema_2020_12_tool",
    "Tool with JSON Schema 2020-12 features",
    {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      $defs: {
        address: {
          type: "object",
          properties: { street: { type: "string" }, city: { type: "string" } },
        },
      },
      properties: { name: { type: "string" }, address: { $ref: "#/$defs/address" } },
      additionalProperties: false,
    },
  ],
];

server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: tools.map(([name, description, inputSchema]) => ({ name, description, inputSchema })),
}));

const text = (t) => ({ content: [{ type: "text", text: t }] });

server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
  const args = req.params.arguments ?? {};
  switch (req.params.name) {
    case "test_simple_text":
      return text("This is a simple text response for testing.");
    case "test_image_content":
      return { content: [{ type: "image", data: PNG, mimeType: "image/png" }] };
    case "test_audio_content":
      return { content: [{ type: "audio", data: WAV, mimeType: "audio/wav" }] };
    case "test_embedded_resource":
      return {
        content: [
          {
            type: "resource",
            resource: {
              uri: "test://embedded-resource",
              mimeType: "text/plain",
              text: "This is an embedded resource content.",
            },
          },
        ],
      };
    case "test_multiple_content_types":
      return {
        content: [
          { type: "text", text: "Multiple content types test:" },
          { type: "image", data: PNG, mimeType: "image/png" },
          {
            type: "resource",
            resource: {
              uri: "test://mixed-content-resource",
              mimeType: "application/json",
              text: JSON.stringify({ test: "data", value: 123 }),
            },
          },
        ],
      };
    case "test_tool_with_logging": {
      for (const [i, data] of ["Tool execution started", "Tool processing data", "Tool execution completed"].entries()) {
        if (i > 0) await sleep(50);
        await extra.sendNotification({ method: "notifications/message", params: { level: "info", data } });
      }
      return text("Tool with logging executed successfully");
    }
    case "test_tool_with_progress": {
      const token = req.params._meta?.progressToken;
      for (const [i, progress] of [0, 50, 100].entries()) {
        if (i > 0) await sleep(50);
        if (token !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken: token, progress, total: 100 },
          });
        }
      }
      return text("Tool with progress executed successfully");
    }
    case "test_error_handling":
      return { isError: true, ...text("This tool intentionally returns an error for testing") };
    case "test_sampling": {
      const r = await server.createMessage({
        messages: [{ role: "user", content: { type: "text", text: String(args.prompt ?? "") } }],
        maxTokens: 100,
      });
      return text(`LLM response: ${r.content?.text ?? JSON.stringify(r.content)}`);
    }
    case "test_elicitation": {
      const r = await server.elicitInput({
        message: String(args.message ?? ""),
        requestedSchema: {
          type: "object",
          properties: {
            username: { type: "string", description: "User's response" },
            email: { type: "string", description: "User's email address" },
          },
          required: ["username", "email"],
        },
      });
      return text(`User response: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
    }
    case "test_elicitation_sep1034_defaults": {
      const r = await server.elicitInput({
        message: "Please review these defaults",
        requestedSchema: {
          type: "object",
          properties: {
            name: { type: "string", default: "John Doe" },
            age: { type: "integer", default: 30 },
            score: { type: "number", default: 95.5 },
            status: { type: "string", enum: ["active", "inactive", "pending"], default: "active" },
            verified: { type: "boolean", default: true },
          },
        },
      });
      return text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
    }
    case "test_elicitation_sep1330_enums": {
      const r = await server.elicitInput({
        message: "Please choose",
        requestedSchema: {
          type: "object",
          properties: {
            untitledSingle: { type: "string", enum: ["option1", "option2", "option3"] },
            titledSingle: {
              type: "string",
              oneOf: [
                { const: "value1", title: "First Option" },
                { const: "value2", title: "Second Option" },
                { const: "value3", title: "Third Option" },
              ],
            },
            legacyEnum: {
              type: "string",
              enum: ["opt1", "opt2", "opt3"],
              enumNames: ["Option One", "Option Two", "Option Three"],
            },
            untitledMulti: { type: "array", items: { type: "string", enum: ["option1", "option2", "option3"] } },
            titledMulti: {
              type: "array",
              items: {
                anyOf: [
                  { const: "value1", title: "First Choice" },
                  { const: "value2", title: "Second Choice" },
                  { const: "value3", title: "Third Choice" },
                ],
              },
            },
          },
        },
      });
      return text(`Elicitation completed: action=${r.action}, content=${JSON.stringify(r.content ?? {})}`);
    }
    case "json_schema_2020_12_tool":
      return text(`Received: ${JSON.stringify(args)}`);
    default:
      throw new Error(`unknown tool ${req.params.name}`);
  }
});

const resources = [
  { uri: "test://static-text", name: "static-text", description: "A text resource", mimeType: "text/plain" },
  { uri: "test://static-binary", name: "static-binary", description: "A binary resource", mimeType: "image/png" },
  { uri: "test://watched-resource", name: "watched-resource", description: "A resource to subscribe to", mimeType: "text/plain" },
];
server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources }));
server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
  resourceTemplates: [
    {
      uriTemplate: "test://template/{id}/data",
      name: "template",
      description: "Data for an id",
      mimeType: "application/json",
    },
  ],
}));
server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
  const uri = req.params.uri;
  if (uri === "test://static-text" || uri === "test://watched-resource") {
    return { contents: [{ uri, mimeType: "text/plain", text: "This is the content of the static text resource." }] };
  }
  if (uri === "test://static-binary") {
    return { contents: [{ uri, mimeType: "image/png", blob: PNG }] };
  }
  const m = /^test:\/\/template\/([^/]+)\/data$/.exec(uri);
  if (m) {
    return {
      contents: [
        {
          uri,
          mimeType: "application/json",
          text: JSON.stringify({ id: m[1], templateTest: true, data: `Data for ID: ${m[1]}` }),
        },
      ],
    };
  }
  throw new Error(`unknown resource ${uri}`);
});
const subscribed = new Set();
server.setRequestHandler(SubscribeRequestSchema, async (req) => {
  subscribed.add(req.params.uri);
  return {};
});
server.setRequestHandler(UnsubscribeRequestSchema, async (req) => {
  subscribed.delete(req.params.uri);
  return {};
});

const prompts = [
  { name: "test_simple_prompt", description: "A simple prompt" },
  {
    name: "test_prompt_with_arguments",
    description: "A prompt with arguments",
    arguments: [
      { name: "arg1", description: "First test argument", required: true },
      { name: "arg2", description: "Second test argument", required: true },
    ],
  },
  {
    name: "test_prompt_with_embedded_resource",
    description: "A prompt with a resource",
    arguments: [{ name: "resourceUri", description: "URI of the resource to embed", required: true }],
  },
  { name: "test_prompt_with_image", description: "A prompt with an image" },
];
server.setRequestHandler(ListPromptsRequestSchema, async () => ({ prompts }));
server.setRequestHandler(GetPromptRequestSchema, async (req) => {
  const a = req.params.arguments ?? {};
  const user = (content) => ({ role: "user", content });
  switch (req.params.name) {
    case "test_simple_prompt":
      return { messages: [user({ type: "text", text: "This is a simple prompt for testing." })] };
    case "test_prompt_with_arguments":
      return {
        messages: [user({ type: "text", text: `Prompt with arguments: arg1='${a.arg1}', arg2='${a.arg2}'` })],
      };
    case "test_prompt_with_embedded_resource":
      return {
        messages: [
          user({
            type: "resource",
            resource: { uri: a.resourceUri, mimeType: "text/plain", text: "Embedded resource content for testing." },
          }),
          user({ type: "text", text: "Please process the embedded resource above." }),
        ],
      };
    case "test_prompt_with_image":
      return {
        messages: [
          user({ type: "image", data: PNG, mimeType: "image/png" }),
          user({ type: "text", text: "Please analyze the image above." }),
        ],
      };
    default:
      throw new Error(`unknown prompt ${req.params.name}`);
  }
});
server.setRequestHandler(CompleteRequestSchema, async () => ({
  completion: { values: [], total: 0, hasMore: false },
}));
server.setRequestHandler(SetLevelRequestSchema, async () => ({}));

await server.connect(new StdioServerTransport());

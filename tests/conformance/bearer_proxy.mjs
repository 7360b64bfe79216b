// The conformance suite sends no headers of its own, and the daemon's HTTP front refuses every
// request without its bearer token. This forwards each request from LISTEN to the front at
// TARGET with `Authorization: Bearer <token in TOKEN_FILE>` added and nothing else changed,
// except a Host naming this proxy, which becomes the front's (a foreign Host or Origin passes
// through untouched, so the suite's DNS-rebinding checks reach the front as sent).
// Usage: node bearer_proxy.mjs LISTEN_PORT TARGET_PORT TOKEN_FILE
import fs from "node:fs";
import http from "node:http";

const [listen, target, tokenFile] = process.argv.slice(2);
const token = fs.readFileSync(tokenFile, "utf8").trim();
const own = new Set([`127.0.0.1:${listen}`, `localhost:${listen}`]);

http
  .createServer((req, res) => {
    const headers = { ...req.headers, authorization: `Bearer ${token}` };
    if (own.has(headers.host)) headers.host = `127.0.0.1:${target}`;
    const up = http.request(
      { host: "127.0.0.1", port: target, method: req.method, path: req.url, headers },
      (r) => {
        res.writeHead(r.statusCode, r.headers);
        r.pipe(res);
      },
    );
    up.on("error", () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
    res.on("close", () => up.destroy());
  })
  .listen(Number(listen), "127.0.0.1", () => console.log(`bearer proxy on ${listen}`));

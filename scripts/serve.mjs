// npm run serve [-- --port N] [--root DIR]: serves the browser demo (dist/web/, or DIR) on
// http://127.0.0.1:N/ (default 8080) with Cross-Origin-Opener-Policy:
// same-origin and Cross-Origin-Embedder-Policy: require-corp, so the page is
// cross-origin isolated (HTML Living Standard §7.1.3) and may post its
// SharedArrayBuffer-backed memory to a worker. Static files only, GET/HEAD,
// nothing outside dist/web/.
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const DEFAULT_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "web");
const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
  ".map": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".wasm": "application/wasm",
};
const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

function usage(msg) {
  if (msg) process.stderr.write(`serve: ${msg}\n`);
  process.stderr.write("usage: npm run serve [-- --port N] [--root DIR]   (N 0..65535, 0 picks a free port; default 8080; DIR default dist/web)\n");
  process.exit(msg ? 2 : 0);
}

function parseArgs(argv) {
  let port = 8080, root = DEFAULT_ROOT;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--help" || a === "-h") usage();
    else if (a === "--port" || a.startsWith("--port=")) {
      const v = a === "--port" ? argv[++i] : a.slice(7);
      if (v === undefined || !/^\d+$/.test(v) || Number(v) > 65535) usage(`--port must be 0..65535, got ${v === undefined ? "nothing" : `'${v}'`}`);
      port = Number(v);
    } else if (a === "--root" || a.startsWith("--root=")) {
      const v = a === "--root" ? argv[++i] : a.slice(7);
      if (!v) usage("--root needs a directory");
      root = resolve(v);
    } else usage(`unknown argument '${a}'`);
  }
  return { port, root };
}

/** Starts the server for the files under `root`; resolves with it once listening on 127.0.0.1:`port`. */
export function serve(port, root = DEFAULT_ROOT) {
  const server = createServer(async (req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD", ...ISOLATION }).end();
      return;
    }
    let path;
    try { path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname); } catch { path = ""; }
    const file = normalize(join(root, path.endsWith("/") ? path + "index.html" : path));
    if (!path.startsWith("/") || (file !== root && !file.startsWith(root + sep))) {
      res.writeHead(400, { "Content-Type": "text/plain", ...ISOLATION }).end("bad path\n");
      return;
    }
    try {
      if (!(await stat(file)).isFile()) throw new Error("not a file");
      const body = await readFile(file);
      res.writeHead(200, {
        "Content-Type": TYPES[extname(file)] ?? "application/octet-stream", "Content-Length": body.length,
        "Cache-Control": "no-store", ...ISOLATION,
      });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch {
      res.writeHead(404, { "Content-Type": "text/plain", ...ISOLATION }).end("not found\n");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === normalize(process.argv[1])) {
  const { port, root } = parseArgs(process.argv.slice(2));
  try {
    await stat(join(root, "index.html"));
  } catch {
    process.stderr.write(`serve: ${join(root, "index.html")} is missing: run npm run build first\n`);
    process.exit(1);
  }
  try {
    const server = await serve(port, root);
    const { port: p } = server.address();
    process.stdout.write(`vmmu demo on http://127.0.0.1:${p}/ (COOP same-origin, COEP require-corp); Ctrl-C stops\n`);
  } catch (e) {
    process.stderr.write(`serve: cannot listen on 127.0.0.1:${port}: ${e.message}\n`);
    process.exit(1);
  }
}

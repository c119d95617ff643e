// esbuild bundle of the browser demo (web/) into dist/web/ (or --out DIR): demo.js (the page)
// and worker.js (its Web Worker), each with the wasm core embedded, plus the
// static files. The library's Node-only corners (node:fs in the lackey trace
// reader, never reached by the page) resolve to stubs that throw if called.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
if (args.length && (args[0] !== "--out" || args.length !== 2)) {
  process.stderr.write("usage: node scripts/bundle-web.mjs [--out DIR]   (default dist/web)\n");
  process.exit(2);
}
const out = args.length ? resolve(args[1]) : join(root, "dist", "web");

/** Named exports of the stubbed Node builtins (what src/ imports from them). */
const STUBS = { "node:fs": ["openSync", "readSync", "closeSync"] };

const nodeStubs = {
  name: "node-stubs",
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (a) => {
      if (!(a.path in STUBS)) return { errors: [{ text: `${a.path} (imported by ${a.importer}) has no browser stub: add it to STUBS in scripts/bundle-web.mjs` }] };
      return { path: a.path, namespace: "node-stub" };
    });
    b.onLoad({ filter: /.*/, namespace: "node-stub" }, (a) => ({
      contents: STUBS[a.path].map((n) => `export function ${n}() { throw new Error("vmmu: ${a.path} ${n} is not available in a browser"); }`).join("\n"),
      loader: "js",
    }));
  },
};

mkdirSync(out, { recursive: true });
await build({
  entryPoints: { demo: join(root, "web/demo.ts"), worker: join(root, "web/worker.ts") },
  outdir: out, bundle: true, format: "esm", platform: "browser", target: "es2022",
  sourcemap: true, minify: true, logLevel: "warning", plugins: [nodeStubs],
});
for (const f of ["index.html", "style.css"]) copyFileSync(join(root, "web", f), join(out, f));
console.log(`bundled ${args.length ? out : "dist/web/"} (the browser demo: npm run serve)`);

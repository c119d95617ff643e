// `npm run bench`: bundles each bench/*.bench.ts with esbuild (platform node,
// ESM) into bench/.out/ and runs each in its own Node process, one after the
// other. Arguments are passed through to every bench (e.g. `--quick`); a bare
// word selects the bench files whose name contains it.
//
//   npm run bench                   all benches, full time budgets
//   npm run bench -- --quick        all benches, short budgets
//   npm run bench -- flush          only bench/x86-flush.bench.ts
//   npm run bench -- arm64          only the arm64 benches (arm64-tlbi, arm64-translate)
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const benchDir = path.join(root, "bench");
const outDir = path.join(benchDir, ".out");
const args = process.argv.slice(2);
const filters = args.filter((a) => !a.startsWith("-"));
const passThrough = args.filter((a) => a.startsWith("-"));

const files = readdirSync(benchDir)
  .filter((f) => f.endsWith(".bench.ts"))
  .filter((f) => filters.length === 0 || filters.some((w) => f.includes(w)))
  .sort();
if (files.length === 0) {
  console.error(`bench: no bench/*.bench.ts matches ${filters.join(", ")}`);
  process.exit(2);
}

mkdirSync(outDir, { recursive: true });
let failed = 0;
for (const f of files) {
  const outfile = path.join(outDir, f.replace(/\.ts$/, ".mjs"));
  await build({
    entryPoints: [path.join(benchDir, f)], outfile, bundle: true, platform: "node", format: "esm",
    target: "node20", sourcemap: "inline", logLevel: "warning",
  });
  console.log(`\n=== ${f} ===\n`);
  const r = spawnSync(process.execPath, ["--enable-source-maps", outfile, ...passThrough], { stdio: "inherit", cwd: root });
  if (r.status !== 0) {
    console.error(`bench: ${f} exited with ${r.status ?? r.signal}`);
    failed++;
  }
}
process.exit(failed === 0 ? 0 : 1);

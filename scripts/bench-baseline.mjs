// Builds a previous core for before/after benchmarks: extracts git rev REV
// (default ab130d2, the main tip before issue 8) into a temp dir with
// `git archive`, compiles its wasm with this repository's asc (its own
// asconfig.json, release target), embeds it with its own
// scripts/embed-wasm.mjs, and bundles its public API (src/index.ts) with
// esbuild. Outputs, in bench/.baseline/ (gitignored):
//
//   vmmu-<rev>.mjs    the old library, imported by bench/before-after.bench.ts
//   core-<rev>.wasm   the old release wasm
//   vmmu-<rev>.json   { rev, commit, coreHash, wasmBytes, built }
//
//   node scripts/bench-baseline.mjs            ab130d2
//   node scripts/bench-baseline.mjs REV        any other commit
//   node scripts/bench-baseline.mjs --force    rebuild even if present
//   node scripts/bench-baseline.mjs --out DIR  write to DIR instead of bench/.baseline
//
// Exit status: 0 built (or already present), 1 a step failed (its output is printed), 2 a bad argument.
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const DEFAULT_BASELINE_REV = "ab130d2";

const root = fileURLToPath(new URL("..", import.meta.url));
const defaultOutDir = path.join(root, "bench", ".baseline");

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.error || r.status !== 0) {
    throw new Error(`bench-baseline: ${[cmd, ...args].join(" ")} failed (${r.error?.message ?? r.status ?? r.signal})\n${r.stdout ?? ""}${r.stderr ?? ""}`);
  }
  return r.stdout;
}

/** Paths of the baseline files for `rev` (a short or full commit name, as given) in `outDir`. */
export function baselinePaths(rev = DEFAULT_BASELINE_REV, outDir = defaultOutDir) {
  return {
    lib: path.join(outDir, `vmmu-${rev}.mjs`),
    wasm: path.join(outDir, `core-${rev}.wasm`),
    meta: path.join(outDir, `vmmu-${rev}.json`),
  };
}

/** Builds the baseline of `rev` into `outDir` unless present (or `force`); returns its paths. */
export async function buildBaseline(rev = DEFAULT_BASELINE_REV, { force = false, outDir = defaultOutDir, log = console.log } = {}) {
  const out = baselinePaths(rev, outDir);
  if (!force && existsSync(out.lib) && existsSync(out.meta)) return out;
  const commit = run("git", ["rev-parse", "--verify", `${rev}^{commit}`], root).trim();
  const tmp = mkdtempSync(path.join(os.tmpdir(), `vmmu-baseline-${rev}-`));
  try {
    const tar = path.join(tmp, "src.tar");
    run("git", ["archive", "--format=tar", "-o", tar, commit], root);
    const tree = path.join(tmp, "tree");
    mkdirSync(tree);
    run("tar", ["-xf", tar, "-C", tree], root);
    symlinkSync(path.join(root, "node_modules"), path.join(tree, "node_modules"), "dir");
    log(`bench-baseline: ${rev} (${commit.slice(0, 12)}) extracted; compiling its wasm core`);
    const asc = path.join(root, "node_modules", "assemblyscript", "bin", "asc.js");
    run(process.execPath, [asc, "assembly/index.ts", "--target", "release"], tree);
    run(process.execPath, ["scripts/embed-wasm.mjs"], tree);
    mkdirSync(outDir, { recursive: true });
    await build({
      entryPoints: [path.join(tree, "src", "index.ts")], outfile: out.lib, bundle: true, format: "esm",
      platform: "node", target: "node20", logLevel: "warning",
    });
    const wasm = path.join(tree, "build", "release.wasm");
    copyFileSync(wasm, out.wasm);
    const generated = readFileSync(path.join(tree, "src", "core", "wasm-bytes.generated.ts"), "utf8");
    const coreHash = /WASM_HASH: string = "([0-9a-f]+)"/.exec(generated)?.[1] ?? "unknown";
    const meta = { rev, commit, coreHash, wasmBytes: readFileSync(wasm).length, built: new Date().toISOString() };
    writeFileSync(out.meta, `${JSON.stringify(meta, null, 2)}\n`);
    log(`bench-baseline: wrote ${path.relative(root, out.lib)} and ${path.relative(root, out.wasm)} (core ${coreHash})`);
    return out;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const outAt = args.indexOf("--out");
  const outDir = outAt >= 0 ? args[outAt + 1] : undefined;
  if (outAt >= 0 && !outDir) {
    console.error("bench-baseline: --out needs a directory");
    process.exit(2);
  }
  const rev = args.find((a, i) => !a.startsWith("-") && !(outAt >= 0 && i === outAt + 1)) ?? DEFAULT_BASELINE_REV;
  try {
    const out = await buildBaseline(rev, { force: args.includes("--force"), outDir: outDir ? path.resolve(outDir) : defaultOutDir });
    console.log(`bench-baseline: ${path.relative(root, out.lib)} ready`);
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  }
}

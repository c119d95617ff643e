/**
 * The package as a user gets it: `npm pack` the built tree, install the
 * tarball into an empty project, and use it by name — type-checked under
 * `strict` with moduleResolution `bundler` and `node16`, imported from Node,
 * run through its `vmmu` bin, and bundled by esbuild for the browser (no Node
 * builtins may be pulled in). Needs the build (`npm ci` runs it).
 */
import { describe, expect, it, beforeAll, afterAll } from "vitest";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "esbuild";

const ROOT = resolve(import.meta.dirname, "../..");
const TSC = join(ROOT, "node_modules/typescript/bin/tsc");
const NPM_ENV = { ...process.env, npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" };

let dir = "";
let files: string[] = [];

const CONSUMER_TS = `import { createMachine, X86PageTableBuilder, LONG_MODE, type X86TranslateResult, type Machine, type X86Vcpu } from "vmmu";

const m: Machine<X86Vcpu> = await createMachine({ arch: "x86_64", memoryBytes: 16 << 20 });
const pt = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
pt.map(0x40_0000n, 0x30_0000n, "4K", { user: true, write: true });
const v = m.vcpu(0);
v.setControl({ ...LONG_MODE, cr3: pt.root });
const r: X86TranslateResult = v.translate(0x40_0123n, "write", true);
if ("fault" in r) throw new Error("unexpected fault " + r.fault.kind);
const pa: bigint = r.pa;
console.log(pa.toString(16));
`;

const CONSUMER_MJS = CONSUMER_TS
  .replace(/, type \w+/g, "")
  .replace(/: Machine<X86Vcpu>/, "")
  .replace(/: X86TranslateResult/, "")
  .replace(/: bigint/, "");

function tsconfig(module: string, moduleResolution: string): string {
  return JSON.stringify({
    compilerOptions: {
      target: "es2022", module, moduleResolution, strict: true, noEmit: true, lib: ["es2022", "dom"], types: [],
      skipLibCheck: false, noUncheckedIndexedAccess: true,
    },
    files: ["consumer.ts"],
  });
}

beforeAll(() => {
  if (!existsSync(join(ROOT, "dist/types/index.d.ts")) || !existsSync(join(ROOT, "dist/vmmu.mjs"))) {
    throw new Error("vmmu: dist/ is not built (npm ci builds it; or npm run build)");
  }
  dir = mkdtempSync(join(tmpdir(), "vmmu-consumer-"));
  const out = execFileSync("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", dir], { cwd: ROOT, env: NPM_ENV, encoding: "utf8" });
  const info = JSON.parse(out)[0] as { filename: string; files: { path: string }[] };
  files = info.files.map((f) => f.path);
  const app = join(dir, "app");
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  execFileSync("npm", ["install", "--offline", "--ignore-scripts", "--no-package-lock", join(dir, info.filename)], { cwd: app, env: NPM_ENV, stdio: "pipe" });
  writeFileSync(join(app, "consumer.ts"), CONSUMER_TS);
  writeFileSync(join(app, "consumer.mjs"), CONSUMER_MJS);
  writeFileSync(join(app, "tsconfig.bundler.json"), tsconfig("esnext", "bundler"));
  writeFileSync(join(app, "tsconfig.node16.json"), tsconfig("node16", "node16"));
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the packed package", () => {
  it("holds what a user runs — bundles, declarations, docs, README, LICENSE — and no tests, benchmarks, sources or source maps", () => {
    expect(files).toEqual(expect.arrayContaining(["dist/vmmu.mjs", "dist/cli.mjs", "dist/types/index.d.ts", "README.md", "LICENSE", "docs/mmu.md", "package.json"]));
    expect(files.filter((f) => /^(test|bench|src|assembly|scripts|build)\/|\.map$/.test(f))).toEqual([]);
  });

  it("type-checks a strict consumer under moduleResolution bundler", () => {
    execFileSync(process.execPath, [TSC, "-p", "tsconfig.bundler.json"], { cwd: join(dir, "app"), stdio: "pipe" });
  }, 60_000);

  it("type-checks a strict consumer under moduleResolution node16", () => {
    execFileSync(process.execPath, [TSC, "-p", "tsconfig.node16.json"], { cwd: join(dir, "app"), stdio: "pipe" });
  }, 60_000);

  it("is imported by name from Node and translates", () => {
    const out = execFileSync(process.execPath, ["consumer.mjs"], { cwd: join(dir, "app"), encoding: "utf8" });
    expect(out.trim()).toBe("300123");
  });

  const [major, minor] = process.versions.node.split(".").map(Number) as [number, number];
  const requireEsm = !(major < 20 || (major === 20 && minor < 19) || (major === 22 && minor < 12));
  it.skipIf(!requireEsm)("is required by name from CommonJS where Node has require(esm) (≥ 20.19, 22.12; skipped on older Node)", () => {
    const out = execFileSync(process.execPath, ["-e", "console.log(typeof require('vmmu').createMachine)"], { cwd: join(dir, "app"), encoding: "utf8" });
    expect(out.trim()).toBe("function");
  });

  it("runs its vmmu bin", () => {
    const out = execFileSync(join(dir, "app/node_modules/.bin/vmmu"), ["--help"], { encoding: "utf8" });
    expect(out).toMatch(/^usage:/);
  });

  it("bundles for the browser with esbuild, pulling in no Node builtin", async () => {
    const r = await build({
      entryPoints: [join(dir, "app/consumer.mjs")], absWorkingDir: join(dir, "app"), bundle: true, platform: "browser",
      format: "esm", target: "es2022", write: false, metafile: true, logLevel: "silent",
    });
    expect(r.errors).toEqual([]);
    const inputs = Object.keys(r.metafile!.inputs);
    expect(inputs.some((p) => p.includes("node_modules/vmmu/dist/vmmu.mjs"))).toBe(true);
    expect(inputs.filter((p) => p.startsWith("node:") || /^(fs|path|os|crypto|worker_threads)$/.test(p))).toEqual([]);
    expect(r.outputFiles![0]!.text).not.toMatch(/from\s*["']node:/);
  });
});

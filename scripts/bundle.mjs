// esbuild bundles: the library (ESM, Node and browser), the CLI, and the
// worker-side attach module used by worker_threads tests and embedders.
import { build } from "esbuild";

const common = { bundle: true, format: "esm", target: "es2022", sourcemap: true, logLevel: "warning" };
await build({ ...common, entryPoints: ["src/index.ts"], outfile: "dist/vmmu.mjs", platform: "neutral", external: ["node:*"] });
await build({
  ...common, entryPoints: ["src/cli/main.ts"], outfile: "dist/cli.mjs", platform: "node",
  banner: { js: "#!/usr/bin/env node" },
});
console.log("bundled dist/vmmu.mjs, dist/cli.mjs");

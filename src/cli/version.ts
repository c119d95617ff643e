// The code version a CLI run reports (`vmmu --version`, the `_meta` of
// `--json` output, `vmmu report`): the package version from the package.json
// above this module (src/cli/ or the bundle's dist/), the embedded wasm core's
// content hash (scripts/embed-wasm.mjs), and the git commit when the package
// directory is itself a git checkout (never a parent project's repository).

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnSync } from "node:child_process";
import { coreHash } from "../core/load.js";

/** What code produced a result. */
export interface CodeVersion {
  /** package.json "version" ("unknown" if no vmmu package.json is found). */
  version: string;
  /** sha256 prefix of the embedded release wasm (`coreHash`). */
  wasm: string;
  /** `git rev-parse HEAD` of the package checkout, when it is one. */
  commit?: string;
  /** The checkout had uncommitted changes to tracked files. */
  dirty?: boolean;
}

let cached: CodeVersion | undefined;

/** The package root: the nearest directory above this module whose package.json is named "vmmu". */
function packageRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const p = join(dir, "package.json");
    if (existsSync(p)) {
      try {
        if ((JSON.parse(readFileSync(p, "utf8")) as { name?: unknown }).name === "vmmu") return dir;
      } catch { /* not JSON: keep looking */ }
    }
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** The version, core hash and (in a git checkout) commit of the running code; computed once. */
export function codeVersion(): CodeVersion {
  if (cached) return cached;
  const root = packageRoot();
  let version = "unknown";
  if (root) version = String((JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version?: unknown }).version ?? "unknown");
  const v: CodeVersion = { version, wasm: coreHash };
  if (root && existsSync(join(root, ".git"))) {
    const git = (...args: string[]) => spawnSync("git", ["-C", root, ...args], { encoding: "utf8", timeout: 5000 });
    const head = git("rev-parse", "HEAD");
    if (head.status === 0 && /^[0-9a-f]{40}$/.test(head.stdout.trim())) {
      v.commit = head.stdout.trim();
      const st = git("status", "--porcelain", "--untracked-files=no");
      if (st.status === 0) v.dirty = st.stdout.trim() !== "";
    }
  }
  cached = v;
  return v;
}

/** One line: `vmmu 0.1.0 (wasm core 0123456789abcdef, commit 0123456789ab+)`; `+` marks uncommitted changes. */
export function versionLine(v: CodeVersion = codeVersion()): string {
  const commit = v.commit ? `, commit ${v.commit.slice(0, 12)}${v.dirty ? "+" : ""}` : "";
  return `vmmu ${v.version} (wasm core ${v.wasm}${commit})`;
}

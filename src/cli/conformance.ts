// `vmmu conformance --arch x86_64|arm64 [--out FILE]`: writes the conformance
// suite, one JSON line per case (schema "vmmu-conformance/1", described in
// src/conformance/case.ts and the README), to FILE or stdout, then the case
// counts per group on stderr. Needs no wasm: the expected outcomes come from
// the reference walkers (src/ref/).

import * as fs from "node:fs";
import type { ConformanceCase } from "../conformance/case.js";
import { x86ConformanceCases } from "../conformance/x86.js";
import { arm64ConformanceCases } from "../conformance/arm64.js";

const USAGE = `usage: vmmu conformance --arch x86_64|arm64 [--out FILE]

Writes every case of the MMU conformance suite for that architecture as one
JSON line (schema "vmmu-conformance/1": table bytes, registers, access and the
reference walker's expected translation or fault and A/D writes) to FILE, or
to stdout. The case counts per group go to stderr.
`;

class UsageError extends Error {}

function parse(args: string[]): { arch: "x86_64" | "arm64"; out?: string } {
  let arch: string | undefined, out: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const f = args[i]!;
    const eq = f.startsWith("--") ? f.indexOf("=") : -1;
    const flag = eq > 0 ? f.slice(0, eq) : f;
    const val = (): string => {
      const v = eq > 0 ? f.slice(eq + 1) : args[++i];
      if (v === undefined || v === "") throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--arch": arch = val(); break;
      case "--out": out = val(); break;
      default: throw new UsageError(`unknown option '${f}'`);
    }
  }
  if (arch === undefined) throw new UsageError("--arch is required (x86_64 or arm64)");
  if (arch !== "x86_64" && arch !== "arm64") throw new UsageError(`--arch must be x86_64 or arm64, got '${arch}'`);
  return { arch, out };
}

/**
 * Runs the subcommand; resolves to the exit code (0, or 2 on a usage error or an unwritable
 * --out). A reader that closes stdout early (`| head`) ends the run quietly with 0.
 */
export async function runConformance(args: string[]): Promise<number> {
  if (args.includes("-h") || args.includes("--help")) { process.stdout.write(USAGE); return 0; }
  let a: ReturnType<typeof parse>;
  try {
    a = parse(args);
  } catch (e) {
    if (e instanceof UsageError) { process.stderr.write(`vmmu: ${e.message}\n`); return 2; }
    throw e;
  }
  let fd: number | undefined;
  try {
    if (a.out !== undefined) fd = fs.openSync(a.out, "w");
  } catch (e) {
    process.stderr.write(`vmmu: --out ${a.out}: ${(e as Error).message}\n`);
    return 2;
  }
  let closed = false;
  const onError = (e: NodeJS.ErrnoException): void => {
    if (e.code !== "EPIPE") throw e;
    closed = true;
  };
  if (fd === undefined) process.stdout.on("error", onError);
  const cases: Iterable<ConformanceCase> = a.arch === "x86_64" ? x86ConformanceCases() : arm64ConformanceCases();
  const groups = new Map<string, number>();
  let total = 0, chunk = "";
  const flush = async (): Promise<void> => {
    if (fd !== undefined) fs.writeSync(fd, chunk);
    else if (!process.stdout.write(chunk)) await new Promise((resolve) => process.stdout.once("drain", resolve));
    else await new Promise((resolve) => setImmediate(resolve));
    chunk = "";
  };
  try {
    for (const c of cases) {
      chunk += JSON.stringify(c) + "\n";
      groups.set(c.group, (groups.get(c.group) ?? 0) + 1);
      total++;
      if (chunk.length >= 1 << 20) {
        await flush();
        if (closed) return 0;
      }
    }
    if (chunk !== "") await flush();
    if (closed) return 0;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  const per = [...groups].map(([g, n]) => `${g} ${n}`).join(", ");
  process.stderr.write(`vmmu conformance: ${total} ${a.arch} cases${a.out === undefined ? "" : ` → ${a.out}`} (${per})\n`);
  return 0;
}

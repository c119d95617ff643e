/**
 * The conformance suite (src/conformance/, Intel SDM Vol.3A §4.5–4.8 and Arm ARM DDI 0487
 * D8.2–D8.4 through the reference walkers): the wasm core agrees with every case of both
 * architectures on the translation, the fault and the table words after the access; case ids
 * are unique and stable; `vmmu conformance` writes one line per case; and a consumer that knows
 * only the line format replays cases from the file.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMachine, type Arm64Vcpu, type GuestMemory, type X86Vcpu } from "../../../src/index.js";
import {
  CONFORMANCE_SCHEMA, entryValue, type Arm64ConformanceCase, type ConformanceCase, type X86ConformanceCase,
} from "../../../src/conformance/case.js";
import { x86ConformanceCases } from "../../../src/conformance/x86.js";
import { arm64ConformanceCases } from "../../../src/conformance/arm64.js";

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const MiB = 1 << 20;

/** An outcome in one printable shape, from the core or from a case's `expect`. */
function x86Outcome(r: { pa: bigint; pageSize: number; level: number } | { fault: { vector: number; errorCode: number; level: number; kind: string } }): string {
  if ("fault" in r) return `fault vector=${r.fault.vector} errorCode=${r.fault.errorCode} level=${r.fault.level} kind=${r.fault.kind}`;
  return `pa=0x${r.pa.toString(16)} pageSize=${r.pageSize} level=${r.level}`;
}

function x86Expected(c: X86ConformanceCase): string {
  const e = c.expect;
  return "fault" in e ? x86Outcome(e) : x86Outcome({ pa: BigInt(e.pa), pageSize: e.pageSize, level: e.level });
}

function armOutcome(r: { pa: bigint; pageSize: number; level: number } | { fault: { stage: number; fsc: number; level: number; kind: string; s1ptw: boolean; write: boolean } }): string {
  if ("fault" in r) {
    const f = r.fault;
    return `fault stage=${f.stage} fsc=0x${f.fsc.toString(16)} level=${f.level} kind=${f.kind} s1ptw=${f.s1ptw} write=${f.write}`;
  }
  return `pa=0x${r.pa.toString(16)} pageSize=${r.pageSize} level=${r.level}`;
}

function armExpected(c: Arm64ConformanceCase): string {
  const e = c.expect;
  return "fault" in e ? armOutcome(e) : armOutcome({ pa: BigInt(e.pa), pageSize: e.pageSize, level: e.level });
}

/** Table words a case must leave: its bytes, with `writes` applied. */
function wordsAfter(c: ConformanceCase): Map<bigint, bigint> {
  const after = new Map(c.tables.map((t) => [BigInt(t.gpa), entryValue(t.bytes)]));
  for (const w of c.expect.writes) after.set(BigInt(w.gpa), BigInt(w.after));
  return after;
}

/** Loads a case's tables, runs `access`, compares outcome and words, clears the tables. */
function replay(memory: GuestMemory, c: ConformanceCase, expected: string, access: () => string): string | undefined {
  for (const t of c.tables) memory.write64(BigInt(t.gpa), entryValue(t.bytes));
  const got = access();
  const diffs: string[] = [];
  for (const [gpa, want] of wordsAfter(c)) {
    const v = memory.read64(gpa);
    if (v !== want) diffs.push(`[0x${gpa.toString(16)}] core 0x${v.toString(16)}, expected 0x${want.toString(16)}`);
    memory.write64(gpa, 0n);
  }
  if (got === expected && diffs.length === 0) return undefined;
  return `${c.id}\n  core:     ${got}\n  expected: ${expected}${diffs.length ? `\n  words: ${diffs.join("; ")}` : ""}\n  case: ${JSON.stringify(c)}`;
}

/** Runs every case through the core, one machine per MAXPHYADDR (x86) or one machine (arm64), TLB off. */
async function runX86(cases: X86ConformanceCase[]): Promise<string[]> {
  const vcpus = new Map<number, { memory: GuestMemory; vcpu: X86Vcpu }>();
  const failures: string[] = [];
  for (const c of cases) {
    const m = c.registers.maxphyaddr;
    let v = vcpus.get(m);
    if (v === undefined) {
      const machine = await createMachine({ arch: "x86_64", memoryBytes: Number(BigInt(c.ram.size)), ramBase: BigInt(c.ram.base), maxPhysAddrBits: m });
      v = { memory: machine.memory, vcpu: machine.vcpu(0) };
      v.vcpu.setTlbEnabled(false);
      vcpus.set(m, v);
    }
    const { vcpu } = v;
    const r = c.registers;
    const failure = replay(v.memory, c, x86Expected(c), () => {
      vcpu.setControl({ cr0: BigInt(r.cr0), cr3: BigInt(r.cr3), cr4: BigInt(r.cr4), efer: BigInt(r.efer), pkru: BigInt(r.pkru), rflags: BigInt(r.rflags) });
      return x86Outcome(vcpu.translate(BigInt(c.access.va), c.access.type, c.access.cpl === 3));
    });
    if (failure !== undefined) failures.push(failure);
  }
  return failures;
}

async function runArm64(cases: Arm64ConformanceCase[]): Promise<string[]> {
  const first = cases[0]!;
  const machine = await createMachine({ arch: "arm64", memoryBytes: Number(BigInt(first.ram.size)), ramBase: BigInt(first.ram.base) });
  const vcpu: Arm64Vcpu = machine.vcpu(0);
  vcpu.setTlbEnabled(false);
  const failures: string[] = [];
  for (const c of cases) {
    const r = c.registers;
    const failure = replay(machine.memory, c, armExpected(c), () => {
      vcpu.setSystemRegisters({
        ttbr0: BigInt(r.ttbr0), ttbr1: BigInt(r.ttbr1), tcr: BigInt(r.tcr), sctlr: BigInt(r.sctlr), hcr: BigInt(r.hcr),
        vttbr: 0n, vtcr: 0n, pan: r.pan === 1,
      });
      return armOutcome(vcpu.translate(BigInt(c.access.va), c.access.type, c.access.el === 0));
    });
    if (failure !== undefined) failures.push(failure);
  }
  return failures;
}

/** The line-format checks a consumer relies on; returns what is wrong with `line`, or []. */
function schemaProblems(line: Record<string, unknown>): string[] {
  const out: string[] = [];
  const hexOk = (v: unknown) => typeof v === "string" && /^0x[0-9a-f]+$/.test(v);
  if (line.schema !== CONFORMANCE_SCHEMA) out.push(`schema ${String(line.schema)}`);
  if (line.arch !== "x86_64" && line.arch !== "arm64") out.push("arch");
  if (typeof line.id !== "string" || typeof line.group !== "string") out.push("id/group");
  const ram = line.ram as Record<string, unknown>;
  if (!hexOk(ram?.base) || !hexOk(ram?.size)) out.push("ram");
  const tables = line.tables as { gpa: unknown; bytes: unknown }[];
  if (!Array.isArray(tables) || tables.length === 0) out.push("tables");
  else for (const t of tables) if (!hexOk(t.gpa) || typeof t.bytes !== "string" || !/^([0-9a-f]{2}){8}$/.test(t.bytes)) out.push(`table ${JSON.stringify(t)}`);
  const regs = line.registers as Record<string, unknown>;
  const names = line.arch === "x86_64" ? ["cr0", "cr3", "cr4", "efer", "pkru", "rflags"] : ["ttbr0", "ttbr1", "tcr", "sctlr", "hcr"];
  for (const n of names) if (!hexOk(regs?.[n])) out.push(`registers.${n}`);
  if (line.arch === "x86_64" && typeof regs?.maxphyaddr !== "number") out.push("registers.maxphyaddr");
  if (line.arch === "arm64" && regs?.pan !== 0 && regs?.pan !== 1) out.push("registers.pan");
  const access = line.access as Record<string, unknown>;
  if (!hexOk(access?.va) || !["read", "write", "fetch"].includes(access?.type as string)) out.push("access");
  if (line.arch === "x86_64" ? access?.cpl !== 0 && access?.cpl !== 3 : access?.el !== 0 && access?.el !== 1) out.push("access.cpl/el");
  const e = line.expect as Record<string, unknown>;
  if (!e || ("fault" in e) === ("pa" in e)) out.push("expect: exactly one of pa, fault");
  else if ("pa" in e && (!hexOk(e.pa) || typeof e.pageSize !== "number" || typeof e.level !== "number")) out.push("expect.pa");
  if (!Array.isArray(e?.writes)) out.push("expect.writes");
  return out;
}

describe("conformance suite", () => {
  const x86 = [...x86ConformanceCases()];
  const arm64 = [...arm64ConformanceCases()];

  it("enumerates tens of thousands of cases per architecture, with unique ids, in a stable order", () => {
    for (const cases of [x86, arm64]) {
      expect(cases.length).toBeGreaterThan(10_000);
      expect(cases.length).toBeLessThan(100_000);
      expect(new Set(cases.map((c) => c.id)).size).toBe(cases.length);
    }
    expect(x86.length).toBe(38_592);
    expect(arm64.length).toBe(34_890);
    expect(x86[0]!.id).toBe("x86/rights/4l-4K/L2=---/L1=---/wp0-smep0-smap0-ac0-nxe0/ad-none/cpl0-read");
    expect(arm64.at(-1)!.id).toBe("arm64/regions/mmu-off/high/el0-fetch");
    const again = x86ConformanceCases().next().value as X86ConformanceCase;
    expect(JSON.stringify(again)).toBe(JSON.stringify(x86[0]));
  });

  it("writes every case in the line format (schema, hex fields, one outcome)", () => {
    const bad: string[] = [];
    for (const c of [...x86, ...arm64]) {
      const p = schemaProblems(c as unknown as Record<string, unknown>);
      if (p.length > 0 && bad.length < 5) bad.push(`${c.id}: ${p.join(", ")}`);
    }
    expect(bad).toEqual([]);
  });

  it("has faults and successes in every group (but all-fault not-present and invalid, all-success ignored), and A/D or AF/DBM writes", () => {
    for (const cases of [x86, arm64]) {
      const groups = new Map<string, { ok: number; fault: number; writes: number }>();
      for (const c of cases) {
        const g = groups.get(c.group) ?? { ok: 0, fault: 0, writes: 0 };
        if ("fault" in c.expect) g.fault++;
        else g.ok++;
        if (c.expect.writes.length > 0) g.writes++;
        groups.set(c.group, g);
      }
      for (const [name, g] of groups) {
        if (name !== "ignored") expect(g.fault, `${name} faults`).toBeGreaterThan(0);
        if (name !== "invalid" && name !== "not-present") expect(g.ok, `${name} successes`).toBeGreaterThan(0);
      }
      expect([...groups.values()].reduce((n, g) => n + g.writes, 0)).toBeGreaterThan(1000);
    }
  });

  it("the replay notices a wrong expectation: a translation, a fault, a missing write", async () => {
    const ok = x86.find((c) => "pa" in c.expect && c.expect.writes.length > 0)!;
    const fault = arm64.find((c) => "fault" in c.expect)!;
    const armWrite = arm64.find((c) => c.expect.writes.length > 0)!;
    const wrongPa = { ...ok, expect: { ...ok.expect, pa: "0x1000" } } as X86ConformanceCase;
    const noWrites = { ...ok, expect: { ...ok.expect, writes: [] } } as X86ConformanceCase;
    const wrongFsc = { ...fault, expect: { ...fault.expect, fault: { ...(fault.expect as { fault: object }).fault, fsc: 0x3f } } } as Arm64ConformanceCase;
    const noArmWrites = { ...armWrite, expect: { ...armWrite.expect, writes: [] } } as Arm64ConformanceCase;
    expect((await runX86([ok, wrongPa, noWrites, ok])).length).toBe(2);
    expect((await runArm64([fault, wrongFsc, noArmWrites, armWrite])).length).toBe(2);
  });

  it("the wasm core agrees with every x86_64 case: translation, #PF/#GP error code and level, A/D writes", async () => {
    const failures = await runX86(x86);
    expect(failures.slice(0, 5), `${failures.length} of ${x86.length} cases disagree`).toEqual([]);
  }, 120_000);

  it("the wasm core agrees with every arm64 case: translation, FSC and level, AF/DBM writes", async () => {
    const failures = await runArm64(arm64);
    expect(failures.slice(0, 5), `${failures.length} of ${arm64.length} cases disagree`).toEqual([]);
  }, 120_000);
});

describe("vmmu conformance", () => {
  let tmp: string;
  beforeAll(() => {
    if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vmmu-conformance-"));
  });
  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const vmmu = (args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, "conformance", ...args], { encoding: "utf8", maxBuffer: 256 * MiB });
    if (r.error) throw r.error;
    return r;
  };

  it("prints its usage with --help and exits 0", () => {
    const r = vmmu(["--help"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("vmmu conformance --arch x86_64|arm64 [--out FILE]");
  });

  it.each([
    [["--arch", "riscv"], "vmmu: --arch must be x86_64 or arm64, got 'riscv'"],
    [[], "vmmu: --arch is required (x86_64 or arm64)"],
    [["--arch", "x86_64", "--bogus"], "vmmu: unknown option '--bogus'"],
    [["--arch", "x86_64", "--out"], "vmmu: --out needs a value"],
  ])("refuses %j with one vmmu: line and exit 2", (args, message) => {
    const r = vmmu(args);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(`${message}\n`);
  });

  it("refuses an --out it cannot create with one vmmu: line and exit 2", () => {
    const r = vmmu(["--arch", "x86_64", "--out", path.join(tmp, "no-such-dir", "x.jsonl")]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^vmmu: --out .*no-such-dir.*ENOENT[^\n]*\n$/);
  });

  it("ends quietly with 0 when the reader closes stdout early (| head)", async () => {
    const child = spawn(process.execPath, [CLI, "conformance", "--arch", "x86_64"], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
    const firstChunk = await new Promise<string>((resolve) => child.stdout.once("data", (d: Buffer) => resolve(d.toString())));
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(firstChunk.startsWith(`{"schema":"${CONFORMANCE_SCHEMA}"`)).toBe(true);
    expect(code).toBe(0);
    expect(stderr).toBe("");
  }, 60_000);

  it("writes one line per x86_64 case to --out, the first one in the schema, and the counts on stderr; a consumer replays them", async () => {
    const file = path.join(tmp, "x86.jsonl");
    const r = vmmu(["--arch", "x86_64", "--out", file]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("");
    const text = fs.readFileSync(file, "utf8");
    const lines = text.split("\n");
    expect(lines.pop()).toBe("");
    expect(lines.length).toBe([...x86ConformanceCases()].length);
    const first = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(schemaProblems(first)).toEqual([]);
    expect(first.arch).toBe("x86_64");
    expect(r.stderr).toMatch(new RegExp(`^vmmu conformance: ${lines.length} x86_64 cases → .*x86\\.jsonl \\(rights 18432, .*canonical 42\\)\\n$`));
    expect(await consume(lines)).toBeGreaterThan(30);
  }, 60_000);

  it("writes the arm64 cases to stdout without --out; a consumer replays them", async () => {
    const r = vmmu(["--arch", "arm64"]);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines.pop()).toBe("");
    expect(lines.length).toBe([...arm64ConformanceCases()].length);
    expect(schemaProblems(JSON.parse(lines[0]!) as Record<string, unknown>)).toEqual([]);
    expect(r.stderr).toMatch(/^vmmu conformance: 34890 arm64 cases \(permissions 12288, .*regions 804\)\n$/);
    expect(await consume(lines)).toBeGreaterThan(30);
  }, 60_000);
});

/** Little-endian hex of a 64-bit value, as a consumer would write it. */
const leHex = (v: bigint): string => Array.from({ length: 8 }, (_, i) => ((v >> BigInt(8 * i)) & 0xffn).toString(16).padStart(2, "0")).join("");

/**
 * A consumer that knows only the line format: for a spread of lines, RAM from `ram`, the
 * table bytes copied in as bytes, registers set from their hex strings, the access performed,
 * and the outcome and every table word compared with `expect`. No builder, no case types.
 * Returns the number of lines replayed.
 */
async function consume(lines: string[]): Promise<number> {
  const machines = new Map<string, Awaited<ReturnType<typeof createMachine>>>();
  let replayed = 0;
  for (const [i, text] of lines.entries()) {
    if (i % 997 !== 0 && i !== lines.length - 1) continue;
    const c = JSON.parse(text);
    const key = `${c.arch} ${c.ram.base} ${c.ram.size} ${c.registers.maxphyaddr ?? ""}`;
    let m = machines.get(key);
    if (m === undefined) {
      m = await createMachine({
        arch: c.arch, memoryBytes: Number(BigInt(c.ram.size)), ramBase: BigInt(c.ram.base),
        ...(c.arch === "x86_64" ? { maxPhysAddrBits: c.registers.maxphyaddr } : {}),
      });
      m.vcpu(0).setTlbEnabled(false);
      machines.set(key, m);
    }
    const mem = m.memory;
    for (const t of c.tables) mem.write(BigInt(t.gpa), Uint8Array.from(t.bytes.match(/../g), (h: string) => parseInt(h, 16)));
    const reg = (name: string): bigint => BigInt(c.registers[name]);
    let got: Record<string, unknown>;
    if (c.arch === "x86_64") {
      const v = m.vcpu(0) as X86Vcpu;
      v.setControl({ cr0: reg("cr0"), cr3: reg("cr3"), cr4: reg("cr4"), efer: reg("efer"), pkru: reg("pkru"), rflags: reg("rflags") });
      got = v.translate(BigInt(c.access.va), c.access.type, c.access.cpl === 3);
    } else {
      const v = m.vcpu(0) as Arm64Vcpu;
      v.setSystemRegisters({ ttbr0: reg("ttbr0"), ttbr1: reg("ttbr1"), tcr: reg("tcr"), sctlr: reg("sctlr"), hcr: reg("hcr"), pan: c.registers.pan === 1 });
      got = v.translate(BigInt(c.access.va), c.access.type, c.access.el === 0);
    }
    const want = c.expect;
    if ("fault" in want) expect(got.fault, c.id).toMatchObject(want.fault);
    else expect({ pa: "0x" + (got.pa as bigint).toString(16), pageSize: got.pageSize, level: got.level }, c.id).toEqual({ pa: want.pa, pageSize: want.pageSize, level: want.level });
    for (const t of c.tables) {
      const write = want.writes.find((w: { gpa: string }) => w.gpa === t.gpa);
      const bytes = [...mem.read(BigInt(t.gpa), 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
      expect(bytes, `${c.id} ${t.gpa}`).toBe(write ? leHex(BigInt(write.after)) : t.bytes);
      mem.write(BigInt(t.gpa), new Uint8Array(8));
    }
    replayed++;
  }
  return replayed;
}

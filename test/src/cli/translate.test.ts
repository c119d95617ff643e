/**
 * `vmmu translate` end to end, through the bundled dist/cli.mjs, for x86_64
 * (Intel SDM Vol.3A §4.5–4.7) and arm64 (Arm ARM DDI 0487 D8 stage 1,
 * docs/arm64-walk-contract.md): argument errors, hand-built images above 1 GiB
 * (--image-base), the debugger view and the rights-checked walk, and real Linux
 * page tables in sparse 512 MiB images checked line by line against QEMU's gva2gpa.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Arm64Stage1Builder, createMachine, LINUX_TCR, X86PageTableBuilder } from "../../../src/index.js";
import { MemoryImage } from "../../../src/cli/image.js";
import {
  arm64VcpuOf, loadArm64Snapshot, loadX86Snapshot, vcpuOf, writeSparseImage, type Arm64RefRow, type Arm64Snapshot, type Arm64VcpuState, type TablePage, type X86Snapshot, type X86VcpuState, describeRealworld,
} from "../../helpers/realworld.js";
import { verbose } from "../../helpers/note.js";

const CLI = fileURLToPath(new URL("../../../dist/cli.mjs", import.meta.url));
const MiB = 1 << 20;
const PFERR = { P: 1, W: 2, U: 4, FETCH: 16 };

interface Run { code: number | null; stdout: string; stderr: string; lines: Record<string, unknown>[] }

function vmmu(args: string[], input?: string): Run {
  const r = spawnSync(process.execPath, [CLI, "translate", ...args], { input, encoding: "utf8", maxBuffer: 256 * MiB });
  if (r.error) throw r.error;
  const lines = r.stdout.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>);
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, lines };
}

const hex = (v: bigint): string => "0x" + v.toString(16);
const regs = (v: X86VcpuState, cr3 = v.cr3): string[] =>
  ["--cr3", hex(cr3), "--cr0", hex(v.cr0), "--cr4", hex(v.cr4), "--efer", hex(v.efer)];

/** What the CLI must print for a QEMU row: the address, or any #PF/#GP when QEMU says unmapped. */
function agrees(line: Record<string, unknown>, va: bigint, gpa: bigint | null): boolean {
  if (line.va !== hex(va)) return false;
  if (gpa === null) return line.pa === null && line.fault !== null;
  return line.pa === hex(gpa) && line.fault === null;
}

/** A sparse image file in the test's temporary directory (see writeSparseImage). */
function sparseImage(name: string, pages: TablePage[], size: number, base = 0n): string {
  const file = path.join(tmp, `${name}.img`);
  writeSparseImage(file, pages, size, base);
  return file;
}

let tmp: string;
beforeAll(() => {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vmmu-translate-"));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe("vmmu translate argument errors", () => {
  const image = (): string => {
    const f = path.join(tmp, "tiny.img");
    fs.writeFileSync(f, new Uint8Array(8192));
    return f;
  };
  const cases: [string, () => string[], RegExp][] = [
    ["a missing --cr3", () => ["--image", image()], /--cr3/],
    ["a missing --image", () => ["--cr3", "0x1000"], /--image/],
    ["a bad hex value", () => ["--image", image(), "--cr3", "0x12g4"], /--cr3.*0x12g4/],
    ["a value wider than 64 bits", () => ["--image", image(), "--cr3", "0x1" + "0".repeat(16)], /--cr3/],
    ["an unknown flag", () => ["--image", image(), "--cr3", "0", "--bogus"], /unknown option '--bogus'/],
    ["a nonexistent image", () => ["--image", path.join(tmp, "nope.img"), "--cr3", "0"], /cannot open image.*ENOENT/],
    ["an arch other than x86_64", () => ["--arch", "aarch64", "--image", image(), "--cr3", "0"], /aarch64/],
    ["an unaligned --image-base", () => ["--image", image(), "--cr3", "0", "--image-base", "0x40000800"], /image-base.*aligned/],
    ["a bad --access", () => ["--image", image(), "--cr3", "0", "--access", "exec"], /--access/],
    ["--user without --access", () => ["--image", image(), "--cr3", "0", "--user"], /--user/],
    ["a flag without its value", () => ["--image", image(), "--cr3"], /--cr3 needs a value/],
    ["paging without long mode", () => ["--image", image(), "--cr3", "0", "--efer", "0"], /long mode/],
    ["a reserved CR4 bit", () => ["--image", image(), "--cr3", "0", "--cr4", "0x8020"], /CR4 bit 15 is reserved/],
    ["CR4 bit 63", () => ["--image", image(), "--cr3", "0", "--cr4", "0x8000000000000020"], /CR4 bit 63 is reserved/],
    ["a CR0 bit above 31", () => ["--image", image(), "--cr3", "0", "--cr0", "0x180010001"], /CR0 bit 32 is reserved/],
    ["CR0.NW without CD", () => ["--image", image(), "--cr3", "0", "--cr0", "0xa0010001"], /CR0\.NW = 1 needs CR0\.CD = 1/],
    ["CR0.PG without PE", () => ["--image", image(), "--cr3", "0", "--cr0", "0x80010000"], /CR0\.PG = 1 needs CR0\.PE = 1/],
  ];
  for (const [what, args, message] of cases) {
    it(`exits 2 with one line on stderr for ${what}`, () => {
      const r = vmmu(args(), "");
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^vmmu translate: [^\n]+\n$/);
      expect(r.stderr).toMatch(message);
    });
  }
});

describe("vmmu translate on a hand-built image at gpa 0x40000000", () => {
  const BASE = 0x4000_0000n;
  let file: string;
  let root: bigint;

  beforeAll(async () => {
    const machine = await createMachine({ arch: "x86_64", memoryBytes: 4 * MiB, ramBase: BASE, maxPhysAddrBits: 52 });
    const builder = new X86PageTableBuilder(machine.memory, { levels: 4, tableBase: BASE, tableLimit: BASE + 0x10_0000n });
    builder.map(0x40_0000n, BASE + 0x20_0000n, "4K", { write: false, user: true });
    builder.map(0xffff_ffff_8100_0000n, BASE + 0x20_0000n, "2M", { write: true, user: false, global: true });
    root = builder.root;
    file = path.join(tmp, "based.img");
    fs.writeFileSync(file, machine.memory.read(BASE, 4 * MiB));
  });

  it("translates VAs given as arguments, 4K and 2M, in the debugger view", () => {
    const r = vmmu(["--arch", "x86_64", "--image", file, "--image-base", hex(BASE), "--cr3", hex(root),
      "0x400123", "ffffffff81012345", "0X00000000FFFFFFFF8100ABCD"]);
    expect(r.code).toBe(0);
    expect(r.lines).toEqual([
      { va: "0x400123", pa: "0x40200123", pageSize: 4096, fault: null },
      { va: "0xffffffff81012345", pa: "0x40212345", pageSize: 2 * MiB, fault: null },
      { va: "0xffffffff8100abcd", pa: "0x4020abcd", pageSize: 2 * MiB, fault: null },
    ]);
  });

  it("reports not-present, non-canonical and malformed addresses, and exits 2 (an input error) for the malformed one", () => {
    const r = vmmu(["--image", file, "--image-base", hex(BASE), "--cr3", hex(root)], "0x401000\n0x800000000000\nnot-an-address\n\n0x400000\n");
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([
      { va: "0x401000", pa: null, pageSize: null, fault: { vector: 14, errorCode: 0, level: 1, kind: "page-fault" } },
      { va: "0x800000000000", pa: null, pageSize: null, fault: { vector: 13, errorCode: 0, level: 0, kind: "general-protection" } },
      { va: "not-an-address", pa: null, pageSize: null, fault: null, error: "not a 64-bit hex address" },
      { va: "0x400000", pa: "0x40200000", pageSize: 4096, fault: null },
    ]);
  });

  it("checks rights with --access: a user write to a read-only user page and to a kernel page fault with P, W and U", () => {
    const r = vmmu(["--image", file, "--image-base", hex(BASE), "--cr3", hex(root), "--access", "write", "--user",
      "0x400000", "0xffffffff81000000"]);
    expect(r.lines.map((l) => l.fault)).toEqual([
      { vector: 14, errorCode: PFERR.P | PFERR.W | PFERR.U, level: 1, kind: "page-fault" },
      { vector: 14, errorCode: PFERR.P | PFERR.W | PFERR.U, level: 2, kind: "page-fault" },
    ]);
    const read = vmmu(["--image", file, "--image-base", hex(BASE), "--cr3", hex(root), "--access", "read", "--user", "0x400000"]);
    expect(read.lines[0]).toMatchObject({ pa: "0x40200000", fault: null });
  });

  it("never writes accessed or dirty bits into the image", () => {
    const before = fs.readFileSync(file);
    vmmu(["--image", file, "--image-base", hex(BASE), "--cr3", hex(root), "--access", "write", "0xffffffff81000000"]);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
  });

  it("gives an abort line when CR3 lies below the image base", () => {
    const r = vmmu(["--image", file, "--image-base", hex(BASE), "--cr3", "0x1000", "0x400000"]);
    expect(r.code).toBe(0);
    expect(r.lines).toEqual([{ va: "0x400000", pa: null, pageSize: null, fault: { vector: -1, errorCode: 0, level: 4, kind: "abort", gpa: "0x1000" } }]);
  });
});

describeRealworld("x86_64", "vmmu translate over real Linux page tables (sparse 512 MiB image)", () => {
  let snap0: X86Snapshot;
  let snap1: X86Snapshot;
  const files: Record<string, string> = {};


  beforeAll(() => {
    snap0 = loadX86Snapshot("nokaslr_4lvl_snap0");
    snap1 = loadX86Snapshot("nokaslr_4lvl_snap1");
    files.snap0 = sparseImage("snap0", snap0.pages, Number(snap0.ramSize));
    files.snap1 = sparseImage("snap1", snap1.pages, Number(snap1.ramSize));
  });

  for (const [snapName, cpu] of [["snap0", 0], ["snap0", 1], ["snap1", 0]] as const) {
    it(`prints QEMU's gva2gpa answer for every reference VA of ${snapName} vCPU ${cpu}, read from stdin`, () => {
      const snap = snapName === "snap0" ? snap0 : snap1;
      const rows = snap.refs.filter((r) => r.cpu === cpu);
      const r = vmmu(["--arch", "x86_64", "--image", files[snapName]!, ...regs(vcpuOf(snap, cpu))], rows.map((x) => hex(x.va)).join("\n") + "\n");
      expect(r.code).toBe(0);
      expect(r.lines).toHaveLength(rows.length);
      const wrong = rows.filter((row, i) => !agrees(r.lines[i]!, row.va, row.gpa));
      verbose(`vmmu translate ${snapName} cpu${cpu}: ${rows.length - wrong.length}/${rows.length} lines agree with QEMU`);
      expect(wrong.map((w) => hex(w.va))).toEqual([]);
    });
  }

  it("handles 100k stdin lines in one run", () => {
    const rows = snap0.refs.filter((r) => r.cpu === 1);
    const copies = Math.ceil(100_000 / rows.length);
    const input = Array.from({ length: copies }, () => rows.map((x) => x.va.toString(16)).join("\n")).join("\n");
    const t0 = performance.now();
    const r = vmmu(["--image", files.snap0!, ...regs(vcpuOf(snap0, 1))], input);
    const ms = performance.now() - t0;
    verbose(`vmmu translate: ${r.lines.length} lines in ${ms.toFixed(0)} ms`);
    expect(r.code).toBe(0);
    expect(r.lines).toHaveLength(copies * rows.length);
    const last = rows.length * (copies - 1);
    expect(rows.every((row, i) => agrees(r.lines[last + i]!, row.va, row.gpa))).toBe(true);
  });

  it("refuses a user-mode write to the kernel text with a #PF carrying P, W and U", () => {
    const kernel = vcpuOf(snap0, 1);
    const r = vmmu(["--image", files.snap0!, ...regs(kernel), "--access", "write", "--user", "0xffffffff81000000"]);
    const fault = r.lines[0]!.fault as { vector: number; errorCode: number };
    expect(fault.vector).toBe(14);
    expect(fault.errorCode & (PFERR.P | PFERR.W | PFERR.U)).toBe(PFERR.P | PFERR.W | PFERR.U);
    const peek = vmmu(["--image", files.snap0!, ...regs(kernel), "0xffffffff81000000"]);
    expect(peek.lines[0]).toMatchObject({ pa: "0x1000000", pageSize: 2 * MiB, fault: null });
  });

  it("gives an abort line for a truncated image whose PML4 lies beyond the end of the file", () => {
    const v = vcpuOf(snap0, 1);
    const file = sparseImage("truncated", snap0.pages, Number(v.cr3));
    const r = vmmu(["--image", file, ...regs(v), "0xffffffff81000000", "0x0"]);
    expect(r.code).toBe(0);
    expect(r.lines).toEqual([
      { va: "0xffffffff81000000", pa: null, pageSize: null, fault: { vector: -1, errorCode: 0, level: 4, kind: "abort", gpa: hex(v.cr3 + 511n * 8n) } },
      { va: "0x0", pa: null, pageSize: null, fault: { vector: -1, errorCode: 0, level: 4, kind: "abort", gpa: hex(v.cr3) } },
    ]);
  });

  it("reads a file cut mid-page as zero-padded: a PML4 entry past the cut is not present", () => {
    const v = vcpuOf(snap0, 1);
    const file = sparseImage("cut", snap0.pages, Number(v.cr3) + 0x800);
    const r = vmmu(["--image", file, ...regs(v), "0xffffffff81000000"]);
    expect(r.lines[0]).toEqual({ va: "0xffffffff81000000", pa: null, pageSize: null, fault: { vector: 14, errorCode: 0, level: 4, kind: "page-fault" } });
  });

  it("pages an 8 GiB sparse image in lazily: one walk reads only the frames it touches", async () => {
    const v = vcpuOf(snap0, 1);
    const file = sparseImage("8g", snap0.pages, 8 * 1024 * MiB);
    const image = MemoryImage.open(file, 0n);
    try {
      const machine = await createMachine({
        arch: "x86_64", memoryBytes: image.memoryBytes, maxPhysAddrBits: 52, eagerBytes: 0n, populate: image.populate,
      });
      image.attach(machine.memory);
      machine.vcpu(0).setControl({ cr0: v.cr0, cr3: v.cr3, cr4: v.cr4, efer: v.efer });
      expect(machine.vcpu(0).peek(0xffff_ffff_8100_0123n)).toEqual({ pa: 0x100_0123n, pageSize: 2 * MiB, level: 2 });
      expect(machine.vcpu(0).peek(0x1_0000_0000n)).toMatchObject({ fault: { vector: 14 } });
      expect(image.framesRead).toBeLessThanOrEqual(6);
      expect(machine.memory.backedFrames()).toBeLessThanOrEqual(6);
      const reads = image.framesRead;
      machine.vcpu(0).peek(0xffff_ffff_8100_0000n);
      expect(image.framesRead).toBe(reads);
    } finally {
      image.close();
    }
  });

  it("translates the same tables relocated to gpa 0x40000000 with --image-base", () => {
    const BASE = 0x4000_0000n;
    const ADDR = 0x000f_ffff_ffff_f000n;
    const moved = snap1.pages.map((p) => {
      const bytes = new Uint8Array(p.bytes);
      const dv = new DataView(bytes.buffer);
      for (let o = 0; o < 4096; o += 8) {
        const e = dv.getBigUint64(o, true);
        if ((e & 1n) !== 0n) dv.setBigUint64(o, (e & ~ADDR) | (((e & ADDR) + BASE) & ADDR), true);
      }
      return { pa: p.pa, bytes };
    });
    const file = sparseImage("relocated", moved, Number(snap1.ramSize));
    const v = vcpuOf(snap1, 0);
    const rows = snap1.refs.filter((r) => r.cpu === 0);
    const r = vmmu(["--image", file, "--image-base", hex(BASE), ...regs(v, v.cr3 + BASE)], rows.map((x) => hex(x.va)).join("\n"));
    expect(r.lines).toHaveLength(rows.length);
    const wrong = rows.filter((row, i) => !agrees(r.lines[i]!, row.va, row.gpa === null ? null : row.gpa + BASE));
    expect(wrong.map((w) => hex(w.va))).toEqual([]);
  });
});

const arm64Regs = (v: Pick<Arm64VcpuState, "ttbr0" | "ttbr1" | "tcr" | "sctlr">): string[] =>
  ["--ttbr0", hex(v.ttbr0), "--ttbr1", hex(v.ttbr1), "--tcr", hex(v.tcr), "--sctlr", hex(v.sctlr)];

/** `args` with the values of the flags in `over` replaced (or appended); an undefined value drops the flag. */
function withFlags(args: string[], over: Record<string, string | undefined>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i += 2) if (!(args[i]! in over)) out.push(args[i]!, args[i + 1]!);
  for (const [flag, value] of Object.entries(over)) if (value !== undefined) out.push(flag, value);
  return out;
}

/** A stage-1 fault line's "fault" field (stage 2 is off in the CLI, so s1ptw is always false). */
const s1Fault = (kind: string, fsc: number, level: number, write = false) =>
  ({ stage: 1, fsc, level, kind, s1ptw: false, write });

describe("vmmu translate --arch arm64 argument errors", () => {
  const image = (): string => {
    const f = path.join(tmp, "tiny-arm64.img");
    fs.writeFileSync(f, new Uint8Array(8192));
    return f;
  };
  const arm = (over: Record<string, string | undefined> = {}, ...more: string[]): string[] => [
    ...withFlags(["--arch", "arm64", "--image", image(), "--image-base", "0x40000000", "--ttbr0", "0", "--ttbr1", "0", "--tcr", hex(LINUX_TCR)], over),
    ...more,
  ];
  const cases: [string, () => string[], RegExp][] = [
    ["an unknown --arch", () => arm({ "--arch": "riscv64" }), /--arch 'riscv64' is not supported \(x86_64, arm64 are\)/],
    ["an x86-only flag with arm64", () => arm({ "--cr3": "0x1000" }), /--cr3 is an option of --arch x86_64, not arm64/],
    ["--user with arm64", () => arm({}, "--user"), /--user is an option of --arch x86_64.*--el 0/],
    ["an arm64-only flag with x86_64", () => ["--image", image(), "--cr3", "0", "--ttbr0", "0"], /--ttbr0 is an option of --arch arm64, not x86_64/],
    ["--el with --arch x86_64", () => ["--arch", "x86_64", "--image", image(), "--cr3", "0", "--el", "0"], /--el is an option of --arch arm64/],
    ["--el 2", () => arm({ "--el": "2" }), /--el must be 0 or 1, not '2'/],
    ["--pan 2", () => arm({ "--pan": "2" }), /--pan must be 0 or 1, not '2'/],
    ["a bad hex --ttbr1", () => arm({ "--ttbr1": "0xffff0000zz" }), /--ttbr1: '0xffff0000zz' is not a 64-bit hex number/],
    ["a missing --image-base", () => arm({ "--image-base": undefined }), /--image-base HEX is required.*0x40000000/],
    ["a missing --tcr", () => arm({ "--tcr": undefined }), /--tcr HEX is required/],
    ["a missing --ttbr0", () => arm({ "--ttbr0": undefined }), /--ttbr0 HEX is required/],
    ["a bad --access", () => arm({ "--access": "exec" }), /--access must be read, write or fetch/],
    ["an image beyond 2^48", () => arm({ "--image-base": "0xfffffffff000" }), /exceeds 2\^maxPhysAddrBits/],
  ];
  for (const [what, args, message] of cases) {
    it(`exits 2 with one line on stderr for ${what}`, () => {
      const r = vmmu(args(), "");
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).toMatch(/^vmmu translate: [^\n]+\n$/);
      expect(r.stderr).toMatch(message);
    });
  }

  it("lists both architectures in --help, with what --el and --pan mean without --access", () => {
    const r = spawnSync(process.execPath, [CLI, "translate", "--help"], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--arch arm64 --image FILE --image-base HEX --ttbr0 HEX --ttbr1 HEX --tcr HEX/);
    expect(r.stdout).toMatch(/--el 0\|1 and --pan 0\|1 alone make it\s+a debugger read at that EL/);
  });
});

describe("vmmu translate --arch arm64 on a hand-built image at gpa 0x40000000", () => {
  const BASE = 0x4000_0000n;
  const KTEXT = 0xffff_8000_0820_0000n;
  let file: string;
  let args: string[];

  beforeAll(async () => {
    const machine = await createMachine({ arch: "arm64", memoryBytes: 4 * MiB, ramBase: BASE });
    const user = new Arm64Stage1Builder(machine.memory, { tableBase: BASE, tableLimit: BASE + 0x8_0000n, tsz: 16 });
    const kernel = new Arm64Stage1Builder(machine.memory, { tableBase: BASE + 0x8_0000n, tableLimit: BASE + 0x10_0000n, tsz: 16 });
    user.map(0x40_0000n, BASE + 0x20_0000n, "4K", { el0: true, readOnly: true, pxn: true });
    user.map(0x60_0000n, BASE + 0x20_1000n, "4K", { el0: true, readOnly: true, dbm: true, af: false, uxn: true, pxn: true });
    kernel.map(KTEXT, BASE + 0x20_0000n, "2M", { readOnly: true, uxn: true });
    file = path.join(tmp, "arm64-based.img");
    fs.writeFileSync(file, machine.memory.read(BASE, 4 * MiB));
    args = ["--arch", "arm64", "--image", file, "--image-base", hex(BASE), ...arm64Regs({ ttbr0: user.ttbr(7), ttbr1: kernel.ttbr(0), tcr: LINUX_TCR, sctlr: 1n })];
  });

  it("translates 4K pages, 2M blocks and top-byte-tagged VAs in the debugger view (EL1, PAN=0)", () => {
    const r = vmmu([...args, "0x400123", "ffff800008212345", "0x5a00000000400123", "0x3CFF800008212345"]);
    expect(r.code).toBe(0);
    expect(r.lines).toEqual([
      { va: "0x400123", pa: "0x40200123", pageSize: 4096, fault: null },
      { va: "0xffff800008212345", pa: "0x40212345", pageSize: 2 * MiB, fault: null },
      { va: "0x5a00000000400123", pa: "0x40200123", pageSize: 4096, fault: null },
      { va: "0x3cff800008212345", pa: "0x40212345", pageSize: 2 * MiB, fault: null },
    ]);
  });

  it("reports invalid descriptors and VAs outside both TTBR ranges as translation faults with their level", () => {
    const r = vmmu(args, "0x401000\n0x1000000000000\nnot-an-address\n0xffff008000000000\n");
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([
      { va: "0x401000", pa: null, pageSize: null, fault: s1Fault("translation", 0x07, 3) },
      { va: "0x1000000000000", pa: null, pageSize: null, fault: s1Fault("translation", 0x04, 0) },
      { va: "not-an-address", pa: null, pageSize: null, fault: null, error: "not a 64-bit hex address" },
      { va: "0xffff008000000000", pa: null, pageSize: null, fault: s1Fault("translation", 0x04, 0) },
    ]);
  });

  it("gives a debugger read at EL0 with --el 0 (no kernel VA under E0PD1) and at EL1 with PAN with --pan 1", () => {
    const el0 = vmmu([...args, "--el", "0", "0x400000", hex(KTEXT)]);
    expect(el0.lines.map((l) => l.fault ?? l.pa)).toEqual(["0x40200000", s1Fault("translation", 0x04, 0)]);
    const pan = vmmu([...args, "--pan", "1", "0x400000", hex(KTEXT)]);
    expect(pan.lines.map((l) => l.fault ?? l.pa)).toEqual([s1Fault("permission", 0x0f, 3), "0x40200000"]);
  });

  it("checks the rights of --access at --el: read-only, DBM, AF=0 under TCR.HA, UXN and PXN", () => {
    const run = (more: string[], va: string) => vmmu([...args, ...more, va]).lines[0]!;
    expect(run(["--access", "write", "--el", "0"], "0x400000").fault).toEqual(s1Fault("permission", 0x0f, 3, true));
    expect(run(["--access", "write", "--el", "0"], "0x600008")).toMatchObject({ pa: "0x40201008", fault: null });
    expect(run(["--access", "write"], hex(KTEXT)).fault).toEqual(s1Fault("permission", 0x0e, 2, true));
    expect(run(["--access", "fetch", "--el", "0"], "0x400000")).toMatchObject({ pa: "0x40200000" });
    expect(run(["--access", "fetch", "--el", "0"], "0x600000").fault).toEqual(s1Fault("permission", 0x0f, 3));
    expect(run(["--access", "fetch", "--el", "1"], "0x400000").fault).toEqual(s1Fault("permission", 0x0f, 3));
    expect(run(["--access", "fetch"], hex(KTEXT))).toMatchObject({ pa: "0x40200000", pageSize: 2 * MiB });
    expect(run(["--access", "read", "--el", "1", "--pan", "1"], "0x400000").fault).toEqual(s1Fault("permission", 0x0f, 3));
  });

  it("never writes the Access flag or dirty state into the image", () => {
    const before = fs.readFileSync(file);
    const r = vmmu([...args, "--access", "write", "--el", "0", "0x600000", "0x600800"]);
    expect(r.lines.every((l) => l.fault === null)).toBe(true);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
  });

  it("translates VA = PA with --sctlr 0 (stage 1 off)", () => {
    const r = vmmu([...withFlags(args, { "--sctlr": "0" }), "0x40001234", "0xffff000000000000"]);
    expect(r.lines).toEqual([
      { va: "0x40001234", pa: "0x40001234", pageSize: 4096, fault: null },
      { va: "0xffff000000000000", pa: null, pageSize: null, fault: s1Fault("address-size", 0x00, 0) },
    ]);
  });

  it("takes any TCR a PE accepts: a 64K or reserved TG walks as 4K, T0SZ 12 as 16 and T1SZ 63 as 39", () => {
    const va = ["0x400123", "0x1000000000000", hex(KTEXT), "0xffffffffff800000"];
    const want = vmmu([...args, ...va]).lines;
    for (const tcr of [LINUX_TCR | (1n << 14n), LINUX_TCR & ~(3n << 30n), (LINUX_TCR & ~0x3fn) | 12n]) {
      const r = vmmu([...withFlags(args, { "--tcr": hex(tcr) }), ...va]);
      expect(r.code, hex(tcr)).toBe(0);
      expect(r.lines).toEqual(want);
    }
    const t1 = vmmu([...withFlags(args, { "--tcr": hex(LINUX_TCR | (0x3fn << 16n)) }), "0xffffffffff800000", hex(KTEXT)]);
    expect(t1.lines.map((l) => l.fault)).toEqual([s1Fault("translation", 0x06, 2), s1Fault("translation", 0x04, 0)]);
  });

  it("gives an abort line (fsc 0x14 + level) when a TTBR points below the image base", () => {
    const r = vmmu([...withFlags(args, { "--ttbr0": "0x1000" }), "0x400000"]);
    expect(r.code).toBe(0);
    expect(r.lines).toEqual([{ va: "0x400000", pa: null, pageSize: null, fault: s1Fault("abort", 0x14, 0) }]);
  });
});

describeRealworld("arm64", "vmmu translate --arch arm64 over real Linux page tables (sparse 512 MiB image at 0x40000000)", () => {
  const snaps: Record<string, Arm64Snapshot> = {};
  const files: Record<string, string> = {};

  /** The CLI flags giving QEMU's regime for a row: nothing for EL1 PAN=0 (the default), else --el / --pan. */
  const regimeFlags = (row: Pick<Arm64RefRow, "el" | "pan">): string[] =>
    row.el === 0 ? ["--el", "0"] : row.pan ? ["--pan", "1"] : [];
  const imageArgs = (snap: string, cpu: number): string[] =>
    ["--arch", "arm64", "--image", files[snap]!, "--image-base", hex(snaps[snap]!.ramBase), ...arm64Regs(arm64VcpuOf(snaps[snap]!, cpu))];

  beforeAll(() => {
    for (const name of ["nokaslr_snap0", "nokaslr_snap1"]) {
      const snap = (snaps[name] = loadArm64Snapshot(name));
      files[name] = sparseImage(`arm64-${name}`, snap.pages, Number(snap.ramSize), snap.ramBase);
    }
  });

  const groups: [string, number, "live" | "override"][] = [];
  for (const name of ["nokaslr_snap0", "nokaslr_snap1"]) {
    for (const cpu of [0, 1]) for (const pass of ["live", "override"] as const) groups.push([name, cpu, pass]);
  }
  for (const [name, cpu, pass] of groups) {
    it(`prints QEMU's gva2gpa answer for every ${pass} reference VA of ${name} vCPU ${cpu}, read from stdin`, () => {
      const rows = snaps[name]!.refs.filter((r) => r.cpu === cpu && (r.pstateOverride !== null) === (pass === "override"));
      const flags = regimeFlags(rows[0]!);
      expect(rows.every((r) => r.el === rows[0]!.el && r.pan === rows[0]!.pan)).toBe(true);
      const r = vmmu([...imageArgs(name, cpu), ...flags], rows.map((x) => hex(x.va)).join("\n") + "\n");
      expect(r.code).toBe(0);
      expect(r.lines).toHaveLength(rows.length);
      const wrong = rows.filter((row, i) => !agrees(r.lines[i]!, row.va, row.gpa));
      const mapped = r.lines.filter((l) => l.pa !== null).length;
      verbose(`vmmu translate --arch arm64 ${name} cpu${cpu} ${pass} (${flags.join(" ") || "EL1 PAN=0"}): `
        + `${rows.length - wrong.length}/${rows.length} lines agree with QEMU, ${mapped} mapped`);
      expect(wrong.map((w) => hex(w.va))).toEqual([]);
    });
  }

  it("gives QEMU's answers with --access read at the vCPU's EL and PAN (snap1 vCPU 1, EL1 PAN=1)", () => {
    const rows = snaps.nokaslr_snap1!.refs.filter((r) => r.cpu === 1 && r.pstateOverride === null);
    expect(rows.every((r) => r.el === 1 && r.pan)).toBe(true);
    const r = vmmu([...imageArgs("nokaslr_snap1", 1), "--access", "read", "--el", "1", "--pan", "1"], rows.map((x) => hex(x.va)).join("\n"));
    expect(r.lines).toHaveLength(rows.length);
    const wrong = rows.filter((row, i) => !agrees(r.lines[i]!, row.va, row.gpa));
    const refused = r.lines.filter((l) => (l.fault as { kind?: string } | null)?.kind === "permission").length;
    verbose(`vmmu translate --arch arm64 --access read --pan 1: ${rows.length - wrong.length}/${rows.length} agree, ${refused} permission faults`);
    expect(wrong.map((w) => hex(w.va))).toEqual([]);
    expect(refused).toBeGreaterThan(0);
  });

  it("refuses an EL1 write to read-only kernel memory and an EL0 read of a kernel address", () => {
    const args = imageArgs("nokaslr_snap0", 1);
    const write = vmmu([...args, "--access", "write", "0xffff800008051fff"]);
    expect(write.lines[0]!.fault).toMatchObject({ stage: 1, kind: "permission", write: true });
    const el0 = vmmu([...args, "--access", "read", "--el", "0", "0xffff800008051fff"]);
    expect(el0.lines[0]!.fault).toEqual(s1Fault("translation", 0x04, 0));
    const peek = vmmu([...args, "0xffff800008051fff"]);
    expect(peek.lines[0]).toEqual({ va: "0xffff800008051fff", pa: "0x40251fff", pageSize: 4096, fault: null });
  });

  it("gives abort lines (fsc 0x14 + level) for a truncated image whose tables lie beyond the end of the file", () => {
    const snap = snaps.nokaslr_snap0!;
    const v = arm64VcpuOf(snap, 1);
    const l0 = v.ttbr1 & 0xffff_ffff_f000n;
    const file = sparseImage("arm64-truncated", snap.pages, Number(l0 + 0x1000n - snap.ramBase), snap.ramBase);
    const r = vmmu(["--arch", "arm64", "--image", file, "--image-base", hex(snap.ramBase), ...arm64Regs(v),
      "0xffff800008051fff", "0x400000", "0xffff008000000000"]);
    expect(r.code).toBe(0);
    expect(r.lines).toEqual([
      { va: "0xffff800008051fff", pa: null, pageSize: null, fault: s1Fault("abort", 0x15, 1) },
      { va: "0x400000", pa: null, pageSize: null, fault: s1Fault("abort", 0x14, 0) },
      { va: "0xffff008000000000", pa: null, pageSize: null, fault: s1Fault("translation", 0x04, 0) },
    ]);
  });

  it("pages the image in lazily: one 4K walk reads one frame per level", async () => {
    const snap = snaps.nokaslr_snap0!;
    const v = arm64VcpuOf(snap, 1);
    const image = MemoryImage.open(files.nokaslr_snap0!, snap.ramBase);
    try {
      const machine = await createMachine({
        arch: "arm64", memoryBytes: image.memoryBytes, ramBase: snap.ramBase, eagerBytes: 0n, populate: image.populate,
      });
      image.attach(machine.memory);
      machine.vcpu(0).setSystemRegisters({ ttbr0: v.ttbr0, ttbr1: v.ttbr1, tcr: v.tcr, sctlr: v.sctlr, pan: false });
      expect(machine.vcpu(0).peek(0xffff_8000_0805_1fffn)).toEqual({ pa: 0x4025_1fffn, pageSize: 4096, level: 3 });
      expect(image.framesRead).toBe(4);
      expect(machine.memory.backedFrames()).toBe(4);
    } finally {
      image.close();
    }
  });
});

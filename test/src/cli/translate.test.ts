/**
 * `vmmu translate` end to end, through the bundled dist/cli.mjs: argument errors,
 * a hand-built image above 1 GiB (--image-base), the debugger view and the
 * rights-checked walk (Intel SDM Vol.3A §4.5–4.7), and real Linux page tables in a
 * sparse 512 MiB image checked line by line against QEMU's gva2gpa.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMachine, X86PageTableBuilder } from "../../../src/index.js";
import { MemoryImage } from "../../../src/cli/image.js";
import {
  loadX86Snapshot, realworldAvailable, vcpuOf, type TablePage, type X86Snapshot, type X86VcpuState,
} from "../../helpers/realworld.js";

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

  it("reports not-present, non-canonical and malformed addresses, and exits 1 for the malformed one", () => {
    const r = vmmu(["--image", file, "--image-base", hex(BASE), "--cr3", hex(root)], "0x401000\n0x800000000000\nnot-an-address\n\n0x400000\n");
    expect(r.code).toBe(1);
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

describe.skipIf(!realworldAvailable())("vmmu translate over real Linux page tables (sparse 512 MiB image)", () => {
  let snap0: X86Snapshot;
  let snap1: X86Snapshot;
  const files: Record<string, string> = {};

  function sparseImage(name: string, pages: TablePage[], size: number): string {
    const file = path.join(tmp, `${name}.img`);
    const fd = fs.openSync(file, "w");
    try {
      fs.ftruncateSync(fd, size);
      for (const p of pages) if (p.pa + 4096n <= BigInt(size)) fs.writeSync(fd, p.bytes, 0, 4096, Number(p.pa));
    } finally {
      fs.closeSync(fd);
    }
    return file;
  }

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
      console.log(`vmmu translate ${snapName} cpu${cpu}: ${rows.length - wrong.length}/${rows.length} lines agree with QEMU`);
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
    console.log(`vmmu translate: ${r.lines.length} lines in ${ms.toFixed(0)} ms`);
    expect(r.code).toBe(0);
    expect(r.lines).toHaveLength(copies * rows.length);
    const last = rows.length * (copies - 1);
    expect(rows.every((row, i) => agrees(r.lines[last + i]!, row.va, row.gpa))).toBe(true);
    expect(ms).toBeLessThan(10_000);
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

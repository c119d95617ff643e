// Loader for the real-Linux page-table fixtures (QEMU TCG snapshots of a Debian
// 6.1 kernel; see realworld/README.md next to the data): table pages, vCPU
// control or system registers, QEMU gva2gpa reference rows and (x86) `info tlb`
// leaf lists. The data lives outside the repository; VMMU_REALWORLD overrides
// its path.

import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as fs from "node:fs";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import type { GuestMemory } from "../../src/index.js";
import { describe, it } from "vitest";
import { skipped } from "./note.js";

/** Root of the fixture tree (holds x86_64/… and arm64/…). */
/**
 * Where the fixtures are: VMMU_REALWORLD, else `shared/realworld` beside the
 * repository (how CI lays it out), else the workplace's /work/shared.
 */
export const REALWORLD_DIR = process.env.VMMU_REALWORLD
  ?? [fileURLToPath(new URL("../../../shared/realworld", import.meta.url)), "/work/shared/realworld"].find((d) => existsSync(d))
  ?? "/work/shared/realworld";

/** The x86-64 snapshots with QEMU reference rows. */
export const X86_SNAPSHOTS = ["nokaslr_4lvl_snap0", "nokaslr_4lvl_snap1"] as const;

/** The arm64 snapshots (QEMU `-M virt`, RAM at 0x40000000) with QEMU reference rows. */
export const ARM64_SNAPSHOTS = ["nokaslr_snap0", "nokaslr_snap1"] as const;

const PAGE = 4096;
const RECORD = 8 + PAGE;

export interface X86VcpuState {
  cpu: number;
  cpl: number;
  cr0: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
}

/** One QEMU `gva2gpa` answer: gpa null means QEMU printed "Unmapped". */
export interface X86RefRow {
  va: bigint;
  gpa: bigint | null;
  cpu: number;
  cr3: bigint;
}

/** One page-table page of the snapshot. */
export interface TablePage {
  pa: bigint;
  bytes: Uint8Array;
}

export interface X86Snapshot {
  name: string;
  dir: string;
  ramBase: bigint;
  ramSize: bigint;
  vcpus: X86VcpuState[];
  pages: TablePage[];
  refs: X86RefRow[];
  /** meta.json verification block, as recorded by the capture scripts. */
  verification: { ref_total: number; agree_mapped: number; agree_unmapped: number };
}

/** One `info tlb` line: a leaf mapping of the vCPU's live CR3 with QEMU's flag string (XGPDACTUW). */
export interface InfoTlbLine {
  va: bigint;
  pa: bigint;
  flags: string;
}

/** True iff the x86 fixtures are present. */
export function realworldAvailable(): boolean {
  return X86_SNAPSHOTS.every((s) => fs.existsSync(path.join(REALWORLD_DIR, "x86_64", s, "meta.json")));
}

const big = (s: string): bigint => BigInt(s);

/** Reads meta.json, ptpages.bin.gz and ref_gva2gpa.jsonl.gz of snapshot `name`. */
export function loadX86Snapshot(name: string): X86Snapshot {
  const dir = path.join(REALWORLD_DIR, "x86_64", name);
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf8"));
  const vcpus: X86VcpuState[] = meta.vcpus.map((v: Record<string, string | number>) => ({
    cpu: Number(v.cpu), cpl: Number(v.CPL),
    cr0: big(String(v.CR0)), cr3: big(String(v.CR3)), cr4: big(String(v.CR4)), efer: big(String(v.EFER)),
  }));
  const pages = readTablePages(dir, name);
  const refs = readJsonLines<{ va: string; gpa: string | null; cpu: number; cr3: string }>(dir, "ref_gva2gpa.jsonl.gz")
    .map((r) => ({ va: big(r.va), gpa: r.gpa === null ? null : big(r.gpa), cpu: r.cpu, cr3: big(r.cr3) }));
  return {
    name, dir, vcpus, pages, refs,
    ramBase: big(meta.guest_ram.base), ramSize: big(meta.guest_ram.size),
    verification: meta.verification,
  };
}

function readTablePages(dir: string, name: string): TablePage[] {
  const raw = gunzipSync(fs.readFileSync(path.join(dir, "ptpages.bin.gz")));
  if (raw.length % RECORD !== 0) throw new Error(`${name}: ptpages.bin is not a whole number of ${RECORD}-byte records`);
  const pages: TablePage[] = [];
  for (let off = 0; off < raw.length; off += RECORD) {
    pages.push({ pa: raw.readBigUInt64LE(off), bytes: new Uint8Array(raw.buffer, raw.byteOffset + off + 8, PAGE) });
  }
  return pages;
}

function readJsonLines<T>(dir: string, file: string): T[] {
  return gunzipSync(fs.readFileSync(path.join(dir, file))).toString("utf8")
    .split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as T);
}

/** Parses `info_tlb.cpuN.txt.gz` of a snapshot: lines `VVVVVVVVVVVVVVVV: PPPPPPPPPPPPPPPP XGPDACTUW`. */
export function loadInfoTlb(snapshot: X86Snapshot, cpu: number): InfoTlbLine[] {
  const text = gunzipSync(fs.readFileSync(path.join(snapshot.dir, `info_tlb.cpu${cpu}.txt.gz`))).toString("latin1");
  const out: InfoTlbLine[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const m = /^([0-9a-f]{16}): ([0-9a-f]{16}) ([-XGPDACTUW]{9})$/.exec(line);
    if (!m) throw new Error(`${snapshot.name} cpu${cpu}: unexpected info tlb line '${line}'`);
    out.push({ va: BigInt("0x" + m[1]), pa: BigInt("0x" + m[2]), flags: m[3]! });
  }
  return out;
}

/** Copies every table page of the snapshot into guest RAM at its physical address. */
export function writeTablePages(memory: GuestMemory, pages: TablePage[]): void {
  for (const p of pages) memory.write(p.pa, p.bytes);
}

/** The vCPU state of `cpu` in the snapshot. */
export function vcpuOf(snapshot: X86Snapshot, cpu: number): X86VcpuState {
  const v = snapshot.vcpus.find((s) => s.cpu === cpu);
  if (!v) throw new Error(`${snapshot.name}: no vCPU ${cpu}`);
  return v;
}

/** System registers and PSTATE of one arm64 vCPU, as the gdbstub read them. */
export interface Arm64VcpuState {
  cpu: number;
  /** Exception level when the snapshot was taken (0 or 1). */
  el: number;
  /** PSTATE.PAN when the snapshot was taken. */
  pan: boolean;
  ttbr0: bigint;
  ttbr1: bigint;
  tcr: bigint;
  sctlr: bigint;
  mair: bigint;
}

/**
 * One QEMU `gva2gpa` answer on arm64: a stage-1 data load at EL `el` with
 * PSTATE.PAN `pan`. `pstateOverride` is set on the second pass, which ran with
 * PSTATE forced to EL1h, PAN=0 (QEMU's permission-free answer).
 */
export interface Arm64RefRow {
  va: bigint;
  gpa: bigint | null;
  cpu: number;
  ttbr0: bigint;
  ttbr1: bigint;
  tcr: bigint;
  el: number;
  pan: boolean;
  pstateOverride: bigint | null;
}

export interface Arm64Snapshot {
  name: string;
  dir: string;
  ramBase: bigint;
  ramSize: bigint;
  vcpus: Arm64VcpuState[];
  pages: TablePage[];
  refs: Arm64RefRow[];
  /** meta.json verification block, as recorded by the capture scripts. */
  verification: {
    ref_total: number;
    agree: number;
    agree_categories: Record<string, number>;
    agree_mapped_by_block_size: Record<string, number>;
  };
}

/** True iff the arm64 fixtures are present. */
export function arm64RealworldAvailable(): boolean {
  return ARM64_SNAPSHOTS.every((s) => fs.existsSync(path.join(REALWORLD_DIR, "arm64", s, "meta.json")));
}

/**
 * `describe(title, body)` when the fixtures of `arch` are present; otherwise a
 * suite titled "<title> — skipped: <why>" whose one test skips with that
 * reason and says it on stderr, so a run without the fixtures tells why.
 */
export function describeRealworld(arch: "x86_64" | "arm64", title: string, body: () => void): void {
  if (arch === "x86_64" ? realworldAvailable() : arm64RealworldAvailable()) { describe(title, body); return; }
  const why = `skipped: real-Linux ${arch} fixtures not found in ${REALWORLD_DIR} (set VMMU_REALWORLD to the shared/realworld directory)`;
  describe(`${title} — ${why}`, () => {
    it("runs against QEMU's answers", (ctx) => {
      skipped(title, why);
      ctx.skip(why);
    });
  });
}

/** Reads meta.json, ptpages.bin.gz and ref_gva2gpa.jsonl.gz of arm64 snapshot `name`. */
export function loadArm64Snapshot(name: string): Arm64Snapshot {
  const dir = path.join(REALWORLD_DIR, "arm64", name);
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf8"));
  if (meta.arch !== "aarch64" || Number(meta.granule) !== PAGE) throw new Error(`${name}: not a 4 KiB-granule aarch64 snapshot`);
  const vcpus: Arm64VcpuState[] = meta.vcpus.map((v: Record<string, string | number>) => ({
    cpu: Number(v.cpu), el: Number(v.EL), pan: Number(v.PAN) === 1,
    ttbr0: big(String(v.TTBR0_EL1)), ttbr1: big(String(v.TTBR1_EL1)), tcr: big(String(v.TCR_EL1)),
    sctlr: big(String(v.SCTLR)), mair: big(String(v.MAIR_EL1)),
  }));
  type Row = { va: string; gpa: string | null; cpu: number; ttbr0: string; ttbr1: string; tcr: string; el: number; pan: number; pstate_override?: string };
  const refs = readJsonLines<Row>(dir, "ref_gva2gpa.jsonl.gz").map((r) => ({
    va: big(r.va), gpa: r.gpa === null ? null : big(r.gpa), cpu: r.cpu,
    ttbr0: big(r.ttbr0), ttbr1: big(r.ttbr1), tcr: big(r.tcr), el: r.el, pan: r.pan === 1,
    pstateOverride: r.pstate_override === undefined ? null : big(r.pstate_override),
  }));
  return {
    name, dir, vcpus, refs, pages: readTablePages(dir, name),
    ramBase: big(meta.guest_ram.base), ramSize: big(meta.guest_ram.size),
    verification: meta.verification,
  };
}

/** The vCPU state of `cpu` in an arm64 snapshot. */
export function arm64VcpuOf(snapshot: Arm64Snapshot, cpu: number): Arm64VcpuState {
  const v = snapshot.vcpus.find((s) => s.cpu === cpu);
  if (!v) throw new Error(`${snapshot.name}: no vCPU ${cpu}`);
  return v;
}

/**
 * Writes a sparse raw memory image of `size` bytes whose first byte is gpa
 * `base` (QEMU pmemsave layout), holding `pages` (those that fit) and zeros.
 */
export function writeSparseImage(file: string, pages: TablePage[], size: number, base = 0n): void {
  const fd = fs.openSync(file, "w");
  try {
    fs.ftruncateSync(fd, size);
    for (const p of pages) {
      const off = p.pa - base;
      if (off >= 0n && off + BigInt(PAGE) <= BigInt(size)) fs.writeSync(fd, p.bytes, 0, PAGE, Number(off));
    }
  } finally {
    fs.closeSync(fd);
  }
}

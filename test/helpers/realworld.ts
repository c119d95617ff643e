// Loader for the real-Linux page-table fixtures (QEMU TCG snapshots of a Debian
// 6.1 kernel; see realworld/README.md next to the data): table pages, vCPU
// control registers, QEMU gva2gpa reference rows and `info tlb` leaf lists.
// The data lives outside the repository; VMMU_REALWORLD overrides its path.

import * as fs from "node:fs";
import * as path from "node:path";
import { gunzipSync } from "node:zlib";
import type { GuestMemory } from "../../src/index.js";

/** Root of the fixture tree (holds x86_64/…). */
export const REALWORLD_DIR = process.env.VMMU_REALWORLD ?? "/work/shared/realworld";

/** The x86-64 snapshots with QEMU reference rows. */
export const X86_SNAPSHOTS = ["nokaslr_4lvl_snap0", "nokaslr_4lvl_snap1"] as const;

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
  const raw = gunzipSync(fs.readFileSync(path.join(dir, "ptpages.bin.gz")));
  if (raw.length % RECORD !== 0) throw new Error(`${name}: ptpages.bin is not a whole number of ${RECORD}-byte records`);
  const pages: TablePage[] = [];
  for (let off = 0; off < raw.length; off += RECORD) {
    pages.push({ pa: raw.readBigUInt64LE(off), bytes: new Uint8Array(raw.buffer, raw.byteOffset + off + 8, PAGE) });
  }
  const refs = gunzipSync(fs.readFileSync(path.join(dir, "ref_gva2gpa.jsonl.gz"))).toString("utf8")
    .split("\n").filter((l) => l !== "").map((l) => {
      const r = JSON.parse(l) as { va: string; gpa: string | null; cpu: number; cr3: string };
      return { va: big(r.va), gpa: r.gpa === null ? null : big(r.gpa), cpu: r.cpu, cr3: big(r.cr3) };
    });
  return {
    name, dir, vcpus, pages, refs,
    ramBase: big(meta.guest_ram.base), ramSize: big(meta.guest_ram.size),
    verification: meta.verification,
  };
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

// Cost of x86 TLB invalidations (Intel SDM Vol.3A §4.10.4, INVLPG, INVPCID,
// MOV to CR3) on TLBs of 256, 4096 and 65536 entries, each filled before
// every measured operation. The claim under test (assembly/tlb.ts): a flush
// costs what it must search for, never the TLB size —
//   INVLPG 4 KiB          one probe per context (current + global)
//   INVLPG in a 2 MiB page 1 + 512 probes, because the context holds 2 MiB pieces
//   MOV CR3 / INVPCID 1   a fresh tag for one context          O(1)
//   INVPCID 2 / 3         an epoch bump for all contexts       O(1)
// (O(1) flushes leave dead entries in the array; when the 16-bit tag space
// runs out the array is cleared once: the rollovers column.) A page
// invalidation whose probes would exceed the array size scans the array
// instead: O(min(probes, entries)).
//
// Two rows are controls. "only 256 entries refilled" flushes a context after
// a small refill, on every TLB size. "ctxLiveTag read" times a read of the
// context record after the full refill and flushes nothing: refilling 65536
// entries (2 MiB of TLB plus the tables it walks) evicts the vCPU's own
// metadata from the caches, and that, not the flush, is what a flush right
// after a big refill pays for.
//
// Each row is timed twice: through the public X86Vcpu API (bigint and
// register bookkeeping in TS included) and through the wasm export alone.
// Single operations are timed with performance.now() around the operation,
// minus the calibrated cost of an empty timing; the refill before each
// operation is not timed.
//
// Run: npm run bench [-- --quick] (bundled by scripts/bench.mjs).

import { writeFileSync } from "node:fs";
import path from "node:path";
import { Bench } from "tinybench";
import { createMachine, X86PageTableBuilder, LONG_MODE, CR4, type X86Vcpu, type Machine } from "../src/index.js";
import { fmt, machineInfo, nsPerOp, parseArgs, printMachineInfo, printTable, ROOT, samples } from "./common.js";

type CoreFlush = {
  x86Invlpg(va: bigint): void;
  tlbFlushCtx(slot: number): void;
  tlbFlushAll(): void;
  tlbFlushNonGlobal(): void;
  ctxLiveTag(slot: number): number;
};

/**
 * The raw core calls behind each instruction, on the vCPU's guest-paging
 * context record (the core takes the record or the vCPU block; the PCID's TLB
 * slot is found by its key, assembly/layout.ts "TLB context slots").
 */
function coreFlush(machine: Machine<X86Vcpu>, vcpu: X86Vcpu): CoreFlush {
  type Ex = {
    x86Invlpg(c: number, va: bigint): void; x86FlushPcid(c: number, pcid: number): void; tlbFlushAll(vb: number): void;
    tlbFlushNonGlobal(vb: number): void; ctxLiveTag(vb: number, slot: number): number; slotFind(vb: number, key: bigint): number;
  };
  const ex = (vcpu as unknown as { ex: Ex }).ex;
  const L = machine.layout, vb = vcpu.base, c0 = vb + L.VCPU_MMU + L.MMU_ROOT * L.MMU_STRIDE;
  const keyOf = (pcid: number) => (1n << 63n) | BigInt(pcid);
  return {
    x86Invlpg: (va) => ex.x86Invlpg(c0, va),
    tlbFlushCtx: (pcid) => ex.x86FlushPcid(c0, pcid),
    tlbFlushAll: () => ex.tlbFlushAll(vb),
    tlbFlushNonGlobal: () => ex.tlbFlushNonGlobal(vb),
    ctxLiveTag: (pcid) => ex.ctxLiveTag(vb, ex.slotFind(vb, keyOf(pcid))),
  };
}

const SIZES = [256, 4096, 65536];
const PCID = 1;
const VA_4K = 0x4000_0000n; // vpn 0x40000: 2^18-aligned, so up to 2^18 pages take distinct slots
const VA_2M = 0x1_0000_0000n;
const VA_GLOBAL = 0x2_0000_0000n;
const PAGES_2M = 4;
const GLOBAL_PAGES = 64;
const LEAF = { user: true, write: true, accessed: true, dirty: true } as const;

const args = parseArgs();
const info = machineInfo();
printMachineInfo("x86 TLB invalidation cost vs TLB size", info, args);

function calibrateTimer(): number {
  const d: number[] = [];
  for (let i = 0; i < 20001; i++) {
    const t0 = performance.now();
    d.push(performance.now() - t0);
  }
  d.sort((a, b) => a - b);
  return d[10000]!;
}
const timerMs = calibrateTimer();
console.log(`Timer: performance.now(), empty timing ${(timerMs * 1e6).toFixed(0)} ns (subtracted from every single-operation sample)\n`);

interface Rig {
  size: number;
  machine: Machine;
  vcpu: X86Vcpu;
  core: CoreFlush;
  root: bigint;
  fill(list: BigUint64Array): void;
  pages4k: BigUint64Array;
  /** The vCPU's TLB array as bytes. */
  tlbBytes(): Uint8Array;
  globals: BigUint64Array;
  pieces2m: BigUint64Array;
  one2m: BigUint64Array;
}

async function rig(size: number): Promise<Rig> {
  const machine = await createMachine({ arch: "x86_64", memoryBytes: 64 << 20, tlbEntries: size });
  const b = new X86PageTableBuilder(machine.memory, { tableBase: 0x10_0000n, tableLimit: 0x100_0000n });
  for (let i = 0; i < size; i++) b.map(VA_4K + BigInt(i) * 4096n, 0x100_0000n + BigInt(i % 8192) * 4096n, "4K", LEAF);
  for (let i = 0; i < PAGES_2M; i++) b.map(VA_2M + BigInt(i) * 0x20_0000n, 0x200_0000n + BigInt(i) * 0x20_0000n, "2M", LEAF);
  for (let i = 0; i < GLOBAL_PAGES; i++) b.map(VA_GLOBAL + BigInt(i) * 4096n, 0x100_0000n + BigInt(i) * 4096n, "4K", { ...LEAF, global: true });
  const vcpu = machine.vcpu(0);
  vcpu.setControl({ ...LONG_MODE, cr4: LONG_MODE.cr4 | CR4.PGE | CR4.PCIDE, cr3: b.root | BigInt(PCID) });
  const bt = vcpu.batch();
  const fill = (list: BigUint64Array) => {
    for (let k = 0; k < list.length; k += bt.capacity) {
      const n = Math.min(bt.capacity, list.length - k);
      bt.va.set(list.subarray(k, k + n));
      bt.access.fill(0, 0, n);
      if (bt.run(n, true) !== 0) throw new Error("bench: fault while filling the TLB");
    }
  };
  const pieces2m = new BigUint64Array(PAGES_2M * 512);
  for (let i = 0; i < pieces2m.length; i++) pieces2m[i] = VA_2M + BigInt(i) * 4096n;
  return {
    size, machine, vcpu, root: b.root, fill,
    tlbBytes: () => new Uint8Array(machine.memory.wasmMemory.buffer, vcpu.base + machine.layout.VCPU_TLB, size * machine.layout.TLB_ENTRY),
    core: coreFlush(machine, vcpu),
    pages4k: BigUint64Array.from({ length: size }, (_, i) => VA_4K + BigInt(i) * 4096n),
    globals: BigUint64Array.from({ length: GLOBAL_PAGES }, (_, i) => VA_GLOBAL + BigInt(i) * 4096n),
    pieces2m,
    one2m: BigUint64Array.of(VA_2M),
  };
}

interface Case {
  op: string;
  /** Operations per measured call. */
  count(r: Rig): number;
  /** Untimed: bring the TLB to the state the operation is measured in. */
  refill(r: Rig): void;
  /** Returns what the instruction returns: null, or a fault object (counted: must stay 0). */
  api(r: Rig, i: number): unknown;
  core(r: Rig, i: number): unknown;
  /** Untimed, after the measured operations. */
  after?(r: Rig): void;
}

const INVLPG_BATCH = 4096;
const fullTlb = (r: Rig) => { r.fill(r.globals); r.fill(r.pages4k); };
const CASES: Case[] = [
  {
    op: "INVLPG 4K page",
    count: (r) => Math.min(r.size, INVLPG_BATCH),
    refill: fullTlb,
    api: (r, i) => r.vcpu.invlpg(r.pages4k[i]!),
    core: (r, i) => r.core.x86Invlpg(r.pages4k[i]!),
  },
  {
    op: "INVLPG 4K page, context holds 2M pieces",
    count: (r) => Math.min(r.size, INVLPG_BATCH),
    refill: (r) => { fullTlb(r); r.fill(r.one2m); },
    api: (r, i) => r.vcpu.invlpg(r.pages4k[i]!),
    core: (r, i) => r.core.x86Invlpg(r.pages4k[i]!),
  },
  {
    op: "INVLPG in a 2M page (512 pieces cached)",
    count: () => PAGES_2M,
    refill: (r) => r.fill(r.pieces2m),
    api: (r, i) => r.vcpu.invlpg(VA_2M + BigInt(i) * 0x20_0000n + 0x1234n),
    core: (r, i) => r.core.x86Invlpg(VA_2M + BigInt(i) * 0x20_0000n + 0x1234n),
  },
  {
    op: "MOV CR3, same PCID, flush",
    count: () => 1,
    refill: fullTlb,
    api: (r) => r.vcpu.writeCr3(r.root | BigInt(PCID)),
    core: (r) => r.core.tlbFlushCtx(PCID),
  },
  {
    op: "INVPCID 1 (one PCID)",
    count: () => 1,
    refill: fullTlb,
    api: (r) => r.vcpu.invpcid(1, PCID),
    core: (r) => r.core.tlbFlushCtx(PCID),
  },
  {
    op: "INVPCID 1, only 256 entries refilled",
    count: () => 1,
    refill: (r) => { r.fill(r.globals); r.fill(r.pages4k.subarray(0, 256)); },
    api: (r) => r.vcpu.invpcid(1, PCID),
    core: (r) => r.core.tlbFlushCtx(PCID),
  },
  {
    op: "INVPCID 2 (all, incl. global)",
    count: () => 1,
    refill: fullTlb,
    api: (r) => r.vcpu.invpcid(2, 0),
    core: (r) => r.core.tlbFlushAll(),
  },
  {
    op: "INVPCID 3 (all non-global)",
    count: () => 1,
    refill: fullTlb,
    api: (r) => r.vcpu.invpcid(3, 0),
    core: (r) => r.core.tlbFlushNonGlobal(),
  },
  {
    op: "reference: zero the TLB array, O(entries)",
    count: () => 1,
    refill: fullTlb,
    api: (r) => r.tlbBytes().fill(0),
    core: (r) => r.tlbBytes().fill(0),
    after: (r) => r.core.tlbFlushAll(),
  },
  {
    op: "control: ctxLiveTag read, no flush",
    count: () => 1,
    refill: fullTlb,
    api: (r) => r.core.ctxLiveTag(PCID),
    core: (r) => r.core.ctxLiveTag(PCID),
  },
];

interface Effect { liveBefore: number; dropped: number; probes: number; rollovers: number }

const rigs: Rig[] = [];
for (const size of SIZES) rigs.push(await rig(size));

const bench = new Bench({ name: "x86 flush", time: args.time, warmupTime: args.warmupTime, iterations: 8 });
const effects = new Map<string, Effect>();
let faults = 0;
let sink = 0;
const key = (c: Case, r: Rig, via: "api" | "core") => `${c.op} @${r.size} ${via}`;

for (const r of rigs) {
  for (const c of CASES) {
    for (const via of ["api", "core"] as const) {
      const name = key(c, r, via);
      const run: (r: Rig, i: number) => unknown = via === "api" ? c.api : c.core;
      let ops = 0;
      let before = r.vcpu.tlbStats();
      bench.add(name, () => {
        const t = performance.now();
        c.refill(r);
        const n = c.count(r);
        const t0 = performance.now();
        for (let i = 0; i < n; i++) {
          const res = run(r, i);
          if (typeof res === "number") sink += res;
          else if (res && !(res instanceof Uint8Array)) faults++;
        }
        const t1 = performance.now();
        c.after?.(r);
        ops += n;
        return { overriddenDuration: Math.max(0, t1 - t0 - timerMs) / n, overriddenIterationCost: t1 - t };
      }, {
        beforeAll(mode) { if (mode === "run") { ops = 0; before = r.vcpu.tlbStats(); } },
        afterAll(mode) {
          if (mode !== "run") return;
          const after = r.vcpu.tlbStats();
          c.refill(r);
          effects.set(name, {
            liveBefore: r.vcpu.tlbStats().live,
            dropped: (after.dropped - before.dropped) / ops,
            probes: (after.flushProbes - before.flushProbes) / ops,
            rollovers: (after.rollovers - before.rollovers) / ops,
          });
        },
      });
    }
  }
}

bench.runSync();

// ---- report ----------------------------------------------------------------

const rows: string[][] = [];
const record: unknown[] = [];
for (const c of CASES) {
  for (const r of rigs) {
    const api = nsPerOp(bench.getTask(key(c, r, "api")), 1);
    const core = nsPerOp(bench.getTask(key(c, r, "core")), 1);
    const e = effects.get(key(c, r, "core"));
    rows.push([
      c.op, String(r.size), fmt.ns(api), fmt.ns(core), fmt.per(e?.liveBefore), fmt.per(e?.dropped), fmt.per(e?.probes),
      e && e.rollovers > 0 ? `1 per ${Math.round(1 / e.rollovers)}` : "0", String(samples(bench.getTask(key(c, r, "core")))),
    ]);
    record.push({ op: c.op, tlbEntries: r.size, apiNs: api, coreNs: core, ...e });
  }
}

console.log("## Time per invalidation (median), with what it removed\n");
printTable(["operation", "TLB entries", "API ns/op", "core ns/op", "live before", "dropped/op", "probes/op", "rollovers", "samples"], rows, 1);
console.log("live before: entries live in the TLB after the refill that precedes each measured operation. dropped/op, probes/op, rollovers:");
console.log("vCPU tlbStats() deltas of the core-export runs per operation (probes are slots examined by page invalidations).\n");

console.log("## Core ns/op by TLB size\n");
printTable(["operation", ...rigs.map((r) => `${r.size} entries`)], CASES.map((c) => [
  c.op, ...rigs.map((r) => fmt.ns(nsPerOp(bench.getTask(key(c, r, "core")), 1))),
]), 1);
console.log("Read against the two last rows: an O(entries) flush would cost what zeroing the array costs; the control row is");
console.log("what touching two words of vCPU metadata costs right after that refill (cold caches), with no flush at all.\n");

console.log(`(faults returned by the measured instructions: ${faults}; sink ${sink})`);
const out = path.join(ROOT, "bench/.out/x86-flush.json");
writeFileSync(out, JSON.stringify({ info, args, timerNs: timerMs * 1e6, results: record }, null, 2));
for (const r of rigs) r.machine.dispose();
console.log(`(results also in ${path.relative(ROOT, out)})`);

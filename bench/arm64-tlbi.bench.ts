// Cost of arm64 TLB maintenance by VA and VA range (Arm ARM C5.5 TLBI
// VAE1IS, RVAE1IS with FEAT_TLBIRANGE) against the whole-VMID flush
// (VMALLS12E1IS), on TLBs of 256, 4096 and 65536 entries, each refilled to
// hold one live entry per slot (N pages of one ASID) before every measured
// operation. The claim under test (assembly/tlb.ts tlbInvalidateRange):
//
//   a range costs min(pages probed, entries): one probe per page of the
//   range (no block pieces are cached here), or one scan of the array when
//   the range has more pages than the TLB has slots — never a scan of the
//   whole TLB for a small range;
//   VMALLS12E1IS gives each of the VMID's contexts (ASID, global,
//   stage-2-only) a fresh tag: O(contexts), whatever the TLB size.
//
// Stage 2 is off so that every live entry is a stage-1 entry of ASID 5
// (with stage 2 on, the stage-2-only entries a fill creates would share the
// direct-mapped array). Operands are encoded as Linux does
// (encodeTlbiVa, encodeTlbiRange with TG = 4 KiB, no TTL hint):
//   1 page        VAE1IS                        (a range op covers ≥ 2 pages)
//   512 pages     RVAE1IS SCALE 1, NUM 7        (8 · 2^6)
//   262144 pages  RVAE1IS SCALE 3, NUM 3        (4 · 2^16, 1 GiB)
// Each row is timed through the public API (vcpu.tlbi: operand decoding,
// context lookup, the IS broadcast to this machine's one vCPU) and through
// the wasm export alone (tlbInvalidateRange / tlbFlushCtx per context).
// Single operations are timed with performance.now() around the operation,
// minus the calibrated cost of an empty timing; the refill is not timed.
// Two rows are references: zeroing the TLB array (what an O(entries) flush
// would cost) and reading one context's live tag right after the refill
// (cold vCPU metadata, no flush).
//
// Run: npm run bench -- arm64 [--quick] (bundled by scripts/bench.mjs).

import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Bench } from "tinybench";
import {
  createMachine, Arm64Stage1Builder, LINUX_TCR, SCTLR, encodeTlbiVa, encodeTlbiRange, type Arm64Vcpu, type Machine,
} from "../src/index.js";
import { calibrateTimer, fmt, machineInfo, nsPerOp, parseArgs, printMachineInfo, printTable, ROOT, samples } from "./common.js";

type CoreTlbi = {
  tlbInvalidateRange(slot: number, vpn: bigint, pages: bigint, level: number): void;
  tlbFlushCtx(slot: number): void;
  ctxLiveTag(slot: number): number;
};
/** The raw exports (they take the vCPU block `vb`; TLB slots are found by key, assembly/layout.ts "TLB context slots"). */
type Ex = {
  tlbInvalidateRange(vb: number, slot: number, vpn: bigint, pages: bigint, level: number): void;
  tlbFlushSlot(vb: number, slot: number): void;
  ctxLiveTag(vb: number, slot: number): number;
  slotFind(vb: number, key: bigint): number;
};

const SIZES = [256, 4096, 65536];
const ASID = 5;
const VMID = 1;
const RAM_BASE = 0x4000_0000n;
const VA0 = 0x4000_0000n; // vpn 0x40000: 2^18-aligned, so up to 2^18 consecutive pages take distinct slots
const VPN0 = VA0 >> 12n;
const FAR = 0x80_0000_0000n; // a range no live entry is in (VA 512 GiB)
const PAGE_OPS = 4096;

const args = parseArgs();
const info = machineInfo();
const loadAvg = () => os.loadavg().map((v) => v.toFixed(1)).join(" / ");
printMachineInfo("arm64 TLB maintenance cost vs TLB size: VA and range TLBI vs whole-VMID flush", info, args);
console.log(`Load average (1 / 5 / 15 min) at start: ${loadAvg()}`);
const timerMs = calibrateTimer();
console.log(`Timer: performance.now(), empty timing ${(timerMs * 1e6).toFixed(0)} ns (subtracted from every single-operation sample)\n`);

interface Rig {
  size: number;
  machine: Machine<Arm64Vcpu>;
  vcpu: Arm64Vcpu;
  core: CoreTlbi;
  /** TLB context slots of the VMID: ASID 5, global, stage-2-only. */
  asidSlot: number;
  vmidSlots: number[];
  pages: BigUint64Array;
  refill(): void;
  tlbBytes(): Uint8Array;
}

async function rig(size: number): Promise<Rig> {
  const machine = await createMachine({ arch: "arm64", memoryBytes: 64 << 20, ramBase: RAM_BASE, tlbEntries: size });
  const s1 = new Arm64Stage1Builder(machine.memory, { tableBase: RAM_BASE + 0x10_0000n, tableLimit: RAM_BASE + 0xff_f000n });
  const kernelRoot = RAM_BASE + 0xff_f000n; // an empty TTBR1 table: LINUX_TCR has A1, the ASID in force is TTBR1's
  machine.memory.write(kernelRoot, new Uint8Array(4096));
  for (let i = 0; i < size; i++) s1.map(VA0 + BigInt(i) * 4096n, RAM_BASE + 0x100_0000n + BigInt(i % 8192) * 4096n, "4K", { el0: true, nG: true });
  const vcpu = machine.vcpu(0);
  vcpu.setSystemRegisters({ tcr: LINUX_TCR, sctlr: SCTLR.M, ttbr0: s1.ttbr(ASID), ttbr1: (BigInt(ASID) << 48n) | kernelRoot, vttbr: BigInt(VMID) << 48n });
  if (vcpu.asid() !== ASID || vcpu.vmid() !== VMID) throw new Error("bench: unexpected ASID/VMID in force");
  const ex = (vcpu as unknown as { ex: Ex }).ex, vb = vcpu.base;
  const L = machine.layout;
  const slot = (key: string) => {
    const low = key === "global" ? BigInt(L.KEY_GLOBAL) : key === "s2" ? BigInt(L.KEY_S2) : BigInt(Number(key.slice(5)));
    const s = ex.slotFind(vb, (1n << 63n) | (BigInt(VMID) << BigInt(L.KEY_SPACE_SHIFT)) | low);
    if (s >= L.CTX_SLOTS) throw new Error(`bench: no ${key} context`);
    return s;
  };
  const core: CoreTlbi = {
    tlbInvalidateRange: (sl, vpn, pages, level) => ex.tlbInvalidateRange(vb, sl, vpn, pages, level),
    tlbFlushCtx: (sl) => ex.tlbFlushSlot(vb, sl),
    ctxLiveTag: (sl) => ex.ctxLiveTag(vb, sl),
  };
  const pages = BigUint64Array.from({ length: size }, (_, i) => VA0 + BigInt(i) * 4096n);
  const bt = vcpu.batch();
  const refill = () => {
    for (let k = 0; k < pages.length; k += bt.capacity) {
      const n = Math.min(bt.capacity, pages.length - k);
      bt.va.set(pages.subarray(k, k + n));
      bt.access.fill(0, 0, n);
      if (bt.run(n, true) !== 0) throw new Error("bench: fault while filling the TLB");
    }
  };
  return {
    size, machine, vcpu, core,
    asidSlot: slot(`asid:${ASID}`), vmidSlots: [slot(`asid:${ASID}`), slot("global"), slot("s2")], pages, refill,
    tlbBytes: () => new Uint8Array(machine.memory.wasmMemory.buffer, vcpu.base + machine.layout.VCPU_TLB, size * machine.layout.TLB_ENTRY),
  };
}

interface Case {
  op: string;
  /** Pages one operation covers (0: not an address operation). */
  pages: number;
  /** Operations per measured sample (distinct addresses, one refill). */
  count(r: Rig): number;
  api(r: Rig, i: number): unknown;
  core(r: Rig, i: number): unknown;
  /** Untimed, after the measured operations. */
  after?(r: Rig): void;
}

const rangeOp = (baseVa: bigint, scale: number, num: number) => encodeTlbiRange({ baseVa, asid: ASID, scale, num, ttl: 0 });
const R512 = { scale: 1, num: 7 };
const R256K = { scale: 3, num: 3 };

const CASES: Case[] = [
  {
    op: "VAE1IS, 1 page",
    pages: 1,
    count: (r) => Math.min(r.size, PAGE_OPS),
    api: (r, i) => r.vcpu.tlbi("VAE1IS", encodeTlbiVa(r.pages[i]!, ASID)),
    core: (r, i) => r.core.tlbInvalidateRange(r.asidSlot, VPN0 + BigInt(i), 1n, 0),
  },
  {
    op: "RVAE1IS, 512 pages",
    pages: 512,
    count: (r) => Math.max(1, Math.min(r.size, PAGE_OPS) / 512),
    api: (r, i) => r.vcpu.tlbi("RVAE1IS", rangeOp(VA0 + BigInt(i) * 0x20_0000n, R512.scale, R512.num)),
    core: (r, i) => r.core.tlbInvalidateRange(r.asidSlot, VPN0 + BigInt(i) * 512n, 512n, 0),
  },
  {
    op: "RVAE1IS, 512 pages, none cached",
    pages: 512,
    count: () => 8,
    api: (_r, i) => _r.vcpu.tlbi("RVAE1IS", rangeOp(FAR + BigInt(i) * 0x20_0000n, R512.scale, R512.num)),
    core: (r, i) => r.core.tlbInvalidateRange(r.asidSlot, (FAR >> 12n) + BigInt(i) * 512n, 512n, 0),
  },
  {
    op: "RVAE1IS, 262144 pages (1 GiB)",
    pages: 262144,
    count: () => 1,
    api: (r) => r.vcpu.tlbi("RVAE1IS", rangeOp(VA0, R256K.scale, R256K.num)),
    core: (r) => r.core.tlbInvalidateRange(r.asidSlot, VPN0, 262144n, 0),
  },
  {
    op: "VMALLS12E1IS (whole VMID)",
    pages: 0,
    count: () => 1,
    api: (r) => r.vcpu.tlbi("VMALLS12E1IS"),
    core: (r) => { for (const s of r.vmidSlots) r.core.tlbFlushCtx(s); },
  },
  {
    op: "reference: zero the TLB array, O(entries)",
    pages: 0,
    count: () => 1,
    api: (r) => r.tlbBytes().fill(0),
    core: (r) => r.tlbBytes().fill(0),
    after: (r) => { for (const s of r.vmidSlots) r.core.tlbFlushCtx(s); },
  },
  {
    op: "control: ctxLiveTag read, no flush",
    pages: 0,
    count: () => 1,
    api: (r) => r.core.ctxLiveTag(r.asidSlot),
    core: (r) => r.core.ctxLiveTag(r.asidSlot),
  },
];

interface Effect { liveBefore: number; dropped: number; probes: number; rollovers: number; ctxFlushes: number; rangeFlushes: number }

const rigs: Rig[] = [];
for (const size of SIZES) rigs.push(await rig(size));

const bench = new Bench({ name: "arm64 tlbi", time: args.time, warmupTime: args.warmupTime, iterations: 8 });
const effects = new Map<string, Effect>();
let sink = 0;
const key = (c: Case, r: Rig, via: "api" | "core") => `${c.op} @${r.size} ${via}`;

for (const r of rigs) {
  for (const c of CASES) {
    for (const via of ["api", "core"] as const) {
      const name = key(c, r, via);
      const run = via === "api" ? c.api : c.core;
      let ops = 0;
      let before = r.vcpu.tlbStats();
      let tBefore = r.vcpu.tlbiStats();
      bench.add(name, () => {
        const t = performance.now();
        r.refill();
        const n = c.count(r);
        const t0 = performance.now();
        for (let i = 0; i < n; i++) {
          const res = run(r, i);
          if (typeof res === "number") sink += res;
        }
        const t1 = performance.now();
        c.after?.(r);
        ops += n;
        return { overriddenDuration: Math.max(0, t1 - t0 - timerMs) / n, overriddenIterationCost: t1 - t };
      }, {
        beforeAll(mode) { if (mode === "run") { ops = 0; before = r.vcpu.tlbStats(); tBefore = r.vcpu.tlbiStats(); } },
        afterAll(mode) {
          if (mode !== "run") return;
          const after = r.vcpu.tlbStats(), tAfter = r.vcpu.tlbiStats();
          r.refill();
          effects.set(name, {
            liveBefore: r.vcpu.tlbStats().live,
            dropped: (after.dropped - before.dropped) / ops,
            probes: (after.flushProbes - before.flushProbes) / ops,
            rollovers: (after.rollovers - before.rollovers) / ops,
            ctxFlushes: (tAfter.contextFlushes - tBefore.contextFlushes) / ops,
            rangeFlushes: (tAfter.rangeFlushes - tBefore.rangeFlushes) / ops,
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
    const e = effects.get(key(c, r, "core")), ea = effects.get(key(c, r, "api"));
    rows.push([
      c.op, String(r.size), fmt.ns(api), fmt.ns(core), fmt.per(e?.liveBefore), fmt.per(e?.dropped), fmt.per(ea?.dropped), fmt.per(e?.probes),
      c.pages > 0 && e ? fmt.ns(core / Math.max(1, e.probes)) : "—",
      ea ? `${fmt.per(ea.rangeFlushes)} / ${fmt.per(ea.ctxFlushes)}` : "—",
      e && e.rollovers > 0 ? `1 per ${Math.round(1 / e.rollovers)}` : "0", String(samples(bench.getTask(key(c, r, "core")))),
    ]);
    record.push({ op: c.op, pages: c.pages, tlbEntries: r.size, apiNs: api, coreNs: core, core: e, api: ea });
  }
}

console.log("## Time per operation (median), with what it removed and examined\n");
printTable(["operation", "TLB entries", "API ns/op", "core ns/op", "live before", "dropped/op", "API dropped/op", "probes/op", "core ns/probe",
  "API range / ctx flushes per op", "rollovers", "samples"], rows, 1);
console.log("live before: entries live after the refill that precedes each measured sample. dropped/op, probes/op (slots examined");
console.log("by range invalidations; = the TLB size when the range was done as one scan), rollovers: vCPU tlbStats() deltas of the");
console.log("core-export runs per operation. API range / ctx flushes: tlbiStats() deltas of the API runs (a VAE1IS/RVAE1IS also");
console.log("probes the VMID's global context, which is empty here).\n");

console.log("## Core ns/op by TLB size\n");
printTable(["operation", ...rigs.map((r) => `${r.size} entries`)], CASES.map((c) => [
  c.op, ...rigs.map((r) => fmt.ns(nsPerOp(bench.getTask(key(c, r, "core")), 1))),
]), 1);
console.log("Read against the two last rows: an O(entries) flush would cost what zeroing the array costs; the control row is");
console.log("what touching one context record costs right after that refill (cold caches), with no flush at all.\n");

console.log(`(sink ${sink})`);
const out = path.join(ROOT, "bench/.out/arm64-tlbi.json");
writeFileSync(out, JSON.stringify({ info, args, timerNs: timerMs * 1e6, results: record }, null, 2));
for (const r of rigs) r.machine.dispose();
console.log(`Load average (1 / 5 / 15 min) at the end: ${loadAvg()}`);
console.log(`(results also in ${path.relative(ROOT, out)})`);

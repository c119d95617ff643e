// Forensic listings of real kernels' tables: mappings() (QEMU info mem /
// Volatility mapping(): every table page read once, leaves coalesced) and
// lookup() per address (libvmi vmi_pagetable_lookup), on the real-Linux
// fixtures (x86-64 pti=on: a user and a kernel PGD; arm64: both TTBR halves)
// and on the QEMU ELF core of test/fixtures/qemu-elf-x86_64 (nopti, whose
// espfix area alone is 65,536 one-page ranges), read through openImage().
// Plain TS over guest-physical memory (src/forensics/).
//
// Run: npm run bench -- forensics [--quick]

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { Bench } from "tinybench";
import { createMachine, lookup, mappings, openImage, type AddressSpace, type MappingsStats } from "../src/index.js";
import {
  arm64RealworldAvailable, arm64VcpuOf, loadArm64Snapshot, loadX86Snapshot, realworldAvailable, vcpuOf, writeTablePages,
} from "../test/helpers/realworld.js";
import { fmt, machineInfo, median, nsPerOp, parseArgs, printMachineInfo, printTable, ROOT } from "./common.js";

const args = parseArgs();
const ROUNDS = args.quick ? 2 : 5;
printMachineInfo("Forensic listings: mappings() and lookup() on real kernels' tables", machineInfo(), args);

interface Case { name: string; space: AddressSpace; vas: bigint[]; dispose?: () => void }

async function cases(): Promise<Case[]> {
  const out: Case[] = [];
  if (realworldAvailable()) {
    const snap = loadX86Snapshot("nokaslr_4lvl_snap0");
    const m = await createMachine({ arch: "x86_64", memoryBytes: snap.ramSize, ramBase: snap.ramBase, eagerBytes: 0n });
    writeTablePages(m.memory, snap.pages);
    for (const cpu of [0, 1]) {
      const v = vcpuOf(snap, cpu);
      out.push({
        name: `x86-64 Linux 6.1, pti, ${cpu === 0 ? "user" : "kernel"} PGD (fixture)`,
        space: { arch: "x86_64", memory: m.memory, root: v.cr3 }, vas: snap.refs.filter((r) => r.cpu === cpu).map((r) => r.va),
      });
    }
    out[out.length - 1]!.dispose = () => m.dispose?.();
  } else {
    console.log("x86-64 real-Linux fixtures absent (test/helpers/realworld.ts): rows skipped\n");
  }
  if (arm64RealworldAvailable()) {
    const snap = loadArm64Snapshot("nokaslr_snap0");
    const m = await createMachine({ arch: "arm64", memoryBytes: snap.ramSize, ramBase: snap.ramBase, eagerBytes: 0n });
    writeTablePages(m.memory, snap.pages);
    const v = arm64VcpuOf(snap, 1);
    for (const ttbr of [0, 1] as const) {
      out.push({
        name: `arm64 Linux 6.1, TTBR${ttbr} (fixture)`,
        space: { arch: "arm64", memory: m.memory, root: ttbr ? v.ttbr1 : v.ttbr0, ttbr, tcr: v.tcr },
        vas: snap.refs.filter((r) => r.cpu === 1 && Number((r.va >> 55n) & 1n) === ttbr).map((r) => r.va),
      });
    }
    out[out.length - 1]!.dispose = () => m.dispose?.();
  } else {
    console.log("arm64 real-Linux fixtures absent: rows skipped\n");
  }
  const core = path.join(ROOT, "test/fixtures/qemu-elf-x86_64/core.elf.gz");
  if (existsSync(core)) {
    const image = openImage(gunzipSync(readFileSync(core)));
    const rows = readFileSync(path.join(ROOT, "test/fixtures/qemu-elf-x86_64/gva2gpa.jsonl"), "utf8").split("\n").filter((l) => l !== "");
    out.push({
      name: "x86-64 Linux 6.1, nopti, QEMU ELF core (112 MiB)",
      space: { arch: "x86_64", memory: image, root: image.cpus[0]!.cr3 }, vas: rows.map((l) => BigInt((JSON.parse(l) as { va: string }).va)),
    });
  }
  return out;
}

const all = await cases();
const figures = new Map<string, { coalesced: number[]; leaves: number[]; lookup: number[] }>();
let sink = 0;
for (let round = 0; round < ROUNDS; round++) {
  for (const c of all) {
    const bench = new Bench({ time: args.time / 3, warmupTime: args.warmupTime });
    bench.add("coalesced", () => { sink += mappings(c.space).length; });
    bench.add("leaves", () => { sink += mappings(c.space, { coalesce: false }).length; });
    bench.add("lookup", () => { for (const va of c.vas) sink += lookup(c.space, va).entries.length; });
    await bench.run();
    const f = figures.get(c.name) ?? { coalesced: [], leaves: [], lookup: [] };
    f.coalesced.push(nsPerOp(bench.tasks[0], 1));
    f.leaves.push(nsPerOp(bench.tasks[1], 1));
    f.lookup.push(nsPerOp(bench.tasks[2], c.vas.length));
    figures.set(c.name, f);
  }
}

const rows: string[][] = [];
for (const c of all) {
  const stats = {} as MappingsStats;
  const ranges = mappings(c.space, {}, stats).length;
  const f = figures.get(c.name)!;
  const ms = median(f.coalesced)! / 1e6, leafMs = median(f.leaves)! / 1e6;
  rows.push([
    c.name, String(stats.tables), String(stats.leaves), String(ranges), ms.toFixed(2), `${(ranges / ms / 1e3).toFixed(2)} M`,
    `${(stats.leaves / ms / 1e3).toFixed(2)} M`, leafMs.toFixed(2), fmt.ns(median(f.lookup)),
  ]);
  c.dispose?.();
}
console.log(`${ROUNDS} rounds; medians over rounds of each round's median.\n`);
printTable(["tables", "table reads", "leaves", "ranges", "mappings ms", "ranges/s", "leaves/s", "leaves ms (coalesce: false)", "lookup ns/address"], rows);
if (sink === 0.5) console.log(sink);

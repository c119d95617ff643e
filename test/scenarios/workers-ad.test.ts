/**
 * vCPUs on worker threads sharing one guest memory (Intel SDM Vol.3A §4.8 and
 * §8.1.2.1: the processor sets A and D with locked read-modify-writes, so
 * software updating the same paging-structure entries atomically never loses
 * an update, and the processor never loses one of software's).
 *
 * Each worker attaches to a vCPU through the bundled library
 * (test/helpers/worker-vcpu.mjs imports dist/vmmu.mjs; run `npm run build`).
 */
import { afterEach, describe, expect, it } from "vitest";
import { Worker } from "node:worker_threads";
import {
  createMachine, X86PageTableBuilder, LONG_MODE, CR0, CR4, EFER, PTE,
  type Machine, type MachineHandle, type X86TranslateResult,
} from "../../src/index.js";
import { refTranslateX86, type RefResult } from "../../src/ref/x86-walk.js";
import { refMemoryOf } from "../helpers/machine.js";
import { Rng, seedNote, testSeed } from "../helpers/rng.js";
import { verbose } from "../helpers/note.js";

const WORKER = new URL("../helpers/worker-vcpu.mjs", import.meta.url);
const ARRIVED = 0, GO = 1, STOP = 2, LOST = 3;
/**
 * The race runs RACE_MS, then on (up to RACE_MAX_MS, for loaded machines)
 * until each side has lost at least CONTENDED compare-exchanges to the other.
 */
const RACE_MS = 1000;
const RACE_MAX_MS = 10_000;
const CONTENDED = 50;
const IGNORED = (0x7fn << 52n) | (0x7n << 9n);

interface Reply<T> { ok: boolean; result?: T; error?: string }

const live: Worker[] = [];
afterEach(async () => {
  await Promise.all(live.splice(0).map((w) => w.terminate()));
});

/** Starts a worker running `role` with `args`; resolves with its result. */
function runRole<T>(handle: MachineHandle, sync: Int32Array, role: string, args: object): Promise<T> {
  const w = new Worker(WORKER);
  live.push(w);
  return new Promise<T>((resolve, reject) => {
    w.once("message", (m: Reply<T>) => (m.ok ? resolve(m.result as T) : reject(new Error(`worker ${role}: ${m.error}`))));
    w.once("error", reject);
    w.postMessage({ role, handle, sync, ...args });
  });
}

/** A start gate in a SharedArrayBuffer: [arrived, go, stop, toggler's lost compare-exchanges]. */
function gate(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(16));
}

/** Waits until `n` workers have arrived, then releases them together. */
async function openGate(sync: Int32Array, n: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Atomics.load(sync, ARRIVED) < n) {
    if (Date.now() > deadline) throw new Error(`only ${Atomics.load(sync, ARRIVED)} of ${n} workers arrived`);
    await new Promise((r) => setTimeout(r, 1));
  }
  Atomics.store(sync, GO, 1);
  Atomics.notify(sync, GO);
}

function stopAll(sync: Int32Array): void {
  Atomics.store(sync, STOP, 1);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface AdVcpuResult {
  rounds: number; writes: number; reads: number; adMissing: number; wrongPa: number; faults: number;
  clearLost: number; firstError?: string; stats: { walks: number; walkRetries: number; adWrites: number };
}
interface TogglerResult { ops: number; lost: number; bumps: number[]; flips: number[][] }

describe("A/D updates from vCPUs on worker threads race software updates of the same entries", () => {
  it("loses no update on either side, and every write leaves D set", async () => {
    const machine = await createMachine({ arch: "x86_64", memoryBytes: 16 << 20, vcpus: 3 });
    const mem = machine.memory;
    const b = new X86PageTableBuilder(mem, { levels: 4, tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
    const base = 0x4000_0000n;
    const leaves: { va: bigint; pa: bigint; gpa: bigint; owner: number }[] = [];
    for (let i = 0; i < 6; i++) {
      const va = base + BigInt(i) * 0x1000n, pa = 0x80_0000n + BigInt(i) * 0x1000n;
      leaves.push({ va, pa, gpa: b.map(va, pa, "4K", { write: true }), owner: i % 2 });
    }
    for (let i = 0; i < 2; i++) {
      const va = base + BigInt(i + 1) * 0x20_0000n, pa = 0x40_0000n + BigInt(i) * 0x20_0000n;
      leaves.push({ va: va + 0x1234n, pa: pa + 0x1234n, gpa: b.map(va, pa, "2M", { write: true }), owner: i % 2 });
    }
    const upper = [4, 3, 2].map((l) => b.entryAt(base, l)!);
    const entries = [...upper, ...leaves.map((l) => l.gpa)];
    for (const i of [0, 1]) machine.vcpu(i).setControl({ ...LONG_MODE, cr3: b.root });
    const initial = entries.map((g) => mem.read64(g));

    const sync = gate();
    const runs = Promise.all([
      runRole<AdVcpuResult>(machine.handle, sync, "adVcpu", { index: 0, leaves, upper, clearUpper: true }),
      runRole<AdVcpuResult>(machine.handle, sync, "adVcpu", { index: 1, leaves, upper, clearUpper: false }),
      runRole<TogglerResult>(machine.handle, sync, "toggler", { index: 2, entries }),
    ]);
    runs.catch(() => stopAll(sync));
    await openGate(sync, 3);
    const start = Date.now();
    const walkRetries = () => machine.vcpu(0).tlbStats().walkRetries + machine.vcpu(1).tlbStats().walkRetries;
    await sleep(RACE_MS);
    while ((walkRetries() < CONTENDED || Atomics.load(sync, LOST) < CONTENDED) && Date.now() - start < RACE_MAX_MS) await sleep(50);
    stopAll(sync);
    const raced = Date.now() - start;
    const [v0, v1, tog] = (await runs) as [AdVcpuResult, AdVcpuResult, TogglerResult];

    for (const v of [v0, v1]) {
      expect(v.faults, v.firstError).toBe(0);
      expect(v.wrongPa).toBe(0);
      expect(v.adMissing, v.firstError).toBe(0);
      expect(v.writes).toBeGreaterThan(1000);
    }
    entries.forEach((g, i) => {
      const before = initial[i]!, after = mem.read64(g);
      const where = `entry ${i} at gpa 0x${g.toString(16)}: 0x${before.toString(16)} → 0x${after.toString(16)}`;
      expect((after >> 52n) & 0x7fn, where).toBe((((before >> 52n) & 0x7fn) + BigInt(tog.bumps[i]!)) & 0x7fn);
      for (let k = 0; k < 3; k++) {
        const bit = 9n + BigInt(k);
        expect((after >> bit) & 1n, `${where}, bit ${bit}`).toBe(((before >> bit) & 1n) ^ BigInt(tog.flips[i]![k]! & 1));
      }
      expect(after & ~(IGNORED | PTE.A | PTE.D), where).toBe(before & ~(IGNORED | PTE.A | PTE.D));
    });

    const retries = v0.stats.walkRetries + v1.stats.walkRetries;
    const report = `walker retries ${retries} (walks ${v0.stats.walks + v1.stats.walks}), toggler lost CAS ${tog.lost} of ${tog.ops}, `
      + `clear lost CAS ${v0.clearLost + v1.clearLost}, rounds ${v0.rounds}/${v1.rounds} in ${raced} ms`;
    verbose(`[workers-ad] ${report}`);
    expect(tog.ops, report).toBeGreaterThan(10_000);
    expect(tog.lost, report).toBeGreaterThan(0);
    expect(retries, report).toBeGreaterThan(0);
  });
});

describe("vCPUs on two worker threads translate like the reference walker", () => {
  const KIND = ["read", "write", "fetch"] as const;

  function expected(r: RefResult): X86TranslateResult {
    if (r.ok) return { pa: r.pa, pageSize: r.pageSize, level: r.level };
    const { vector, errorCode, level, kind, gpa } = r;
    return { fault: gpa === undefined ? { vector, errorCode, level, kind } : { vector, errorCode, level, kind, gpa } };
  }

  /** Random 4K/2M/1G mappings with random rights, plus holes, reserved bits and a table outside RAM. */
  function buildTables(machine: Machine, rng: Rng): { root: bigint; vas: bigint[] } {
    const b = new X86PageTableBuilder(machine.memory, { levels: 4, tableBase: 0x10_0000n, tableLimit: 0x40_0000n });
    const vas: bigint[] = [];
    const sizes = { "4K": 1n << 12n, "2M": 1n << 21n, "1G": 1n << 30n } as const;
    for (let i = 0; i < 48; i++) {
      const size = rng.pick(["4K", "4K", "2M", "1G"] as const);
      const bytes = sizes[size];
      const user = rng.chance(0.5);
      const va = (BigInt(i) << 34n) | (user ? 0n : 0xffff_8000_0000_0000n) | (BigInt(rng.int(4)) * bytes);
      const pa = BigInt(rng.int(1 << 16)) * bytes & ((1n << 46n) - 1n);
      const raw = rng.chance(0.1) ? 1n << BigInt(46 + rng.int(6)) : 0n;
      b.map(va, pa, size, {
        write: rng.chance(0.6), user, nx: rng.chance(0.3), global: rng.chance(0.2),
        accessed: rng.chance(0.5), dirty: rng.chance(0.5), raw,
      });
      for (let k = 0; k < 3; k++) vas.push(va + (rng.u64() & (bytes - 1n)));
      vas.push(va + bytes * 5n);
    }
    const hole = 0x0000_7000_0000_0000n;
    b.map(hole, 0x1000n, "4K");
    machine.memory.write64(b.entryAt(hole, 2)!, 0x1_0000_0000n | PTE.P | PTE.RW | PTE.US);
    vas.push(hole, hole + 0x1000n, 0x0000_8000_0000_0000n, 0xffff_7fff_ffff_f000n, rng.u64());
    return { root: b.root, vas };
  }

  it("on every address, cold and warm, and both agree", async () => {
    const seed = testSeed();
    const rng = new Rng(seed);
    const machine = await createMachine({ arch: "x86_64", memoryBytes: 8 << 20, vcpus: 2 });
    const { root, vas } = buildTables(machine, rng);
    const control = {
      cr0: CR0.PE | CR0.PG | CR0.WP, cr3: root, cr4: CR4.PAE | CR4.PGE | CR4.SMEP | CR4.SMAP,
      efer: EFER.LME | EFER.LMA | EFER.NXE, pkru: 0n, rflags: 2n,
    };
    for (const i of [0, 1]) machine.vcpu(i).setControl(control);

    const groups = [false, true].map((user) => {
      const va = BigUint64Array.from(vas.map((v) => BigInt.asUintN(64, v)));
      const access = Uint8Array.from(vas.map(() => rng.int(3)));
      return { va, access, user };
    });
    const refMem = refMemoryOf(machine.memory);
    const want = groups.map(({ va, access, user }) => Array.from(va, (v, i) =>
      expected(refTranslateX86(refMem, { ...control, maxPhysAddrBits: 46 }, v, KIND[access[i]!]!, user))));

    const sync = gate();
    type Out = { passes: { pa: BigUint64Array; status: Uint32Array }[][] };
    const runs = Promise.all([0, 1].map((index) => runRole<Out>(machine.handle, sync, "translate", { index, groups })));
    await openGate(sync, 2);
    const results = await runs;

    const v = machine.vcpu(0);
    let faults = 0;
    results.forEach((r, worker) => r.passes.forEach((pass, p) => pass.forEach((out, g) => {
      want[g]!.forEach((w, i) => {
        const got = v.decodeStatus(out.status[i]!, out.pa[i]!);
        const va = groups[g]!.va[i]!;
        expect(got, `${seedNote(seed)} worker ${worker} pass ${p} user=${groups[g]!.user} va 0x${va.toString(16)} ${KIND[groups[g]!.access[i]!]}`).toEqual(w);
        if ("fault" in got) faults++;
      });
    })));
    expect(faults).toBeGreaterThan(0);
    expect(faults).toBeLessThan(2 * 2 * 2 * vas.length);
  });
});

/**
 * Machines can be released (src/machine.ts Machine.dispose): after dispose()
 * every call on the machine, its memory and its vCPUs is the one clear error
 * `vmmu: machine is disposed`, and nothing reachable from them still holds
 * the shared WebAssembly.Memory, so the engine can reclaim it at its next
 * collection even while user code keeps the objects.
 *
 * What V8 does (measured here, Node 20): a dropped machine's shared memory is
 * freed only by a major GC, and V8 does not schedule one for wasm-memory
 * pressure — 48 machines that each touch 64 MiB reach ~3 GiB RSS without a
 * forced collection whether or not they are disposed. dispose() makes the
 * memory collectable; the collection itself is the engine's (here forced with
 * gc(), exposed through v8.setFlagsFromString).
 */
import { describe, expect, it } from "vitest";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import {
  createMachine, attachVcpu, X86PageTableBuilder, Arm64Stage1Builder, LONG_MODE, LINUX_TCR, SCTLR,
  type Machine, type X86Vcpu, type Arm64Vcpu,
} from "../../src/index.js";

const DISPOSED = "vmmu: machine is disposed";
const MiB = 1 << 20;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Every call of `calls` throws exactly the disposed error. */
function allDisposed(calls: Record<string, () => unknown>): void {
  for (const [name, call] of Object.entries(calls)) {
    let thrown: unknown;
    try { call(); } catch (e) { thrown = e; }
    expect(thrown, name).toBeInstanceOf(Error);
    expect((thrown as Error).message, name).toBe(DISPOSED);
  }
}

async function x86Machine(): Promise<{ m: Machine<X86Vcpu>; b: X86PageTableBuilder }> {
  const m = await createMachine({ arch: "x86_64", memoryBytes: 16 * MiB, vcpus: 2 });
  const b = new X86PageTableBuilder(m.memory, { tableBase: 0x10_0000n, tableLimit: 0x20_0000n });
  b.map(0x40_0000n, 0x30_0000n, "4K", { write: true, user: true });
  m.vcpu(0).setControl({ ...LONG_MODE, cr3: b.root });
  return { m, b };
}

describe("after dispose()", () => {
  it("every call on an x86 machine, its memory and its vCPUs is the disposed error", async () => {
    const { m, b } = await x86Machine();
    const mem = m.memory, v = m.vcpu(0), w = m.vcpu(1);
    const bt = v.batch();
    expect(v.translate(0x40_0123n)).toEqual({ pa: 0x30_0123n, pageSize: 4096, level: 1 });
    expect(m.disposed).toBe(false);
    m.dispose();
    expect(m.disposed).toBe(true);
    allDisposed({
      "machine.vcpu": () => m.vcpu(0),
      "machine.vcpuCount": () => m.vcpuCount,
      "machine.handle": () => m.handle,
      "memory.read64": () => mem.read64(0x1000n),
      "memory.write64": () => mem.write64(0x1000n, 1n),
      "memory.cmpxchg64": () => mem.cmpxchg64(0x1000n, 0n, 1n),
      "memory.read": () => mem.read(0x1000n, 8),
      "memory.readInto": () => mem.readInto(0x1000n, new Uint8Array(8)),
      "memory.write": () => mem.write(0x1000n, Uint8Array.of(1)),
      "memory.fill": () => mem.fill(0x1000n, 8, 0),
      "memory.contains": () => mem.contains(0x1000n),
      "memory.bytes": () => mem.bytes(),
      "memory.buffer": () => mem.buffer,
      "memory.wasmMemory": () => mem.wasmMemory,
      "memory.backedFrames": () => mem.backedFrames(),
      "memory.hostLimitBytes": () => mem.hostLimitBytes(),
      "vcpu.translate": () => v.translate(0x40_0123n),
      "vcpu.translatePa": () => v.translatePa(0x40_0123n),
      "vcpu.lastFault": () => v.lastFault(),
      "vcpu.peek": () => v.peek(0x40_0123n),
      "vcpu.walk": () => v.walk(0x40_0123n),
      "vcpu.walkRecorded": () => v.walkRecorded(0x40_0123n, "read", false, false),
      "vcpu.control": () => v.control(),
      "vcpu.setControl": () => v.setControl({ cr3: b.root }),
      "vcpu.writeCr0": () => v.writeCr0(LONG_MODE.cr0),
      "vcpu.writeCr3": () => v.writeCr3(b.root),
      "vcpu.writeCr4": () => v.writeCr4(LONG_MODE.cr4),
      "vcpu.invlpg": () => v.invlpg(0x40_0000n),
      "vcpu.invpcid": () => v.invpcid(2, 0),
      "vcpu.currentPcid": () => v.currentPcid(),
      "vcpu.batch": () => v.batch(),
      "batch.run, views taken before dispose": () => bt.run(1, false),
      "vcpu.translateBatch": () => v.translateBatch(BigUint64Array.of(0x40_0000n), "read", false),
      "vcpu.translateUntilFault": () => v.translateUntilFault(0, 1, false),
      "vcpu.decodeStatus": () => v.decodeStatus(0, 0n),
      "vcpu.setTlbEnabled": () => v.setTlbEnabled(false),
      "vcpu.tlbStats": () => v.tlbStats(),
      "vcpu.resetStats": () => v.resetStats(),
      "vcpu.counterView": () => v.counterView(),
      "other vcpu.translate": () => w.translate(0x40_0123n),
      "builder.map": () => b.map(0x50_0000n, 0x31_0000n),
      "builder.leafGpa": () => b.leafGpa(0x40_0000n),
    });
    expect(String(v)).toBe("x86 vCPU 0 (machine disposed)");
  });

  it("every call on an arm64 vCPU is the disposed error", async () => {
    const m = await createMachine({ arch: "arm64", memoryBytes: 16 * MiB, ramBase: 0x4000_0000n });
    const b = new Arm64Stage1Builder(m.memory, { tableBase: 0x4010_0000n, tableLimit: 0x4020_0000n, tsz: 16 });
    b.map(0x40_0000n, 0x4030_0000n, "4K");
    const v: Arm64Vcpu = m.vcpu(0);
    v.setSystemRegisters({ ttbr0: b.ttbr(1), tcr: LINUX_TCR, sctlr: SCTLR.M });
    expect(v.translate(0x40_0123n)).toEqual({ pa: 0x4030_0123n, pageSize: 4096, level: 3 });
    m.dispose();
    allDisposed({
      "vcpu.translate": () => v.translate(0x40_0123n),
      "vcpu.peek": () => v.peek(0x40_0123n),
      "vcpu.walk": () => v.walk(0x40_0123n),
      "vcpu.walkStage2": () => v.walkStage2(0x4030_0000n),
      "vcpu.systemRegisters": () => v.systemRegisters(),
      "vcpu.setSystemRegisters": () => v.setSystemRegisters({ pan: true }),
      "vcpu.vmid": () => v.vmid(),
      "vcpu.asid": () => v.asid(),
      "vcpu.tlbi": () => v.tlbi("VMALLE1IS"),
      "vcpu.tlbiStats": () => v.tlbiStats(),
      "vcpu.translateBatch": () => v.translateBatch(BigUint64Array.of(0x40_0000n), "read", false),
      "vcpu.decodeStatus": () => v.decodeStatus(0, 0n),
      "vcpu.tlbStats": () => v.tlbStats(),
    });
    expect(String(v)).toBe("arm64 vCPU 0 (machine disposed)");
  });

  it("is idempotent, and a handle taken before dispose cannot attach", async () => {
    const { m } = await x86Machine();
    const handle = m.handle;
    m.dispose();
    m.dispose();
    expect(m.disposed).toBe(true);
    await expect(attachVcpu(handle, 0)).rejects.toThrow(DISPOSED);
  });

  it("is what Symbol.dispose does (a `using` declaration), where the engine has it", async () => {
    const dispose = (Symbol as { dispose?: symbol }).dispose;
    if (dispose === undefined) return;
    const { m } = await x86Machine();
    (m as unknown as Record<symbol, () => void>)[dispose]!();
    expect(m.disposed).toBe(true);
  });

  it("leaves other machines working", async () => {
    const a = await x86Machine(), b = await x86Machine();
    a.m.dispose();
    expect(b.m.vcpu(0).translate(0x40_0123n, "write", true)).toEqual({ pa: 0x30_0123n, pageSize: 4096, level: 1 });
    b.m.dispose();
  });
});

describe("a disposed machine's memory is reclaimable while the machine is still referenced", () => {
  it("its WebAssembly.Memory is collected; without dispose() it is not", async () => {
    const collected = new Set<string>();
    const registry = new FinalizationRegistry<string>((name) => collected.add(name));
    const kept: unknown[] = [];
    for (const name of ["disposed", "kept"]) {
      const { m, b } = await x86Machine();
      registry.register(m.memory.wasmMemory, name);
      kept.push(m, m.memory, m.vcpu(0), m.vcpu(0).batch(), b);
      if (name === "disposed") m.dispose();
    }
    for (let i = 0; i < 10 && !collected.has("disposed"); i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(collected.has("disposed")).toBe(true);
    expect(collected.has("kept")).toBe(false);
    expect(kept).toHaveLength(10);
  });

  it("48 machines that each touch 64 MiB, kept by the caller but disposed, stay within a few machines of RSS with a collection after every fourth", async () => {
    const kept: Machine<X86Vcpu>[] = [];
    gc();
    const rss0 = process.memoryUsage().rss;
    let peak = 0;
    for (let i = 0; i < 48; i++) {
      const m = await createMachine({ arch: "x86_64", memoryBytes: 64 * MiB });
      m.memory.fill(0n, 64 * MiB, 0xa5);
      kept.push(m);
      m.dispose();
      if (i % 4 === 3) gc();
      peak = Math.max(peak, process.memoryUsage().rss - rss0);
    }
    expect(kept.every((m) => m.disposed)).toBe(true);
    // 48 × 64 MiB = 3 GiB if nothing were reclaimed; a few machines' worth is allowed for the allocator's slack.
    expect(peak).toBeLessThan(512 * MiB);
  }, 120_000);
});

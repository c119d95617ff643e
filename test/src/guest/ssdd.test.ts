/**
 * rt-tests' ssdd on the Linux guest model (src/guest/ssdd.ts): every
 * PTRACE_SINGLESTEP is a ptrace, a wait4 and an rt_sigreturn, two context
 * switches, one #DB and one SIGCHLD; grsecurity KERNEXEC clears CR0.WP only
 * around its stores to read-only kernel data and sets it again each time;
 * such a store faults with WP set and goes through with WP clear; every step
 * touches both tasks' kernel memory and the tracer's user stack; a step is
 * charged its #DB delivery, the FPU saves and restores of its two switches
 * and its signal frame, its two wakeups and its copied lines; a CPU whose
 * registers still hold a task's FPU state does not restore it; a tracee
 * detached by its tracer's exit dies of its pending SIGTRAP; runs are
 * deterministic for a seed; under shadow paging every toggle is a CR0 exit.
 */
import { describe, expect, it } from "vitest";
import { createMachine } from "../../../src/index.js";
import { CR0, PFERR } from "../../../src/x86/regs.js";
import { BareMetalCpu } from "../../../src/guest/bare-metal-cpu.js";
import { X86_BOOT_CONTROL } from "../../../src/guest/bare-metal-cpu.js";
import { LinuxGuest, KERNEL_CR0, PAGE_OFFSET, USER_LAYOUT, type LinuxWorkCosts, type Task } from "../../../src/guest/linux.js";
import type { GuestCpu, GuestPageFault } from "../../../src/guest/cpu.js";
import { runSsdd, KERNEXEC_DEFAULTS, type SsddOptions, type SsddResult } from "../../../src/guest/ssdd.js";
import { createShadowVm } from "../../../src/kvm/shadow-vm.js";
import { bareMetalGuest } from "../../helpers/guest.js";
import { disposeAfterAll } from "../../helpers/machine.js";
import { seedNote, testSeed } from "../../helpers/rng.js";

const RAM = 64 << 20;

async function bare(vcpus: number, opts: SsddOptions) {
  const g = await bareMetalGuest({ vcpus, ramMiB: 64 });
  const cr0Before = g.cpus.map((c) => c.events().cr0Write ?? 0);
  const r = runSsdd(g.guest, opts);
  const cr0Writes = g.cpus.map((c, i) => (c.events().cr0Write ?? 0) - cr0Before[i]!);
  return { ...g, r, cr0Writes };
}

/** CR0 writes one step makes: two per open/close pair, three syscalls, two switches, one #DB. */
function perStep(k: { perSyscall: number; perException: number; perSwitch: number }): number {
  return 2 * (3 * k.perSyscall + 2 * k.perSwitch + k.perException);
}

function withoutWall(r: SsddResult): Omit<SsddResult, "wallMs"> {
  const { wallMs: _, ...rest } = r;
  return rest;
}

describe("ssdd on bare metal", () => {
  it("makes each step a ptrace, a wait4 and an rt_sigreturn, two context switches, one #DB and one SIGCHLD (1 vCPU)", async () => {
    const { r, cr0Writes } = await bare(1, { pairs: 2, iterations: 25 });
    expect(r.steps).toBe(50);
    expect(r.inSteps).toEqual({ syscalls: 150, contextSwitches: 100, debugExceptions: 50, signals: 50, cr0Writes: 50 * perStep(KERNEXEC_DEFAULTS) });
    expect(r.debugExceptions).toBe(50);
    // Setup and teardown add the attach stop's SIGCHLD per pair, forks, execve, waits and exits.
    expect(r.signals).toBe(52);
    expect(r.stats.syscalls).toBe(r.syscalls);
    expect(r.stats.contextSwitches).toBe(r.contextSwitches);
    expect(r.stats).toMatchObject({ forks: 4, execs: 1, exits: 5, segv: 0 });
    expect(cr0Writes).toEqual([r.cr0Writes]);
    expect(r.readOnlyStores * 2).toBe(r.cr0Writes);
    expect(r.cycles[0]).toBeGreaterThan(0);
    expect(r.pageFaults).toBeGreaterThan(0);
    expect(r.userAccesses).toBeGreaterThan(50 * 8);
    expect(r.kernelAccesses).toBeGreaterThan(50 * 100);
  });

  it("spreads the pairs over 2 vCPUs (pair i on vCPU i mod 2) with the same per-step events", async () => {
    const kexec = { perSyscall: 1, perException: 2, perSwitch: 3 };
    const { r, cr0Writes, guest } = await bare(2, { pairs: 3, iterations: 20, kernexec: kexec });
    expect(r.steps).toBe(60);
    expect(r.inSteps).toEqual({ syscalls: 180, contextSwitches: 120, debugExceptions: 60, signals: 60, cr0Writes: 60 * perStep(kexec) });
    expect(cr0Writes[0]! + cr0Writes[1]!).toBe(r.cr0Writes);
    // vCPU 1 runs one pair, vCPU 0 two pairs and main: each step's toggles land where its pair runs.
    expect(cr0Writes[1]).toBeGreaterThanOrEqual(20 * perStep(kexec));
    expect(cr0Writes[0]).toBeGreaterThanOrEqual(40 * perStep(kexec));
    expect(r.cycles.every((c) => c > 0)).toBe(true);
    expect(guest.cpus.every((c) => c.current === null)).toBe(true);
  });

  it("makes no CR0 write and no read-only store with KERNEXEC off, and the same steps otherwise", async () => {
    const on = await bare(2, { pairs: 2, iterations: 15 });
    const off = await bare(2, { pairs: 2, iterations: 15, kernexec: false });
    expect(off.r.cr0Writes).toBe(0);
    expect(off.r.readOnlyStores).toBe(0);
    expect(off.cr0Writes).toEqual([0, 0]);
    expect(off.r.kernexec).toBe(false);
    expect(on.r.cr0Writes).toBeGreaterThan(0);
    const { cr0Writes: _a, ...stepsOn } = on.r.inSteps;
    const { cr0Writes: _b, ...stepsOff } = off.r.inSteps;
    expect(stepsOff).toEqual(stepsOn);
    expect(off.r.syscalls).toBe(on.r.syscalls);
    expect(off.r.contextSwitches).toBe(on.r.contextSwitches);
    expect(off.r.cycles[0]).toBeLessThan(on.r.cycles[0]!);
  });

  it("ends with no step left at iterations 0: attach, one SIGCHLD, exit", async () => {
    const { r } = await bare(1, { pairs: 1, iterations: 0 });
    expect(r.steps).toBe(0);
    expect(r.inSteps).toEqual({ syscalls: 0, contextSwitches: 0, debugExceptions: 0, signals: 0, cr0Writes: 0 });
    expect(r.signals).toBe(1);
    expect(r.debugExceptions).toBe(0);
  });

  it("is deterministic for a seed", async () => {
    const seed = testSeed();
    const a = await bare(2, { pairs: 3, iterations: 10, seed });
    const b = await bare(2, { pairs: 3, iterations: 10, seed });
    expect(withoutWall(b.r), seedNote(seed)).toEqual(withoutWall(a.r));
    expect(b.cr0Writes, seedNote(seed)).toEqual(a.cr0Writes);
  });

  it("runs every vCPU's CR0 writes in simulated-time order (interleave fine, the default), which whole-slice interleaving (block) does not, with the same guest program", async () => {
    const times = async (interleave?: "fine" | "block") => {
      const g = await bareMetalGuest({ vcpus: 3, ramMiB: 64 });
      const log: number[] = [];
      for (const c of g.cpus) {
        const write = c.writeCr0.bind(c);
        c.writeCr0 = (v: bigint) => { log.push(c.cycles); return write(v); };
      }
      const r = runSsdd(g.guest, { pairs: 5, iterations: 20, ...(interleave ? { interleave } : {}) });
      return { log, r };
    };
    const fine = await times(), coarse = await times("block");
    const outOfOrder = (log: number[]) => log.filter((t, i) => i > 0 && t < log[i - 1]!).length;
    expect(fine.log.length).toBe(fine.r.cr0Writes);
    expect(outOfOrder(fine.log)).toBe(0);
    expect(outOfOrder(coarse.log)).toBeGreaterThan(0);
    expect(coarse.r.inSteps).toEqual(fine.r.inSteps);
    expect(coarse.r.steps).toBe(fine.r.steps);
  });

  it("reports progress up to 1", async () => {
    const seen: number[] = [];
    await bare(1, { pairs: 2, iterations: 300, onProgress: (f) => seen.push(f) });
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.at(-1)).toBe(1);
    expect(seen.every((f, i) => f >= 0 && f <= 1 && (i === 0 || f >= seen[i - 1]!))).toBe(true);
  });
});

/** A GuestCpu that forwards to a BareMetalCpu and lets the test watch CR0 writes, stores and accesses. */
function watched(cpu: BareMetalCpu, hooks: { cr0?: (cpu: BareMetalCpu) => void; store?: (cpu: BareMetalCpu, va: bigint) => void; access?: (cpu: BareMetalCpu, va: bigint, gpa: bigint | null, kind: string) => void }): GuestCpu {
  return new Proxy(cpu, {
    get(t, k) {
      if (k === "writeCr0") return (v: bigint) => { const e = t.writeCr0(v); hooks.cr0?.(t); return e; };
      if (k === "store64") return (va: bigint, v: bigint) => { hooks.store?.(t, va); return t.store64(va, v); };
      if (k === "access") return (va: bigint, a: "read" | "write" | "fetch", u: boolean) => { const r = t.access(va, a, u); hooks.access?.(t, va, typeof r === "bigint" ? r : null, a); return r; };
      const v = Reflect.get(t, k, t) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  }) as unknown as GuestCpu;
}

describe("KERNEXEC's CR0.WP toggles", () => {
  it("clear WP only around the stores to read-only data (with the writer's code and source) and set it again after every close", async () => {
    const machine = disposeAfterAll(await createMachine({ arch: "x86_64", memoryBytes: RAM, vcpus: 2 }));
    const bm = BareMetalCpu.forMachine(machine);
    const wp = (c: BareMetalCpu) => (c.vcpu.control().cr0 & CR0.WP) !== 0n;
    const history: boolean[][] = [[], []];
    let rodata = -1n, roStores = 0, otherStores = 0, booted = false;
    const bad: string[] = [];
    const whileOpen: Record<string, number> = {};
    const cpus = bm.map((c) => watched(c, {
      cr0: (t) => history[t.index]!.push(wp(t)),
      access: (t, _va, _gpa, kind) => { if (booted && !wp(t)) whileOpen[kind] = (whileOpen[kind] ?? 0) + 1; },
      store: (t, va) => {
        if (!booted) return;
        const ro = rodata >= 0n && va >= rodata && va < rodata + 5n * 4096n;
        if (ro) roStores++; else otherStores++;
        if (ro === wp(t)) bad.push(`${ro ? "read-only" : "other"} store at 0x${va.toString(16)} with WP=${wp(t)}`);
      },
    }));
    const guest = new LinuxGuest(cpus, { ramBytes: RAM });
    guest.boot();
    booted = true;
    for (const h of history) h.length = 0;
    rodata = guest.mapReadOnlyData(5);
    const r = runSsdd(guest, { pairs: 2, iterations: 12 });
    expect(bad).toEqual([]);
    expect(roStores).toBe(r.readOnlyStores);
    // pax_switch_mm and native_load_tls: one line of their code and one of their source each, nothing else.
    expect(whileOpen).toEqual({ fetch: r.readOnlyStores, read: r.readOnlyStores });
    expect(otherStores).toBeGreaterThan(0);
    expect(history[0]!.length + history[1]!.length).toBe(r.cr0Writes);
    for (const h of history) {
      expect(h.length % 2).toBe(0);
      expect(h.every((set, i) => set === (i % 2 === 1))).toBe(true);
    }
    expect(bm.every(wp)).toBe(true);
  });

  it("exist because a kernel store to read-only data faults (#PF, P=1 W=1) with WP set and goes through with WP clear", async () => {
    const { guest, cpus, machine } = await bareMetalGuest({ vcpus: 1, ramMiB: 64 });
    const va = guest.mapReadOnlyData(1), cpu = cpus[0]!;
    const gpa = cpu.access(va, "read", false);
    expect(typeof gpa).toBe("bigint");
    const f = cpu.store64(va + 8n, 0x1234n) as GuestPageFault;
    expect(f).toMatchObject({ cr2: va + 8n });
    expect(f.errorCode & (PFERR.P | PFERR.W | PFERR.U)).toBe(PFERR.P | PFERR.W);
    expect(machine.memory.read64((gpa as bigint) + 8n)).toBe(0n);
    expect(cpu.writeCr0(KERNEL_CR0 & ~CR0.WP)).toBeNull();
    expect(cpu.store64(va + 8n, 0x1234n)).toBeNull();
    expect(machine.memory.read64((gpa as bigint) + 8n)).toBe(0x1234n);
    expect(cpu.writeCr0(KERNEL_CR0)).toBeNull();
    expect(cpu.store64(va + 8n, 0x5678n)).toMatchObject({ cr2: va + 8n });
    expect(cpu.access(va, "write", true)).toMatchObject({ cr2: va });
  });
});

describe("a step's guest memory", () => {
  it("touches, every step, both tasks' kernel stacks and task data, the tracer's user stack and the tracee's text", async () => {
    const machine = disposeAfterAll(await createMachine({ arch: "x86_64", memoryBytes: RAM, vcpus: 1 }));
    let guest: LinuxGuest | undefined;
    const hits = new Map<string, number>();
    const bump = (k: string) => hits.set(k, (hits.get(k) ?? 0) + 1);
    const cpus = BareMetalCpu.forMachine(machine).map((c) => watched(c, {
      access: (t, va, gpa) => {
        const task: Task | null | undefined = guest?.cpus[t.index]!.current;
        if (!task || gpa === null) return;
        const pfn = Number(gpa >> 12n);
        if (va >= PAGE_OFFSET && (pfn === task.kstack || pfn === task.kstack + 1)) bump(`kstack ${task.pid}`);
        if (va >= PAGE_OFFSET && pfn === task.slab) bump(`slab ${task.pid}`);
        if (va < BigInt(USER_LAYOUT.stackTop) && va >= BigInt(USER_LAYOUT.stackTop - 4096)) bump(`stack ${task.pid}`);
        if (va >= BigInt(USER_LAYOUT.pieBase) && va < BigInt(USER_LAYOUT.pieBase) + 8n * 4096n) bump(`text ${task.pid}`);
      },
    }));
    guest = new LinuxGuest(cpus, { ramBytes: RAM });
    guest.boot();
    const iterations = 40;
    const r = runSsdd(guest, { pairs: 1, iterations });
    expect(r.steps).toBe(iterations);
    // pid 1 is main's first image; main execs as pid 1, forks the tracer (pid 2), which forks the tracee (pid 3).
    for (const k of ["kstack 2", "slab 2", "stack 2", "text 2", "kstack 3", "slab 3", "text 3"]) {
      expect(hits.get(k) ?? 0, k).toBeGreaterThanOrEqual(iterations);
    }
  });
});

/** Cycles and guest counters of one run on a fresh 1-vCPU bare-metal guest (machine disposed at once). */
async function oneRun(opts: SsddOptions, work?: Partial<LinuxWorkCosts>) {
  const machine = await createMachine({ arch: "x86_64", memoryBytes: RAM, vcpus: 1 });
  try {
    const guest = new LinuxGuest(BareMetalCpu.forMachine(machine), { ramBytes: RAM, pti: false, work });
    guest.boot();
    const r = runSsdd(guest, opts);
    return { cycles: r.cycles[0]!, stats: r.stats, steps: r.steps };
  } finally {
    machine.dispose();
  }
}

/** Per step: what `iterations` steps add to a run of 0 (set-up and teardown cancel). */
async function perStepRun(pairs: number, iterations: number, work?: Partial<LinuxWorkCosts>) {
  const a = await oneRun({ pairs, iterations, kernexec: false }, work);
  const b = await oneRun({ pairs, iterations: 0, kernexec: false }, work);
  const steps = a.steps;
  const stat = (k: keyof typeof a.stats) => (a.stats[k] - b.stats[k]) / steps;
  return { cycles: (a.cycles - b.cycles) / steps, stat };
}

describe("what a step charges besides its accesses", () => {
  it("charges one #DB delivery, three FPU saves and three restores (two switches, the signal frame), two wakeups and 14 copied lines", async () => {
    const big = 100_000;
    const zero = { exceptionDelivery: 0, fpuSave: 0, fpuRestore: 0, wakeup: 0, copyLine: 0 };
    const base = await perStepRun(1, 12, zero);
    const expected: [keyof typeof zero, number][] = [["exceptionDelivery", 1], ["fpuSave", 3], ["fpuRestore", 3], ["wakeup", 2], ["copyLine", 14]];
    for (const [k, n] of expected) {
      const r = await perStepRun(1, 12, { ...zero, [k]: big });
      expect(r.cycles - base.cycles, k).toBe(n * big);
    }
    // Of the FPU operations, the context switches make two saves and two restores; the signal frame the third of each.
    expect(base.stat("fpuSaves")).toBe(2);
    expect(base.stat("fpuRestores")).toBe(2);
    expect(base.stat("wakeups")).toBe(2);
    expect(base.stat("contextSwitches")).toBe(2);
  });

  it("charges the same per step with 10 pairs on one vCPU", async () => {
    const zero = { fpuSave: 0, fpuRestore: 0 };
    const base = await perStepRun(10, 6, zero);
    const r = await perStepRun(10, 6, { fpuSave: 1000, fpuRestore: 10 });
    expect(r.cycles - base.cycles).toBe(3 * 1000 + 3 * 10);
    expect(base.stat("fpuRestores")).toBe(2);
  });
});

describe("the FPU switch at a context switch", () => {
  it("saves prev's state every time and restores next's unless this CPU's registers still hold it from next's last run here", async () => {
    const { guest } = await bareMetalGuest({ vcpus: 2, ramMiB: 64 });
    const [c0, c1] = guest.cpus as [typeof guest.cpus[0], typeof guest.cpus[0]];
    const a = guest.spawnInit(c0, "a"), b = guest.spawnInit(c0, "b");
    const s0 = { ...guest.stats };
    const delta = () => ({ saves: guest.stats.fpuSaves - s0.fpuSaves, restores: guest.stats.fpuRestores - s0.fpuRestores });
    guest.switchTo(c0, a);
    expect(delta()).toEqual({ saves: 0, restores: 1 });
    guest.switchTo(c0, null);
    guest.switchTo(c0, a);
    // To idle and back: a's state never left the registers (fpregs_state_valid).
    expect(delta()).toEqual({ saves: 1, restores: 1 });
    guest.switchTo(c0, b);
    guest.switchTo(c0, a);
    expect(delta()).toEqual({ saves: 3, restores: 3 });
    // a runs on CPU 1, then comes back to CPU 0, which still names it owner: last_cpu says CPU 1, so it is restored.
    guest.switchTo(c0, null);
    guest.switchTo(c1, a);
    guest.switchTo(c1, null);
    guest.switchTo(c0, a);
    expect(delta()).toEqual({ saves: 5, restores: 5 });
  });
});

describe("the end of a pair", () => {
  it("lets each tracee, detached by its tracer's exit, take its pending SIGTRAP through get_signal before do_exit", async () => {
    const machine = disposeAfterAll(await createMachine({ arch: "x86_64", memoryBytes: RAM, vcpus: 1 }));
    let guest: LinuxGuest | undefined;
    const exited = new Set<Task>();
    const signalWrites = new Map<Task, number>();
    const cpus = BareMetalCpu.forMachine(machine).map((c) => watched(c, {
      access: (t, va, gpa, kind) => {
        const task = guest?.cpus[t.index]!.current;
        if (!task || gpa === null || kind !== "write" || va < PAGE_OFFSET || Number(gpa >> 12n) !== task.slab) return;
        if (task.parent && exited.has(task.parent) && !exited.has(task)) signalWrites.set(task, (signalWrites.get(task) ?? 0) + 1);
      },
    }));
    guest = new LinuxGuest(cpus, { ramBytes: RAM });
    guest.boot();
    const order: Task[] = [];
    const exit = guest.exit.bind(guest);
    guest.exit = (lc, t) => {
      order.push(t);
      exited.add(t);
      exit(lc, t);
    };
    const r = runSsdd(guest, { pairs: 2, iterations: 5 });
    expect(r.stats.exits).toBe(5);
    const tracees = order.filter((t) => t.parent !== null && t.parent.parent !== null);
    expect(tracees).toHaveLength(2);
    for (const te of tracees) {
      expect(order.indexOf(te)).toBeGreaterThan(order.indexOf(te.parent!));
      expect(signalWrites.get(te) ?? 0, `pid ${te.pid}`).toBeGreaterThan(0);
    }
  });
});

describe("ssdd under shadow paging", () => {
  it("makes every KERNEXEC toggle a CR0 exit, and none with KERNEXEC off", async () => {
    const exitsOf = async (kernexec: SsddOptions["kernexec"]) => {
      const vm = await createShadowVm({ vcpus: 2, memoryBytes: RAM, policy: "shahid2018" });
      disposeAfterAll(vm.machine);
      for (const v of vm.vcpus) v.start({ ...X86_BOOT_CONTROL });
      const guest = new LinuxGuest(vm.vcpus, { ramBytes: RAM });
      guest.boot();
      const before = vm.vcpus.map((v) => v.exits.cr0);
      const r = runSsdd(guest, { pairs: 2, iterations: 4, kernexec });
      return { r, cr0: vm.vcpus.reduce((n, v, i) => n + v.exits.cr0 - before[i]!, 0) };
    };
    const on = await exitsOf(undefined);
    expect(on.r.steps).toBe(8);
    expect(on.r.inSteps).toMatchObject({ syscalls: 24, contextSwitches: 16, debugExceptions: 8 });
    expect(on.cr0).toBe(on.r.cr0Writes);
    expect(on.r.cr0Writes).toBeGreaterThanOrEqual(8 * perStep(KERNEXEC_DEFAULTS));
    const off = await exitsOf(false);
    expect(off.cr0).toBe(0);
    expect(off.r.steps).toBe(8);
  });

  it("lets the guest's store to read-only data through with WP clear and faults it with WP set", async () => {
    const vm = await createShadowVm({ vcpus: 1, memoryBytes: RAM, policy: "shahid2018" });
    disposeAfterAll(vm.machine);
    vm.vcpus[0]!.start({ ...X86_BOOT_CONTROL });
    const guest = new LinuxGuest(vm.vcpus, { ramBytes: RAM });
    guest.boot();
    const va = guest.mapReadOnlyData(1), cpu = vm.vcpus[0]!;
    const f = cpu.store64(va, 7n) as GuestPageFault;
    expect(f).toMatchObject({ cr2: va });
    expect(f.errorCode & (PFERR.P | PFERR.W)).toBe(PFERR.P | PFERR.W);
    expect(cpu.writeCr0(KERNEL_CR0 & ~CR0.WP)).toBeNull();
    expect(cpu.store64(va, 7n)).toBeNull();
    expect(cpu.writeCr0(KERNEL_CR0)).toBeNull();
    expect(cpu.store64(va, 8n)).toMatchObject({ cr2: va });
  });
});

describe("bad input", () => {
  it("names the option", async () => {
    const { guest } = await bareMetalGuest({ vcpus: 1, ramMiB: 64 });
    expect(() => runSsdd(guest, { pairs: 0, iterations: 1 })).toThrow(/^vmmu: pairs must be an integer 1\.\.4096/);
    expect(() => runSsdd(guest, { pairs: 1, iterations: 1.5 })).toThrow(/^vmmu: iterations must be/);
    expect(() => runSsdd(guest, { pairs: 1, iterations: 1, kernexec: { perSwitch: -1 } })).toThrow(/^vmmu: kernexec\.perSwitch must be an integer 0\.\.64/);
    expect(() => runSsdd(guest, { pairs: 1, iterations: 1, kernexec: true as unknown as false })).toThrow(TypeError);
    expect(() => runSsdd({} as LinuxGuest, { pairs: 1, iterations: 1 })).toThrow(/^vmmu: guest must be a LinuxGuest/);
    expect(() => runSsdd(guest, { pairs: 1, iterations: 1, interleave: "exit" as never })).toThrow(/^vmmu: interleave must be one of fine, block, got "exit"/);
  });

  it("maps the read-only data once: a second, smaller request returns it; a larger one throws", async () => {
    const { guest } = await bareMetalGuest({ vcpus: 1, ramMiB: 64 });
    const va = guest.mapReadOnlyData(3);
    expect(guest.mapReadOnlyData(2)).toBe(va);
    expect(() => guest.mapReadOnlyData(4)).toThrow(/^vmmu: pages must be at most 3/);
    expect(() => guest.mapReadOnlyData(0)).toThrow(/^vmmu: pages must be an integer 1\.\.512/);
  });
});

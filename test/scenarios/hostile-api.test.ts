/**
 * Every wrong-typed or out-of-range argument at the public API is a `vmmu:`
 * error naming the parameter (src/validate.ts): a TypeError for a wrong type,
 * a RangeError for a value out of range — never an engine error that names
 * nothing ("Cannot convert 4096 to a BigInt", "Cannot mix BigInt and other
 * types"), and never a silent coercion (a string address, `user: "false"`
 * meaning CPL 3, `vcpu("constructor")` returning Array, a pa above the entry's
 * address field mapped as pa 0). Each probe is one call with one bad argument
 * and otherwise good ones.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createMachine, attachVcpu, X86PageTableBuilder, Arm64Stage1Builder, Arm64Stage2Builder, LONG_MODE, LINUX_TCR, SCTLR,
  decodeTlbi, encodeTlbiVa, encodeTlbiRange, linuxFlushTlbRange, kvmTlbFlushVmidRange,
  type Machine, type MachineOptions, type X86Vcpu, type Arm64Vcpu,
} from "../../src/index.js";
import { createShadowVm } from "../../src/kvm/shadow-vm.js";
import { policyByName } from "../../src/kvm/policy.js";
import { DEFAULT_COSTS, withOverrides } from "../../src/kvm/cost-model.js";
import { BareMetalCpu, LinuxGuest, runKernelCompile } from "../../src/guest/index.js";

type Call = () => unknown;
interface Probe { what: string; call: Call; param: string }

/** Values that are not bigints (undefined only where the parameter has no default). */
const NOT_BIGINT: unknown[] = ["0x400123", 4096, 4096.5, NaN, null, {}, [], true, "__proto__", "constructor", () => 0];
const NOT_BOOL: unknown[] = ["false", "true", 0, 1, null, {}, 0n, "__proto__"];
const NOT_INT: unknown[] = ["1", 1.5, NaN, Infinity, -Infinity, null, {}, 1n, "constructor"];
const NOT_ACCESS: unknown[] = ["READ", "exec", "", "__proto__", "constructor", "toString", "hasOwnProperty", 0, 1, null, {}, ["read"]];
const NOT_OBJECT: unknown[] = [null, "x", 1, true, 1n, []];
const U64_OUT: bigint[] = [1n << 64n, -(1n << 63n) - 1n, 1n << 100n];
const fmt = (v: unknown): string => typeof v === "bigint" ? `${v}n` : typeof v === "function" ? "a function" : typeof v === "string" ? JSON.stringify(v) : Array.isArray(v) ? "[…]" : v !== null && typeof v === "object" ? "{…}" : String(v);

const probes: Probe[] = [];
const asyncProbes: Probe[] = [];
/** One probe per bad value: `make(v)` calls the API with `v` in the place of `param`. */
function each(label: string, param: string, values: readonly unknown[], make: (v: never) => unknown, into = probes): void {
  for (const v of values) into.push({ what: `${label} with ${param} = ${fmt(v)}`, call: () => make(v as never), param });
}

const MiB = 1 << 20;
let x86m: Machine<X86Vcpu>;
let armm: Machine<Arm64Vcpu>;
let xb: X86PageTableBuilder;
let s1: Arm64Stage1Builder;
let s2: Arm64Stage2Builder;
const VA = 0x40_0000n;

beforeAll(async () => {
  x86m = await createMachine({ arch: "x86_64", memoryBytes: 16 * MiB, vcpus: 2 });
  xb = new X86PageTableBuilder(x86m.memory, { tableBase: 0x10_0000n, tableLimit: 0x80_0000n });
  xb.map(VA, 0x90_0000n, "4K", { write: true, user: true });
  x86m.vcpu(0).setControl({ ...LONG_MODE, cr3: xb.root });
  armm = await createMachine({ arch: "arm64", memoryBytes: 16 * MiB, ramBase: 0x4000_0000n });
  s1 = new Arm64Stage1Builder(armm.memory, { tableBase: 0x4010_0000n, tableLimit: 0x4040_0000n, tsz: 16 });
  s1.map(VA, 0x4090_0000n);
  s2 = new Arm64Stage2Builder(armm.memory, { tableBase: 0x4050_0000n, tableLimit: 0x4080_0000n, ipaBits: 40, startLevel: 1 });
  armm.vcpu(0).setSystemRegisters({ ttbr0: s1.ttbr(1), tcr: LINUX_TCR, sctlr: SCTLR.M });
});
afterAll(() => {
  x86m?.dispose();
  armm?.dispose();
});

// ---------------------------------------------------------------- createMachine
{
  const good = { arch: "x86_64", memoryBytes: MiB } as const;
  const opt = (key: string, values: unknown[]) =>
    each("createMachine", key, values, (v) => createMachine({ ...good, [key]: v } as unknown as MachineOptions), asyncProbes);
  opt("arch", ["x86", "riscv64", "__proto__", "constructor", "toString", 64, null, undefined, {}]);
  opt("memoryBytes", [...NOT_BIGINT.filter((v) => typeof v !== "number"), undefined, 0, -4096, 4097, 4096.5, NaN, 1e300, -4096n, 1n << 64n]);
  opt("vcpus", [...NOT_INT, 0, -1, 257]);
  opt("maxPhysAddrBits", [...NOT_INT, 35, 53]);
  opt("tlbEntries", [...NOT_INT, 8, 1000, 1 << 21]);
  opt("eagerBytes", ["1", null, {}, -4096, MiB + 4096, 0.5, 1n << 64n]);
  opt("poolBytes", [...NOT_INT, -4096, 100]);
  opt("ramBase", [4096, "0", null, {}, -4096n, 0x1800n]);
  opt("maxHostBytes", ["1", null, -1, 0.5, 5n << 30n]);
  opt("populate", [42, "f", {}, null, true]);
  for (const o of [undefined, null, "x86_64", [], 1]) {
    asyncProbes.push({ what: `createMachine(${fmt(o)})`, call: () => createMachine(o as unknown as MachineOptions), param: "options" });
  }
  asyncProbes.push({
    what: "createMachine with 256 vCPUs × 2^20 TLB entries", param: "tlbEntries",
    call: () => createMachine({ ...good, vcpus: 256, tlbEntries: 1 << 20 }),
  });
  each("attachVcpu", "handle", [null, {}, "h", 1], (h) => attachVcpu(h, 0), asyncProbes);
  each("attachVcpu", "index", [...NOT_INT, -1, 2, 300], (i) => attachVcpu(x86m.handle, i), asyncProbes);
}

// ---------------------------------------------------------------- machine and memory
each("machine.vcpu", "index", ["constructor", "__proto__", "0", null, {}, 1.5, -1, 2, 256, NaN, 0n], (i) => x86m.vcpu(i));
{
  const mem = () => x86m.memory;
  each("memory.read64", "gpa", [...NOT_BIGINT, undefined, -8n, 16n * BigInt(MiB), 1n << 64n], (g) => mem().read64(g));
  each("memory.write64", "gpa", [...NOT_BIGINT, undefined, -8n, 1n << 64n], (g) => mem().write64(g, 1n));
  each("memory.write64", "value", [...NOT_BIGINT, undefined, ...U64_OUT], (v) => mem().write64(0x1000n, v));
  each("memory.cmpxchg64", "gpa", [...NOT_BIGINT, 0x1004n], (g) => mem().cmpxchg64(g, 0n, 1n));
  each("memory.cmpxchg64", "expected", [4096, "0", null, ...U64_OUT], (v) => mem().cmpxchg64(0x1000n, v, 1n));
  each("memory.cmpxchg64", "desired", [4096, "0", undefined, ...U64_OUT], (v) => mem().cmpxchg64(0x1000n, 0n, v));
  each("memory.read", "gpa", [...NOT_BIGINT, -1n], (g) => mem().read(g, 8));
  each("memory.read", "length", [...NOT_INT, -1, 2 ** 40, undefined], (n) => mem().read(0x1000n, n));
  each("memory.readInto", "out", ["abc", [1, 2], null, {}, new Uint16Array(4), 8], (o) => mem().readInto(0x1000n, o));
  each("memory.write", "bytes", ["abc", [1, 2], null, {}, new Uint16Array(4), 8, undefined], (b) => mem().write(0x1000n, b));
  each("memory.write", "gpa", [...NOT_BIGINT, 1n << 64n], (g) => mem().write(g, Uint8Array.of(1)));
  each("memory.fill", "length", [...NOT_INT, -1], (n) => mem().fill(0x1000n, n, 0));
  each("memory.fill", "byte", [...NOT_INT, 256, -1], (b) => mem().fill(0x1000n, 8, b));
  each("memory.contains", "gpa", NOT_BIGINT, (g) => mem().contains(g));
}

// ---------------------------------------------------------------- x86 vCPU
{
  const v = () => x86m.vcpu(0);
  each("x86 translate", "va", NOT_BIGINT, (va) => v().translate(va));
  each("x86 translate", "access", NOT_ACCESS, (a) => v().translate(VA, a));
  each("x86 translate", "user", NOT_BOOL, (u) => v().translate(VA, "read", u));
  each("x86 translatePa", "va", NOT_BIGINT, (va) => v().translatePa(va));
  each("x86 translatePa", "user", NOT_BOOL, (u) => v().translatePa(VA, "read", u));
  each("x86 peek", "va", [...NOT_BIGINT, undefined], (va) => v().peek(va));
  each("x86 walk", "va", NOT_BIGINT, (va) => v().walk(va));
  each("x86 walk", "access", NOT_ACCESS, (a) => v().walk(VA, a));
  each("x86 walk", "user", NOT_BOOL, (u) => v().walk(VA, "read", u));
  each("x86 walk", "opts", NOT_OBJECT, (o) => v().walk(VA, "read", false, o));
  each("x86 walk", "opts.setAD", ["false", 0, null], (s) => v().walk(VA, "read", false, { setAD: s }));
  each("x86 walkRecorded", "setAD", [undefined, "false", 0], (s) => v().walkRecorded(VA, "read", false, s));
  each("x86 setControl", "control", [...NOT_OBJECT, undefined], (c) => v().setControl(c));
  for (const reg of ["cr0", "cr3", "cr4", "efer", "pkru", "rflags"]) {
    each("x86 setControl", reg, [1, "0x1000", null, true, ...U64_OUT], (x) => v().setControl({ [reg]: x }));
  }
  each("x86 writeCr0", "value", [...NOT_BIGINT, undefined, ...U64_OUT], (x) => v().writeCr0(x));
  each("x86 writeCr3", "value", [...NOT_BIGINT, undefined, ...U64_OUT], (x) => v().writeCr3(x));
  each("x86 writeCr4", "value", [...NOT_BIGINT, undefined, ...U64_OUT], (x) => v().writeCr4(x));
  each("x86 invlpg", "va", [...NOT_BIGINT, undefined], (va) => v().invlpg(va));
  each("x86 invpcid", "type", [...NOT_INT, undefined], (t) => v().invpcid(t, 0));
  each("x86 invpcid", "pcid", [...NOT_INT, undefined], (p) => v().invpcid(2, p));
  each("x86 invpcid", "va", NOT_BIGINT, (va) => v().invpcid(0, 0, va));
  each("x86 translateBatch", "va", [[VA], "x", null, new Uint32Array(1), new BigInt64Array(1)], (a) => v().translateBatch(a, "read", false));
  each("x86 translateBatch", "access", [...NOT_ACCESS.filter((a) => typeof a === "string"), null, [0], new Uint16Array(1), Uint8Array.of(3)], (a) => v().translateBatch(BigUint64Array.of(VA), a, false));
  each("x86 translateBatch", "user", [...NOT_BOOL, undefined], (u) => v().translateBatch(BigUint64Array.of(VA), "read", u));
  each("x86 translateBatch", "out", [null, "x"], (o) => v().translateBatch(BigUint64Array.of(VA), "read", false, o));
  each("x86 translateBatch", "out.pa", [{ pa: [0n], status: new Uint32Array(1) }, { status: new Uint32Array(1) }], (o) => v().translateBatch(BigUint64Array.of(VA), "read", false, o));
  each("x86 batch.run", "count", [...NOT_INT, -1, 1 << 20], (n) => v().batch().run(n, false));
  each("x86 batch.run", "user", [...NOT_BOOL, undefined], (u) => v().batch().run(0, u));
  each("x86 translateUntilFault", "start", [...NOT_INT, -1, 5], (s) => v().translateUntilFault(s, 1, false));
  each("x86 translateUntilFault", "count", [...NOT_INT, -1, 1 << 20], (n) => v().translateUntilFault(0, n, false));
  each("x86 translateUntilFault", "user", NOT_BOOL, (u) => v().translateUntilFault(0, 0, u));
  each("x86 decodeStatus", "status", [...NOT_INT, -1, 2 ** 32], (s) => v().decodeStatus(s, 0n));
  each("x86 decodeStatus", "pa", [...NOT_BIGINT, undefined], (p) => v().decodeStatus(0, p));
  each("x86 setTlbEnabled", "on", [...NOT_BOOL, undefined], (o) => v().setTlbEnabled(o));
}

// ---------------------------------------------------------------- arm64 vCPU
{
  const v = () => armm.vcpu(0);
  each("arm64 translate", "va", NOT_BIGINT, (va) => v().translate(va));
  each("arm64 translate", "access", NOT_ACCESS, (a) => v().translate(VA, a));
  each("arm64 translate", "el0", NOT_BOOL, (e) => v().translate(VA, "read", e));
  each("arm64 peek", "va", [...NOT_BIGINT, undefined], (va) => v().peek(va));
  each("arm64 peek", "opts", NOT_OBJECT, (o) => v().peek(VA, o));
  each("arm64 peek", "opts.el0", ["true", 1], (e) => v().peek(VA, { el0: e }));
  each("arm64 peek", "opts.pan", ["true", 1], (p) => v().peek(VA, { pan: p }));
  each("arm64 walk", "va", NOT_BIGINT, (va) => v().walk(va));
  each("arm64 walk", "el0", NOT_BOOL, (e) => v().walk(VA, "read", e));
  each("arm64 walk", "opts.update", ["false", 0, null], (u) => v().walk(VA, "read", false, { update: u }));
  each("arm64 walkStage2", "ipa", [...NOT_BIGINT, undefined], (i) => v().walkStage2(i));
  each("arm64 walkStage2", "access", NOT_ACCESS, (a) => v().walkStage2(0n, a));
  each("arm64 setSystemRegisters", "registers", [...NOT_OBJECT, undefined], (r) => v().setSystemRegisters(r));
  for (const reg of ["ttbr0", "ttbr1", "tcr", "sctlr", "mair", "vttbr", "vtcr", "hcr"]) {
    each("arm64 setSystemRegisters", reg, [1, "0x1000", null, true, ...U64_OUT], (x) => v().setSystemRegisters({ [reg]: x }));
  }
  each("arm64 setSystemRegisters", "pan", ["true", 1, null, 1n << 64n], (p) => v().setSystemRegisters({ pan: p }));
  each("arm64 tlbi", "op", [5, null, undefined, {}, "__proto__", "constructor", "toString", "VAE1", "VAE1ISIS", "FOO"].filter((o) => o !== "VAE1"), (o) => v().tlbi(o));
  each("arm64 tlbi", "operand", [5, "0", null, ...U64_OUT], (x) => v().tlbi("VAE1IS", x));
  each("arm64 translateBatch", "va", [[VA], null], (a) => v().translateBatch(a, "read", false));
  each("arm64 translateBatch", "el0", [...NOT_BOOL, undefined], (e) => v().translateBatch(BigUint64Array.of(VA), "read", e));
  each("arm64 batch.run", "el0", [...NOT_BOOL, undefined], (e) => v().batch().run(0, e));
  each("arm64 decodeStatus", "status", [...NOT_INT, -1], (s) => v().decodeStatus(s, 0n));
}

// ---------------------------------------------------------------- TLBI encodings and Linux's range flushes
each("decodeTlbi", "op", [5, null, undefined, "__proto__", "constructor", "hasOwnProperty", "NOPE"], (o) => decodeTlbi(o, 0n, { asid16: true }));
each("decodeTlbi", "operand", [5, "0", null, undefined, ...U64_OUT], (x) => decodeTlbi("VAE1IS", x, { asid16: true }));
each("decodeTlbi", "opts", [...NOT_OBJECT, undefined], (o) => decodeTlbi("VAE1IS", 0n, o));
each("decodeTlbi", "opts.asid16", ["yes", 1, undefined], (a) => decodeTlbi("VAE1IS", 0n, { asid16: a }));
each("encodeTlbiVa", "va", NOT_BIGINT, (va) => encodeTlbiVa(va, 1));
each("encodeTlbiVa", "asid", [...NOT_INT, -1, 0x10000], (a) => encodeTlbiVa(VA, a));
each("encodeTlbiVa", "ttlLevel", ["1", 4, -1, 1.5], (l) => encodeTlbiVa(VA, 1, l));
{
  const good = { baseVa: VA, asid: 1, scale: 0, num: 1, ttl: 0 };
  each("encodeTlbiRange", "fields", [...NOT_OBJECT, undefined], (f) => encodeTlbiRange(f));
  each("encodeTlbiRange", "baseVa", [4096, "0", undefined], (b) => encodeTlbiRange({ ...good, baseVa: b }));
  each("encodeTlbiRange", "asid", ["1", 0x10000, -1], (a) => encodeTlbiRange({ ...good, asid: a }));
  each("encodeTlbiRange", "scale", ["1", 5, -1, 1.5], (s) => encodeTlbiRange({ ...good, scale: s }));
  each("encodeTlbiRange", "num", ["1", 32, -1], (n) => encodeTlbiRange({ ...good, num: n }));
  each("encodeTlbiRange", "ttl", ["1", 4, -1], (t) => encodeTlbiRange({ ...good, ttl: t }));
  const flush = { start: VA, pages: 4n, tlbRange: true };
  each("linuxFlushTlbRange", "opts", [...NOT_OBJECT, undefined], (o) => linuxFlushTlbRange(o));
  each("linuxFlushTlbRange", "start", [4096, "0", undefined, -1n], (s) => linuxFlushTlbRange({ ...flush, start: s }));
  each("linuxFlushTlbRange", "pages", [4, "4", null, -1n], (p) => linuxFlushTlbRange({ ...flush, pages: p }));
  each("linuxFlushTlbRange", "stride", [4096, "4096", 0x1800n], (s) => linuxFlushTlbRange({ ...flush, stride: s }));
  each("linuxFlushTlbRange", "asid", ["1", 0x10000, 1.5], (a) => linuxFlushTlbRange({ ...flush, asid: a }));
  each("linuxFlushTlbRange", "tlbLevel", ["1", 4], (l) => linuxFlushTlbRange({ ...flush, tlbLevel: l }));
  each("linuxFlushTlbRange", "tlbRange", ["true", 1, undefined], (t) => linuxFlushTlbRange({ ...flush, tlbRange: t }));
  each("linuxFlushTlbRange", "variant", ["v6.7", "__proto__", 6.6], (t) => linuxFlushTlbRange({ ...flush, variant: t }));
  each("linuxFlushTlbRange", "lastLevel", ["true", 1], (t) => linuxFlushTlbRange({ ...flush, lastLevel: t }));
  each("kvmTlbFlushVmidRange", "size", [4096, "4096", null, -1n], (s) => kvmTlbFlushVmidRange({ start: 0n, size: s, tlbRange: true }));
  each("kvmTlbFlushVmidRange", "start", [0, "0", -4096n], (s) => kvmTlbFlushVmidRange({ start: s, size: 4096n, tlbRange: true }));
}

// ---------------------------------------------------------------- page-table builders
{
  const mk = (o: unknown) => new X86PageTableBuilder(x86m.memory, o as never);
  const good = { tableBase: 0x90_0000n, tableLimit: 0xa0_0000n };
  each("new X86PageTableBuilder", "memory", [null, {}, "m", undefined], (m) => new X86PageTableBuilder(m, good));
  each("new X86PageTableBuilder", "options", [...NOT_OBJECT, undefined], (o) => mk(o));
  each("new X86PageTableBuilder", "levels", [3, 2, 6, "4", null, 4.5, 4n], (l) => mk({ ...good, levels: l }));
  each("new X86PageTableBuilder", "tableBase", [0x90_0000, "0x900000", undefined, null, -4096n, 0x90_0800n, 1n << 64n], (b) => mk({ ...good, tableBase: b }));
  each("new X86PageTableBuilder", "tableLimit", [0xa0_0000, undefined, null, 0x90_0000n, 1n << 64n], (l) => mk({ ...good, tableLimit: l }));
  each("new X86PageTableBuilder", "tableFlags", [7, "7", 1n << 64n], (f) => mk({ ...good, tableFlags: f }));
  const b = () => xb;
  each("x86 builder map", "va", [...NOT_BIGINT, undefined, -4096n, 1n << 64n, 0x0000_8000_0000_0000n, 0xffff_7fff_ffff_f000n, 0x0100_0000_0000_0000n], (va) => b().map(va, 0x90_1000n));
  each("x86 builder map", "pa", [...NOT_BIGINT, undefined, 1n << 53n, 1n << 52n, -4096n, 1n << 64n], (pa) => b().map(VA + 0x1000n, pa));
  each("x86 builder map", "size", ["4k", "4KB", "__proto__", "constructor", "toString", 4096, null], (s) => b().map(VA + 0x1000n, 0x90_1000n, s));
  each("x86 builder map", "flags", NOT_OBJECT, (f) => b().map(VA + 0x1000n, 0x90_1000n, "4K", f));
  for (const k of ["write", "user", "nx", "global", "pwt", "pcd", "pat", "accessed", "dirty"]) {
    each("x86 builder map", `flags.${k}`, ["false", 1, null], (x) => b().map(VA + 0x1000n, 0x90_1000n, "4K", { [k]: x }));
  }
  each("x86 builder map", "flags.pkey", [16, -1, "1", 1.5, null], (p) => b().map(VA + 0x1000n, 0x90_1000n, "4K", { pkey: p }));
  each("x86 builder map", "flags.raw", [1, "1", null, 1n << 64n], (r) => b().map(VA + 0x1000n, 0x90_1000n, "4K", { raw: r }));
  each("x86 builder mapRange", "count", [...NOT_INT, -1], (n) => b().mapRange(VA + 0x1000n, 0x90_1000n, n));
  each("x86 builder mapRange", "va + count pages", [2], (n) => b().mapRange(0x0000_7fff_ffff_f000n, 0x90_1000n, n));
  each("x86 builder entryAt", "level", [...NOT_INT, 0, 5, -1], (l) => b().entryAt(VA, l));
  each("x86 builder entryAt", "va", [...NOT_BIGINT, 0x0000_8000_0000_0000n], (va) => b().entryAt(va, 1));
  each("x86 builder leafGpa", "va", [...NOT_BIGINT, 0x0000_8000_0000_0000n], (va) => b().leafGpa(va));
  each("x86 builder unmap", "va", [...NOT_BIGINT, 0x0000_8000_0000_0000n], (va) => b().unmap(va));
  each("X86PageTableBuilder.leaf", "pa", [1n << 53n, 4096, undefined], (pa) => X86PageTableBuilder.leaf(pa, "4K"));
  each("X86PageTableBuilder.leaf", "size", ["1M", "__proto__", undefined].filter((s) => s !== undefined), (s) => X86PageTableBuilder.leaf(0n, s));
  each("X86PageTableBuilder.entryGpa", "level", [0, 6, "1"], (l) => X86PageTableBuilder.entryGpa(0x1000n, VA, l));
  each("X86PageTableBuilder.entryGpa", "table", [4096, "0x1000"], (t) => X86PageTableBuilder.entryGpa(t, VA, 1));
  each("a 5-level builder map", "va", [0x0100_0000_0000_0000n, 0xfeff_ffff_ffff_f000n], (va) =>
    new X86PageTableBuilder(x86m.memory, { levels: 5, tableBase: 0xa0_0000n, tableLimit: 0xb0_0000n }).map(va, 0n));

  const s1mk = (o: unknown) => new Arm64Stage1Builder(armm.memory, o as never);
  const g1 = { tableBase: 0x4090_0000n, tableLimit: 0x40a0_0000n };
  each("new Arm64Stage1Builder", "memory", [null, {}], (m) => new Arm64Stage1Builder(m, g1));
  each("new Arm64Stage1Builder", "options", [...NOT_OBJECT, undefined], (o) => s1mk(o));
  each("new Arm64Stage1Builder", "tsz", [15, 40, "16", 16.5, null], (t) => s1mk({ ...g1, tsz: t }));
  each("new Arm64Stage1Builder", "tableBase", [0x4090_0000, undefined, 0x4090_0800n], (b) => s1mk({ ...g1, tableBase: b }));
  each("new Arm64Stage1Builder", "tableLimit", [0x40a0_0000, undefined, 0x4090_0000n], (l) => s1mk({ ...g1, tableLimit: l }));
  each("new Arm64Stage1Builder", "tableOffset", [0, "0", -1n], (t) => s1mk({ ...g1, tableOffset: t }));
  each("arm64 stage-1 map", "va", [...NOT_BIGINT, -4096n, 1n << 64n, 0x0001_0000_0000_0000n, 0xfffe_0000_0000_0000n], (va) => s1.map(va, 0x4091_0000n));
  each("arm64 stage-1 map", "pa", [...NOT_BIGINT, 1n << 48n, -4096n], (pa) => s1.map(VA + 0x1000n, pa));
  each("arm64 stage-1 map", "size", ["64K", "__proto__", "constructor", 4096], (s) => s1.map(VA + 0x1000n, 0x4091_0000n, s));
  for (const k of ["el0", "readOnly", "uxn", "pxn", "nG", "af", "dbm"]) {
    each("arm64 stage-1 map", `flags.${k}`, ["true", 1], (x) => s1.map(VA + 0x1000n, 0x4091_0000n, "4K", { [k]: x }));
  }
  each("arm64 stage-1 map", "flags.attrIndx", [8, -1, "1"], (a) => s1.map(VA + 0x1000n, 0x4091_0000n, "4K", { attrIndx: a }));
  each("arm64 stage-1 map", "tableFlags.apTable", [4, "1"], (a) => s1.map(VA + (1n << 30n), 0x4091_0000n, "4K", {}, { apTable: a }));
  each("arm64 stage-1 map", "tableFlags", NOT_OBJECT, (t) => s1.map(VA + (1n << 30n), 0x4091_0000n, "4K", {}, t));
  each("arm64 stage-1 ttbr", "asid", [...NOT_INT, -1, 0x10000], (a) => s1.ttbr(a));
  each("arm64 stage-1 leafPa", "addr", NOT_BIGINT, (a) => s1.leafPa(a));

  const s2mk = (o: unknown) => new Arm64Stage2Builder(armm.memory, o as never);
  const g2 = { tableBase: 0x40a0_0000n, tableLimit: 0x40c0_0000n, ipaBits: 40, startLevel: 1 };
  each("new Arm64Stage2Builder", "ipaBits", ["40", 60, 24, undefined], (b) => s2mk({ ...g2, ipaBits: b }));
  each("new Arm64Stage2Builder", "startLevel", ["1", 4, -1, undefined], (l) => s2mk({ ...g2, startLevel: l }));
  each("arm64 stage-2 map", "ipa", [...NOT_BIGINT, 1n << 40n, -4096n], (i) => s2.map(i, 0x4091_0000n));
  each("arm64 stage-2 map", "pa", [1n << 48n, 4096], (pa) => s2.map(0x1000n, pa));
  each("arm64 stage-2 map", "flags.xn", [4, "1", -1], (x) => s2.map(0x1000n, 0x4091_0000n, "4K", { xn: x }));
  each("arm64 stage-2 map", "flags.write", ["false", 0], (x) => s2.map(0x1000n, 0x4091_0000n, "4K", { write: x }));
  each("arm64 stage-2 vttbr", "vmid", [...NOT_INT, -1, 0x10000], (v) => s2.vttbr(v));
}

// ---------------------------------------------------------------- hypervisor and guest models users construct
{
  each("createShadowVm", "opts", [...NOT_OBJECT, undefined], (o) => createShadowVm(o), asyncProbes);
  each("createShadowVm", "vcpus", [...NOT_INT, 0, 129, undefined], (n) => createShadowVm({ vcpus: n, memoryBytes: 64 * MiB }), asyncProbes);
  each("createShadowVm", "policy", ["__proto__", "constructor", "toString", "nope", 5, null], (p) => createShadowVm({ vcpus: 1, memoryBytes: 64 * MiB, policy: p }), asyncProbes);
  each("createShadowVm", "costs", ["x", null, 5], (c) => createShadowVm({ vcpus: 1, memoryBytes: 64 * MiB, costs: c }), asyncProbes);
  each("createShadowVm", "costs.vmExit", ["1", -1, NaN, Infinity, 1e13], (c) => createShadowVm({ vcpus: 1, memoryBytes: 64 * MiB, costs: { ...DEFAULT_COSTS, vmExit: c } }), asyncProbes);
  each("policyByName", "policy", ["__proto__", "constructor", "toString", "hasOwnProperty", "", 5, null], (n) => policyByName(n));
  each("withOverrides", "__proto__", [1], () => withOverrides(DEFAULT_COSTS, JSON.parse('{"__proto__": 1}') as Record<string, number>));
  each("withOverrides", "constructor", [1], (v) => withOverrides(DEFAULT_COSTS, { constructor: v } as unknown as Record<string, number>));
  each("withOverrides", "vmExit", [NaN, -1, Infinity, "5", 1e13], (v) => withOverrides(DEFAULT_COSTS, { vmExit: v }));
  each("new BareMetalCpu", "vcpu", [null, {}, "v", undefined], (v) => new BareMetalCpu(v));
  each("new BareMetalCpu", "opts", NOT_OBJECT, (o) => new BareMetalCpu(x86m.vcpu(1), o));
  each("new BareMetalCpu", "opts.invpcid", ["yes", 1], (i) => new BareMetalCpu(x86m.vcpu(1), { invpcid: i }));
  each("new BareMetalCpu", "opts.reset", ["no", 0], (r) => new BareMetalCpu(x86m.vcpu(1), { reset: r }));
  each("new BareMetalCpu", "opts.costs", ["x", null], (c) => new BareMetalCpu(x86m.vcpu(1), { costs: c }));
  const cpus = () => [new BareMetalCpu(x86m.vcpu(1), { reset: false })];
  each("new LinuxGuest", "cpus", [[], null, "cpu", [{}], undefined], (c) => new LinuxGuest(c, { ramBytes: 64 * MiB }));
  each("new LinuxGuest", "opts", [...NOT_OBJECT, undefined], (o) => new LinuxGuest(cpus(), o));
  each("new LinuxGuest", "ramBytes", ["67108864", undefined, null, -1, 3 * MiB, 64 * MiB + 0.5], (r) => new LinuxGuest(cpus(), { ramBytes: r }));
  each("new LinuxGuest", "ramBase", [0, "0", 0x1000n, -(2n << 20n)], (b) => new LinuxGuest(cpus(), { ramBytes: 64 * MiB, ramBase: b }));
  each("new LinuxGuest", "pti", ["false", 0], (p) => new LinuxGuest(cpus(), { ramBytes: 64 * MiB, pti: p }));
  each("new LinuxGuest", "pcid", ["false", 0], (p) => new LinuxGuest(cpus(), { ramBytes: 64 * MiB, pcid: p }));
  each("new LinuxGuest", "kernelTextBytes", ["8", 3 * MiB, -2 * MiB], (k) => new LinuxGuest(cpus(), { ramBytes: 64 * MiB, kernelTextBytes: k }));
  each("new LinuxGuest", "trace", ["log", 5], (t) => new LinuxGuest(cpus(), { ramBytes: 64 * MiB, trace: t }));
  const guest = () => new LinuxGuest(cpus(), { ramBytes: 64 * MiB });
  const kc = { jobs: 1, seed: 1 };
  each("runKernelCompile", "opts", [...NOT_OBJECT, undefined], (o) => runKernelCompile(guest(), o));
  each("runKernelCompile", "jobs", [...NOT_INT, 0, undefined], (j) => runKernelCompile(guest(), { ...kc, jobs: j }));
  each("runKernelCompile", "seed", ["1", -1, 2 ** 32, 1.5, undefined], (x) => runKernelCompile(guest(), { ...kc, seed: x }));
  each("runKernelCompile", "accessesPerProcess", ["1", 0, -1], (a) => runKernelCompile(guest(), { ...kc, accessesPerProcess: a }));
  each("runKernelCompile", "trace", [{ addr: new Float64Array(0), kind: new Uint8Array(0), length: 0 }, "t", null, [1]], (t) => runKernelCompile(guest(), { ...kc, trace: t }));
  each("runKernelCompile", "onProgress", ["f", 1], (f) => runKernelCompile(guest(), { ...kc, onProgress: f }));
  each("runKernelCompile", "coldCache", ["yes", 1], (c) => runKernelCompile(guest(), { ...kc, coldCache: c }));
}

/** Runs `call`; returns what it threw (or undefined), awaiting a returned promise. */
async function thrownBy(call: Call): Promise<unknown> {
  try {
    await call();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** The failures of one probe, as readable lines (empty when it behaved). */
function judge(p: Probe, e: unknown): string[] {
  if (e === undefined) return [`${p.what}: did not throw`];
  if (!(e instanceof Error)) return [`${p.what}: threw a non-Error ${String(e)}`];
  const out: string[] = [];
  if (!e.message.startsWith("vmmu: ")) out.push(`${p.what}: message does not start with 'vmmu: ': ${e.constructor.name}: ${e.message}`);
  if (!e.message.includes(p.param)) out.push(`${p.what}: message does not name ${p.param}: ${e.message}`);
  if (!(e instanceof TypeError || e instanceof RangeError || e.constructor === Error)) out.push(`${p.what}: threw a ${e.constructor.name}`);
  return out;
}

describe("every hostile argument is a vmmu: error naming the parameter", () => {
  it(`${probes.length} synchronous probes across the machine, memory, vCPU, TLBI, builder and guest APIs`, async () => {
    const failures: string[] = [];
    for (const p of probes) failures.push(...judge(p, await thrownBy(p.call)));
    expect(failures).toEqual([]);
    expect(probes.length).toBeGreaterThan(400);
  });

  it(`${asyncProbes.length} probes of createMachine, attachVcpu and createShadowVm reject`, async () => {
    const failures: string[] = [];
    for (const p of asyncProbes) failures.push(...judge(p, await thrownBy(p.call)));
    expect(failures).toEqual([]);
  });

  it("the machines probed still work: no refused call changed them", () => {
    expect(x86m.vcpu(0).translate(VA + 0x10n, "write", true)).toEqual({ pa: 0x90_0010n, pageSize: 4096, level: 1 });
    expect(armm.vcpu(0).translate(VA + 0x10n)).toEqual({ pa: 0x4090_0010n, pageSize: 4096, level: 3 });
    expect(x86m.memory.read64(0x1000n)).toBe(0n);
  });

  it("wrong types are TypeErrors and values out of range RangeErrors", async () => {
    const v = x86m.vcpu(0);
    expect(await thrownBy(() => v.translate("0x400123" as never))).toEqual(new TypeError('vmmu: va must be a bigint, got "0x400123"'));
    expect(await thrownBy(() => v.translate(VA, "read", "false" as never))).toEqual(new TypeError('vmmu: user must be a boolean, got "false"'));
    expect(await thrownBy(() => xb.map(VA, 1n << 53n))).toBeInstanceOf(RangeError);
    expect(await thrownBy(() => x86m.memory.write64(0n, 1n << 64n))).toBeInstanceOf(RangeError);
    expect(await thrownBy(() => x86m.vcpu("constructor" as never))).toBeInstanceOf(TypeError);
    expect(await thrownBy(() => createMachine({ arch: "x86_64", memoryBytes: MiB, populate: 42 as never }))).toEqual(new TypeError("vmmu: populate must be a function or undefined, got 42"));
  });
});

/**
 * Differential tests of the wasm x86-64 walker against the reference walker (src/ref/x86-walk.ts),
 * Intel SDM Vol.3A §4.5 (4/5-level paging), §4.6 (access rights, protection keys), §4.7 (#PF
 * error code), §4.8 (accessed and dirty flags) and §4.10 (TLB): random paging structures, random
 * control registers, MAXPHYADDR and memslots, random accesses. Every wasm entry point — walk,
 * walk without A/D, translate with a cold and a warm TLB, peek, translateBatch and the raw batch
 * views — must give the reference's result and leave every paging-structure word exactly as the
 * reference leaves its own copy.
 */
import { describe, expect, it } from "vitest";
import { createMachine, type GuestMemory, type X86Control, type X86TranslateResult, type X86Vcpu } from "../../src/index.js";
import { refTranslateX86, type RefAccess, type RefResult, type RefX86State } from "../../src/ref/x86-walk.js";
import { fuzzCount, Rng, seedNote, testSeed } from "../helpers/rng.js";
import {
  RamMirror, builderTree, describeWalk, hx, randomAccessVa, randomControl, randomTree, refState,
  type RandomTree, type TreeSpace,
} from "../helpers/random-tables.js";
import { verbose } from "../helpers/note.js";

const MiB = 1n << 20n;
const ACCESSES: readonly RefAccess[] = ["read", "write", "fetch"];
const seed = testSeed();
const scale = Math.max(1, Number(process.env.VMMU_DIFF_SCALE ?? 1) || 1);

/** One machine of a run: a memslot below 2^MAXPHYADDR and the vCPU under test (0, or 1 of 2). */
interface Round {
  space: TreeSpace;
  memory: GuestMemory;
  vcpu: X86Vcpu;
  eagerBytes: bigint;
  tlbOn: boolean;
}

/** Outcome in one shape for both walkers. */
type Outcome =
  | { ok: true; pa: bigint; pageSize: number; level: number }
  | { ok: false; vector: number; errorCode: number; level: number; kind: string; gpa?: bigint };

function fromVcpu(r: X86TranslateResult): Outcome {
  if ("fault" in r) {
    const f = r.fault;
    return { ok: false, vector: f.vector, errorCode: f.errorCode, level: f.level, kind: f.kind, ...(f.kind === "abort" ? { gpa: f.gpa } : {}) };
  }
  return { ok: true, pa: r.pa, pageSize: r.pageSize, level: r.level };
}

function fromRef(r: RefResult): Outcome {
  if (r.ok) return { ok: true, pa: r.pa, pageSize: r.pageSize, level: r.level };
  return { ok: false, vector: r.vector, errorCode: r.errorCode, level: r.level, kind: r.kind, ...(r.kind === "abort" ? { gpa: r.gpa } : {}) };
}

function show(o: Outcome): string {
  if (o.ok) return `ok pa=${hx(o.pa)} size=${o.pageSize} level=${o.level}`;
  const gpa = o.kind === "abort" ? ` gpa=${o.gpa === undefined ? "none" : hx(o.gpa)}` : "";
  return `${o.kind} vector=${o.vector} error=${hx(BigInt(o.errorCode))} level=${o.level}${gpa}`;
}

/** Outcome classes the generator must keep producing. */
function classes(o: Outcome): string[] {
  if (o.ok) {
    if (o.level === 0) return ["ok paging off"];
    return [o.pageSize === 4096 ? "ok 4K" : o.pageSize === 1 << 21 ? "ok 2M" : "ok 1G"];
  }
  if (o.kind === "general-protection") return ["#GP"];
  if (o.kind === "abort") return ["abort", `abort L${o.level}`];
  const e = o.errorCode;
  const out: string[] = [];
  if ((e & 1) === 0) out.push("#PF not present", `#PF not present L${o.level}`);
  else if (e & 8) out.push("#PF reserved", `#PF reserved L${o.level}`);
  else if (e & 32) out.push("#PF key");
  else out.push("#PF rights");
  if (e & 2) out.push("#PF W");
  if (e & 4) out.push("#PF U");
  if (e & 16) out.push("#PF I/D");
  return out;
}

class Tally {
  readonly counts = new Map<string, number>();
  add(name: string, n = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + n);
  }
  outcome(o: Outcome): void {
    for (const c of classes(o)) this.add(c);
  }
  get(name: string): number {
    return this.counts.get(name) ?? 0;
  }
  toString(): string {
    return [...this.counts].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}: ${v}`).join(", ");
  }
}

/** Shuffled MAXPHYADDR values covering 36..52 once, plus a few repeats. */
function maxPhysSchedule(rng: Rng, extra: number): number[] {
  const ms = Array.from({ length: 17 }, (_, i) => 36 + i);
  for (let i = 0; i < extra; i++) ms.push(36 + rng.int(17));
  for (let i = ms.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [ms[i], ms[j]] = [ms[j]!, ms[i]!];
  }
  return ms;
}

async function newRound(rng: Rng, m: number): Promise<Round> {
  const ramBytes = rng.pick([16n, 16n, 32n]) * MiB;
  const top = 1n << BigInt(m);
  const r = rng.u32() / 0x1_0000_0000;
  const ramBase = r < 0.55 ? 0n : r < 0.85 ? (rng.u64() % ((top - ramBytes) >> 12n)) << 12n : top - ramBytes;
  const eagerBytes = rng.chance(0.75) ? ramBytes : (rng.u64() % (ramBytes >> 12n)) << 12n;
  const vcpus = rng.chance(0.2) ? 2 : 1;
  const machine = await createMachine({
    arch: "x86_64", memoryBytes: ramBytes, maxPhysAddrBits: m, ramBase, eagerBytes, vcpus, tlbEntries: rng.pick([16, 64, 4096]),
  });
  const vcpu = machine.vcpu(vcpus - 1);
  const levels = rng.chance(0.5) ? 4 : 5;
  const tlbOn = rng.chance(0.85);
  if (!tlbOn) vcpu.setTlbEnabled(false);
  return { space: { levels, maxPhysAddrBits: m, ramBase, ramBytes }, memory: machine.memory, vcpu, eagerBytes, tlbOn };
}

function roundNote(round: Round): string {
  const s = round.space;
  return `vCPU ${round.vcpu.index} MAXPHYADDR=${s.maxPhysAddrBits} TLB ${round.tlbOn ? "on" : "off"} RAM=[${hx(s.ramBase)}, ${hx(s.ramBase + s.ramBytes)}) eager=${hx(round.eagerBytes)} tree levels=${s.levels}`;
}

function controlNote(c: X86Control): string {
  return `cr0=${hx(c.cr0)} cr3=${hx(c.cr3)} cr4=${hx(c.cr4)} efer=${hx(c.efer)} pkru=${hx(c.pkru)} rflags=${hx(c.rflags)}`;
}

/** Words where guest memory and the reference's copy differ, with the value both started from. */
function wordDiffs(memory: GuestMemory, mirror: RamMirror, before: Map<bigint, bigint>): string[] {
  const diffs: string[] = [];
  for (const [gpa, want] of mirror.words) {
    const got = memory.read64(gpa);
    if (got !== want) diffs.push(`[${hx(gpa)}] was ${hx(before.get(gpa) ?? 0n)}: wasm ${hx(got)}, reference ${hx(want)}`);
  }
  return diffs;
}

/** Writes the tree's words to zero again, so the next tree starts from zeroed RAM. */
function clearTree(memory: GuestMemory, tree: RandomTree, mirror: RamMirror): void {
  for (const gpa of tree.words.keys()) memory.write64(gpa, 0n);
  for (const gpa of mirror.words.keys()) memory.write64(gpa, 0n);
}

/** The first non-zero word of the eagerly backed RAM, if any (lazily backed frames are not scanned). */
function strayWord(round: Round): string | undefined {
  const bytes = round.memory.bytes();
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  for (let i = 0; i < words.length; i++) {
    if (words[i] !== 0) return `gpa ${hx(round.space.ramBase + BigInt(i) * 4n)} holds ${hx(BigInt(words[i]!))}`;
  }
  return undefined;
}

/**
 * Drives one tree: every check compares the wasm outcome with the reference's and then the
 * paging-structure words of guest memory with the reference's copy.
 */
class TreeRun {
  readonly mirror: RamMirror;
  private before: Map<bigint, bigint>;

  constructor(readonly round: Round, readonly tree: RandomTree, readonly tally: Tally, readonly note: string) {
    this.mirror = new RamMirror(round.space.ramBase, round.space.ramBytes, tree.words);
    this.before = new Map(this.mirror.words);
  }

  describe(what: string, c: X86Control, va: bigint, access: RefAccess, user: boolean): string {
    const s = refState(c, this.round.space.maxPhysAddrBits);
    const pre = new RamMirror(this.round.space.ramBase, this.round.space.ramBytes, this.before);
    return `${this.note} ${what}: va=${hx(va)} ${access} ${user ? "user" : "supervisor"}\n  ${roundNote(this.round)} (${this.tree.flavour} tree)\n  ${controlNote(c)}\n  walk before the access:\n${describeWalk(pre, s, va)}`;
  }

  reference(c: X86Control, va: bigint, access: RefAccess, user: boolean, debug = false): Outcome {
    return fromRef(refTranslateX86(this.mirror, refState(c, this.round.space.maxPhysAddrBits), va, access, user, { debug }));
  }

  expectSame(got: Outcome, want: Outcome, context: () => string): void {
    const g = show(got), w = show(want);
    if (g !== w) expect(g, context()).toBe(w);
  }

  expectWords(context: () => string): void {
    const diffs = wordDiffs(this.round.memory, this.mirror, this.before);
    if (diffs.length > 0) expect(diffs, context()).toEqual([]);
    for (const [gpa, v] of this.mirror.words) {
      if (this.before.get(gpa) !== v) this.tally.add("A/D words written");
    }
    this.before = new Map(this.mirror.words);
  }

  /** Counts walks that passed through a table twice or read one word at two levels. */
  tallyShape(reads: bigint[]): void {
    const tables = reads.map((g) => g & ~0xfffn);
    if (new Set(tables).size < tables.length) this.tally.add("walks revisiting a table");
    if (new Set(reads).size < reads.length) this.tally.add("walks reading one word twice");
  }

  /** One access through walk(setAD=false), walk / translate (cold TLB) in random order, warm translates and peek. */
  single(rng: Rng, index: number): void {
    const { vcpu } = this.round;
    const c = randomControl(rng, this.tree.root, this.tree.space.levels);
    vcpu.setControl(c);
    const la57 = (c.cr4 & (1n << 12n)) !== 0n;
    const va = randomAccessVa(rng, this.tree, la57);
    const access = rng.pick(ACCESSES);
    const user = rng.chance(0.5);
    const ctx = (what: string) => () => this.describe(`case ${index} ${what}`, c, va, access, user);

    this.expectSame(fromVcpu(vcpu.peek(va)), this.reference(c, va, "read", false, true), ctx("peek"));
    const withoutAD = fromVcpu(vcpu.walk(va, access, user, { setAD: false }));
    this.expectWords(ctx("peek and walk setAD=false leave memory alone"));

    const walkFirst = rng.chance(0.5);
    for (const api of walkFirst ? ["walk", "translate"] : ["translate", "walk"]) {
      let got: Outcome;
      if (api === "walk") {
        got = fromVcpu(vcpu.walk(va, access, user));
      } else {
        vcpu.invpcid(2, 0);
        got = fromVcpu(vcpu.translate(va, access, user));
      }
      const primary = api === (walkFirst ? "walk" : "translate");
      if (primary) this.mirror.reads = [];
      const want = this.reference(c, va, access, user);
      if (primary) {
        this.tallyShape(this.mirror.reads ?? []);
        this.mirror.reads = undefined;
        this.tally.outcome(want);
        this.expectSame(withoutAD, want, ctx("walk setAD=false"));
      }
      this.expectSame(got, want, ctx(api === "walk" ? "walk" : "translate with a flushed TLB"));
      this.expectWords(ctx(`A/D after ${api}`));
    }

    const warm = rng.int(4);
    for (let i = 0; i < warm; i++) {
      const va2 = rng.chance(0.6) ? (va & ~0xfffn) | BigInt(rng.int(4096)) : randomAccessVa(rng, this.tree, la57);
      const access2 = rng.pick(ACCESSES);
      const user2 = rng.chance(0.5);
      const ctx2 = () => this.describe(`case ${index} warm translate ${i} after va=${hx(va)} ${access} ${user ? "user" : "supervisor"}`, c, va2, access2, user2);
      const want = this.reference(c, va2, access2, user2);
      this.expectSame(fromVcpu(vcpu.translate(va2, access2, user2)), want, ctx2);
      this.expectWords(ctx2);
      this.tally.add("warm translates");
    }
  }

  /** A batch over repeated and fresh addresses, with a flushed TLB and then again with the TLB it filled. */
  batch(rng: Rng, index: number): void {
    const { vcpu } = this.round;
    const c = randomControl(rng, this.tree.root, this.tree.space.levels);
    vcpu.setControl(c);
    const la57 = (c.cr4 & (1n << 12n)) !== 0n;
    const user = rng.chance(0.5);
    const distinct = Array.from({ length: 2 + rng.int(6) }, () => randomAccessVa(rng, this.tree, la57));
    const n = 4 + rng.int(60);
    const va = new BigUint64Array(n);
    for (let i = 0; i < n; i++) va[i] = rng.chance(0.7) ? rng.pick(distinct) : randomAccessVa(rng, this.tree, la57);
    const oneKind = rng.chance(0.2) ? rng.pick(ACCESSES) : undefined;
    const codes = new Uint8Array(n);
    for (let i = 0; i < n; i++) codes[i] = oneKind ? ACCESSES.indexOf(oneKind) : rng.int(3);
    const raw = rng.chance(0.3);
    vcpu.invpcid(2, 0);

    for (let pass = 0; pass < 2; pass++) {
      let pa: BigUint64Array, status: Uint32Array;
      if (raw) {
        const b = vcpu.batch();
        b.va.set(va);
        b.access.set(codes);
        b.run(n, user);
        pa = b.pa.slice(0, n);
        status = b.status.slice(0, n);
      } else {
        const out = { pa: new BigUint64Array(n), status: new Uint32Array(n) };
        vcpu.translateBatch(va, oneKind ?? codes, user, out);
        ({ pa, status } = out);
      }
      const ctxOf = (i: number) => () =>
        this.describe(`batch ${index} pass ${pass} (${raw ? "batch().run" : "translateBatch"}, ${n} addresses) element ${i}`, c, va[i]!, ACCESSES[codes[i]!]!, user);
      for (let i = 0; i < n; i++) {
        const want = this.reference(c, va[i]!, ACCESSES[codes[i]!]!, user);
        if (pass === 0) this.tally.outcome(want);
        this.expectSame(fromVcpu(vcpu.decodeStatus(status[i]!, pa[i]!)), want, ctxOf(i));
      }
      this.expectWords(() => `${this.describe(`batch ${index} pass ${pass} (${raw ? "batch().run" : "translateBatch"}, ${n} addresses) A/D writes; last element`, c, va[n - 1]!, ACCESSES[codes[n - 1]!]!, user)}`);
      this.tally.add("batch elements", n);
    }
  }
}

/** Per round (one machine): trees to generate; per tree: single accesses and batches. */
interface RunOptions {
  trees: number;
  singles: number;
  batches: number;
}

async function runAll(rng: Rng, opts: RunOptions, label: string): Promise<Tally> {
  const tally = new Tally();
  const schedule = maxPhysSchedule(rng, 3);
  for (let r = 0; r < schedule.length; r++) {
    const round = await newRound(rng, schedule[r]!);
    for (let t = 0; t < opts.trees * scale; t++) {
      const tree = rng.chance(0.15) ? builderTree(rng, round.space, round.memory) : randomTree(rng, round.space, round.memory);
      const run = new TreeRun(round, tree, tally, seedNote(seed, `${label} round ${r} tree ${t}`));
      tally.add(`${tree.flavour} trees`);
      for (let b = 0; b < opts.batches; b++) run.batch(rng, b);
      for (let i = 0; i < opts.singles; i++) {
        run.single(rng, i);
        tally.add("cases");
      }
      clearTree(round.memory, tree, run.mirror);
    }
    const stray = strayWord(round);
    expect(stray, `${seedNote(seed, `${label} round ${r}`)} RAM outside the trees stays zero (${roundNote(round)})`).toBeUndefined();
  }
  return tally;
}

function expectCoverage(tally: Tally, minimums: Record<string, number>, label: string): void {
  const short = Object.entries(minimums).filter(([k, n]) => tally.get(k) < n).map(([k, n]) => `${k}: ${tally.get(k)} < ${n}`);
  expect(short, `${seedNote(seed, label)} outcome mix too thin; tally: ${tally}`).toEqual([]);
}

describe("wasm x86-64 walker against the reference walker", () => {
  it("walk, translate and peek give the reference's outcome and A/D writes on random trees", async () => {
    const tally = await runAll(new Rng(seed), { trees: 64, singles: 12, batches: 0 }, "single");
    verbose(`[x86 differential, single] ${seedNote(seed)} ${tally}`);
    fuzzCount("x86-walk", tally.get("cases"));
    expectCoverage(tally, {
      "ok 4K": 200, "ok 2M": 100, "ok 1G": 50,
      "#PF not present": 200, "#PF reserved": 100, "#PF key": 50, "#PF rights": 200,
      "#PF W": 100, "#PF U": 100, "#PF I/D": 100,
      "#PF reserved L1": 5, "#PF reserved L2": 5, "#PF reserved L3": 5, "#PF reserved L4": 5, "#PF reserved L5": 2,
      "#PF not present L1": 5, "#PF not present L2": 5, "#PF not present L3": 5, "#PF not present L4": 5,
      "#GP": 100, abort: 30, "ok paging off": 5,
      "A/D words written": 500, "warm translates": 500, "builder trees": 20,
      "walks revisiting a table": 20, "walks reading one word twice": 5,
    }, "single");
  });

  it("translateBatch and batch().run give the reference's outcome per element and its A/D writes", async () => {
    const tally = await runAll(new Rng(seed ^ 0x5bd1_e995), { trees: 32, singles: 0, batches: 3 }, "batch");
    verbose(`[x86 differential, batch] ${seedNote(seed)} ${tally}`);
    fuzzCount("x86-walk", tally.get("batch elements"));
    expectCoverage(tally, {
      "ok 4K": 200, "ok 2M": 100, "ok 1G": 30, "#PF not present": 200, "#PF reserved": 50, "#PF key": 30,
      "#PF rights": 100, "#GP": 50, abort: 20, "A/D words written": 200,
    }, "batch");
  });
});

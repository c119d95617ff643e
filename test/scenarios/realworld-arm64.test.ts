/**
 * Real Linux arm64 page tables (Debian 6.1, nokaslr, 4 KiB granule, 48-bit VA,
 * E0PD1 instead of KPTI, QEMU TCG `-M virt`): every QEMU `gva2gpa` row is a
 * stage-1 data load at the vCPU's EL and PSTATE.PAN, so the debugger view at
 * that EL and PAN, the full-rights read walk and the independent reference
 * walker must all reproduce it; a walker that ignores PAN must not.
 * Arm ARM DDI 0487 D8 (VMSAv8-64 stage 1), docs/arm64-walk-contract.md.
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  createMachine, TCR, type Arm64TranslateResult, type Arm64Vcpu, type Machine,
} from "../../src/index.js";
import { refTranslateArm64, type RefArm64State } from "../../src/ref/arm64-walk.js";
import type { RefMemory } from "../../src/ref/x86-walk.js";
import {
  ARM64_SNAPSHOTS, describeRealworld, arm64VcpuOf, loadArm64Snapshot, writeTablePages,
  type Arm64RefRow, type Arm64Snapshot,
} from "../helpers/realworld.js";
import { verbose } from "../helpers/note.js";

const hex = (v: bigint | null | undefined): string => (v === null || v === undefined ? "null" : "0x" + v.toString(16));
const paOf = (r: Arm64TranslateResult): bigint | null => ("pa" in r ? r.pa : null);
const show = (r: Arm64TranslateResult): string => ("pa" in r ? hex(r.pa) : JSON.stringify(r.fault));
const regime = (row: Arm64RefRow): string => (row.el === 0 ? "EL0" : `EL1 PAN=${row.pan ? 1 : 0}`);
const BIT55 = 1n << 55n;

/** The address a TBI regime translates for `va`: the top byte replaced by copies of bit 55. */
const untagged = (va: bigint): bigint => ((va & BIT55) !== 0n ? va | (0xffn << 56n) : va & ((1n << 56n) - 1n));

describeRealworld("arm64", "real Linux arm64 page tables against QEMU", () => {
  for (const name of ARM64_SNAPSHOTS) {
    describe(name, () => {
      let snap: Arm64Snapshot;
      let machine: Machine<Arm64Vcpu>;
      let vcpu: Arm64Vcpu;
      let readOnly: RefMemory;

      const stateOf = (row: Arm64RefRow): RefArm64State => ({
        ttbr0: row.ttbr0, ttbr1: row.ttbr1, tcr: row.tcr, sctlr: arm64VcpuOf(snap, row.cpu).sctlr,
        vttbr: 0n, vtcr: 0n, hcr: 0n, pan: row.pan,
      });
      const useRow = (row: Arm64RefRow): void => {
        const s = stateOf(row);
        vcpu.setSystemRegisters({ ttbr0: s.ttbr0, ttbr1: s.ttbr1, tcr: s.tcr, sctlr: s.sctlr, mair: arm64VcpuOf(snap, row.cpu).mair, pan: s.pan });
      };
      const peekRow = (row: Arm64RefRow): Arm64TranslateResult => {
        useRow(row);
        return vcpu.peek(row.va, { el0: row.el === 0, pan: row.pan });
      };

      beforeAll(async () => {
        snap = loadArm64Snapshot(name);
        machine = await createMachine({ arch: "arm64", memoryBytes: snap.ramSize, ramBase: snap.ramBase });
        writeTablePages(machine.memory, snap.pages);
        vcpu = machine.vcpu(0);
        readOnly = {
          read64: (gpa) => (machine.memory.contains(gpa) ? machine.memory.read64(gpa) : undefined),
          cmpxchg64: () => true,
        };
      });

      it("records the Linux TCR_EL1 on every vCPU and row: 48-bit VAs, TBI0/TBI1, HA/HD, E0PD1", () => {
        const tcrs = new Set([...snap.vcpus.map((v) => v.tcr), ...snap.refs.map((r) => r.tcr)]);
        expect([...tcrs].map(hex)).toEqual(["0x15001f5b5503510"]);
        const tcr = [...tcrs][0]!;
        for (const bit of [TCR.TBI0, TCR.TBI1, TCR.HA, TCR.HD, TCR.E0PD1]) expect(tcr & bit).toBe(bit);
        expect(snap.pages.length).toBe(287);
      });

      it("peek at the row's EL and PAN agrees with every QEMU gva2gpa row, live and PSTATE-override passes", () => {
        const mismatches: string[] = [];
        let mapped = 0, unmapped = 0, live = 0, override = 0, refusedByRights = 0;
        const bySize: Record<string, number> = {};
        for (const row of snap.refs) {
          if (row.pstateOverride === null) live++;
          else { override++; expect({ el: row.el, pan: row.pan }).toEqual({ el: 1, pan: false }); }
          const r = peekRow(row);
          if ("pa" in r) {
            mapped++;
            bySize[r.pageSize] = (bySize[r.pageSize] ?? 0) + 1;
          } else {
            unmapped++;
            if ("pa" in vcpu.peek(row.va, { el0: false, pan: false })) refusedByRights++;
          }
          if (paOf(r) !== row.gpa) mismatches.push(`cpu${row.cpu} ${regime(row)} va ${hex(row.va)}: qemu ${hex(row.gpa)}, vmmu ${show(r)}`);
        }
        verbose(`${name}: ${snap.refs.length - mismatches.length}/${snap.refs.length} gva2gpa rows agree `
          + `(${live} live, ${override} PSTATE override; ${mapped} mapped ${JSON.stringify(bySize)}, `
          + `${unmapped} unmapped of which ${refusedByRights} only by EL0/PAN/E0PD)`);
        expect(mismatches.slice(0, 20)).toEqual([]);
        const v = snap.verification;
        expect(snap.refs.length).toBe(v.ref_total);
        expect({ live, override, mapped, refusedByRights, unmapped: unmapped - refusedByRights }).toEqual({
          live: v.agree_categories.live_pstate, override: v.agree_categories.pstate_override, mapped: v.agree_categories.mapped,
          refusedByRights: v.agree_categories["unmapped_by_permission(EL0/PAN/E0PD/AF)"],
          unmapped: v.agree_categories.unmapped_no_translation,
        });
        expect(bySize).toEqual(v.agree_mapped_by_block_size);
      });

      it("the full-rights read walk at the row's EL and PAN (no updates) gives QEMU's answer too", () => {
        const mismatches: string[] = [];
        for (const row of snap.refs) {
          useRow(row);
          const w = vcpu.walk(row.va, "read", row.el === 0, { update: false });
          if (paOf(w) !== row.gpa) mismatches.push(`cpu${row.cpu} ${regime(row)} va ${hex(row.va)}: qemu ${hex(row.gpa)}, vmmu ${show(w)}`);
        }
        verbose(`${name}: ${snap.refs.length - mismatches.length}/${snap.refs.length} read walks agree with QEMU`);
        expect(mismatches.slice(0, 20)).toEqual([]);
      });

      it("the reference walker's debugger view agrees with QEMU and with peek, fault for fault", () => {
        const mismatches: string[] = [];
        for (const row of snap.refs) {
          const got = peekRow(row);
          const ref = refTranslateArm64(readOnly, stateOf(row), row.va, "read", row.el === 0, { debug: true });
          const want: Arm64TranslateResult = ref.ok
            ? { pa: ref.pa, pageSize: ref.pageSize, level: ref.level }
            : { fault: { stage: ref.stage, fsc: ref.fsc, level: ref.level, kind: ref.kind, s1ptw: ref.s1ptw, write: ref.write } };
          if ((ref.ok ? ref.pa : null) !== row.gpa) mismatches.push(`cpu${row.cpu} ${regime(row)} va ${hex(row.va)}: qemu ${hex(row.gpa)}, reference ${show(want)}`);
          else if (show(got) !== show(want) || ("pa" in got && "pa" in want && (got.pageSize !== want.pageSize || got.level !== want.level))) {
            mismatches.push(`cpu${row.cpu} ${regime(row)} va ${hex(row.va)}: reference ${show(want)}, vmmu ${show(got)}`);
          }
        }
        verbose(`${name}: ${snap.refs.length - mismatches.length}/${snap.refs.length} rows: reference walker = QEMU = peek`);
        expect(mismatches.slice(0, 20)).toEqual([]);
      });

      it("walk matches the reference walker for read, write and fetch at EL0 and EL1 under every row's PAN", () => {
        const mismatches: string[] = [];
        let walks = 0, ok = 0;
        for (const row of snap.refs) {
          useRow(row);
          for (const access of ["read", "write", "fetch"] as const) {
            for (const el0 of [false, true]) {
              walks++;
              const got = vcpu.walk(row.va, access, el0, { update: false });
              const ref = refTranslateArm64(readOnly, stateOf(row), row.va, access, el0);
              const want: Arm64TranslateResult = ref.ok
                ? { pa: ref.pa, pageSize: ref.pageSize, level: ref.level }
                : { fault: { stage: ref.stage, fsc: ref.fsc, level: ref.level, kind: ref.kind, s1ptw: ref.s1ptw, write: ref.write } };
              if ("pa" in got) ok++;
              try {
                expect(got).toEqual(want);
              } catch {
                mismatches.push(`cpu${row.cpu} PAN=${row.pan ? 1 : 0} ${access} ${el0 ? "EL0" : "EL1"} va ${hex(row.va)}: reference ${show(want)}, vmmu ${show(got)}`);
              }
            }
          }
        }
        verbose(`${name}: ${walks - mismatches.length}/${walks} walks match the reference walker (${ok} translate)`);
        expect(mismatches.slice(0, 20)).toEqual([]);
      });

      it("translates top-byte-tagged addresses (TBI0/TBI1) exactly like their untagged forms", () => {
        const tagged = snap.refs.filter((r) => r.va !== untagged(r.va));
        const wrong: string[] = [];
        let mapped = 0;
        for (const row of tagged) {
          const r = peekRow(row);
          const plain = vcpu.peek(untagged(row.va), { el0: row.el === 0, pan: row.pan });
          if (row.gpa !== null) mapped++;
          if (paOf(r) !== row.gpa || paOf(r) !== paOf(plain)) wrong.push(`${hex(row.va)}: qemu ${hex(row.gpa)}, tagged ${show(r)}, untagged ${show(plain)}`);
        }
        verbose(`${name}: ${tagged.length} tagged rows, ${mapped} mapped by QEMU`);
        expect(wrong.slice(0, 20)).toEqual([]);
        expect(mapped).toBeGreaterThan(100);
      });

      it("leaves every table page untouched through peek and the update:false walks", () => {
        const changed = snap.pages.filter((p) => !Buffer.from(machine.memory.read(p.pa, 4096)).equals(p.bytes));
        expect(changed.map((p) => hex(p.pa))).toEqual([]);
      });

      it("negative control: peek ignoring PSTATE.PAN disagrees with QEMU wherever PAN refused an EL0 page", () => {
        let disagree = 0;
        for (const row of snap.refs) {
          useRow(row);
          if (paOf(vcpu.peek(row.va, { el0: row.el === 0, pan: false })) !== row.gpa) disagree++;
        }
        const panRows = snap.refs.filter((r) => r.el === 1 && r.pan).length;
        verbose(`${name}: ignoring PAN, ${disagree}/${snap.refs.length} rows disagree (${panRows} rows at EL1 with PAN=1)`);
        expect(disagree).toBeGreaterThan(0);
        if (name === "nokaslr_snap1") expect(disagree).toBe(652);
      });
    });
  }

  describe("the EL0 vCPU of nokaslr_snap0 (TCR_EL1.E0PD1 = 1)", () => {
    let snap: Arm64Snapshot;
    let vcpu: Arm64Vcpu;

    beforeAll(async () => {
      snap = loadArm64Snapshot("nokaslr_snap0");
      const machine = await createMachine({ arch: "arm64", memoryBytes: snap.ramSize, ramBase: snap.ramBase });
      writeTablePages(machine.memory, snap.pages);
      vcpu = machine.vcpu(0);
      const v = arm64VcpuOf(snap, 1);
      expect({ el: v.el, pan: v.pan }).toEqual({ el: 0, pan: false });
      vcpu.setSystemRegisters({ ttbr0: v.ttbr0, ttbr1: v.ttbr1, tcr: v.tcr, sctlr: v.sctlr, mair: v.mair, pan: false });
    });

    const E0PD_FAULT = { fault: { stage: 1, fsc: 0x04, level: 0, kind: "translation", s1ptw: false, write: false } };

    it("QEMU and vmmu refuse kernel addresses at EL0 with a level-0 translation fault, though EL1 maps them", () => {
      const cases: [bigint, bigint][] = [
        [0xffff_0000_0000_0000n, 0x4000_0000n],
        [0xffff_0000_000b_2610n, 0x400b_2610n],
        [0xffff_8000_0805_1fffn, 0x4025_1fffn],
        [0xffff_8000_0809_7000n, 0x4029_7000n],
      ];
      for (const [va, pa] of cases) {
        const rows = snap.refs.filter((r) => r.cpu === 1 && r.va === va);
        expect(rows.map((r) => [r.el, r.gpa])).toEqual([[0, null], [1, pa]]);
        expect(vcpu.peek(va, { el0: true })).toEqual(E0PD_FAULT);
        expect(vcpu.walk(va, "read", true, { update: false })).toEqual(E0PD_FAULT);
        expect(vcpu.peek(va, { el0: false, pan: false })).toMatchObject({ pa });
      }
    });

    it("every EL0 row for a TTBR1 address is null in QEMU and an E0PD fault in vmmu", () => {
      const rows = snap.refs.filter((r) => r.el === 0 && (r.va & BIT55) !== 0n);
      const wrong = rows.filter((r) => r.gpa !== null || JSON.stringify(vcpu.peek(r.va, { el0: true })) !== JSON.stringify(E0PD_FAULT));
      const mappedAtEl1 = rows.filter((r) => snap.refs.some((o) => o.cpu === 1 && o.el === 1 && o.va === r.va && o.gpa !== null)).length;
      verbose(`nokaslr_snap0 cpu1: ${rows.length} EL0 rows for TTBR1 addresses, all refused (${mappedAtEl1} mapped at EL1)`);
      expect(wrong.map((r) => hex(r.va))).toEqual([]);
      expect(mappedAtEl1).toBeGreaterThan(1000);
    });

    it("the user text at 0x400000 is readable at EL0 and refused at EL1 with PAN=1 (permission fault)", () => {
      expect(vcpu.peek(0x400449n, { el0: true })).toEqual({ pa: 0x5fe0_a449n, pageSize: 4096, level: 3 });
      expect(vcpu.peek(0x400449n, { el0: false, pan: true })).toEqual({
        fault: { stage: 1, fsc: 0x0f, level: 3, kind: "permission", s1ptw: false, write: false },
      });
      expect(vcpu.walk(0x400449n, "fetch", true, { update: false })).toMatchObject({ pa: 0x5fe0_a449n });
      expect(vcpu.walk(0x400449n, "write", true, { update: false })).toMatchObject({ fault: { kind: "permission", write: true } });
    });
  });
});

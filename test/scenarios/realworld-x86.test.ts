/**
 * Real Linux page tables (Debian 6.1, pti=on nokaslr, 4-level, QEMU TCG):
 * the debugger view (`peek`) must reproduce every QEMU `gva2gpa` answer and every
 * `info tlb` leaf of each vCPU's live CR3; the rights-checked walk may refuse an
 * address the debugger view maps, but never translate it elsewhere, and must
 * match the independent reference walker for every access kind and privilege.
 * Intel SDM Vol.3A §4.5 (4-level paging), §4.6 (access rights).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { createMachine, type Machine, type X86Vcpu } from "../../src/index.js";
import { refTranslateX86, type RefMemory } from "../../src/ref/x86-walk.js";
import {
  X86_SNAPSHOTS, loadInfoTlb, loadX86Snapshot, describeRealworld, vcpuOf, writeTablePages,
  type X86Snapshot,
} from "../helpers/realworld.js";
import { verbose } from "../helpers/note.js";

const PFERR_P = 1;
const hex = (v: bigint | null | undefined): string => (v === null || v === undefined ? "null" : "0x" + v.toString(16));

describeRealworld("x86_64", "real Linux x86-64 page tables against QEMU", () => {
  for (const name of X86_SNAPSHOTS) {
    describe(name, () => {
      let snap: X86Snapshot;
      let machine: Machine<X86Vcpu>;
      let vcpu: X86Vcpu;

      const useCpu = (cpu: number, cr3?: bigint): void => {
        const s = vcpuOf(snap, cpu);
        vcpu.setControl({ cr0: s.cr0, cr3: cr3 ?? s.cr3, cr4: s.cr4, efer: s.efer });
      };

      beforeAll(async () => {
        snap = loadX86Snapshot(name);
        machine = await createMachine({ arch: "x86_64", memoryBytes: snap.ramSize, ramBase: snap.ramBase, maxPhysAddrBits: 52 });
        writeTablePages(machine.memory, snap.pages);
        vcpu = machine.vcpu(0);
      });

      it("peek agrees with every QEMU gva2gpa row of both vCPUs", () => {
        const mismatches: string[] = [];
        let mapped = 0, unmapped = 0;
        for (const row of snap.refs) {
          useCpu(row.cpu, row.cr3);
          const r = vcpu.peek(row.va);
          const got = "pa" in r ? r.pa : null;
          if (got === null) unmapped++; else mapped++;
          if (got !== row.gpa) mismatches.push(`cpu${row.cpu} va ${hex(row.va)}: qemu ${hex(row.gpa)}, vmmu ${"pa" in r ? hex(r.pa) : JSON.stringify(r.fault)}`);
        }
        verbose(`${name}: ${snap.refs.length - mismatches.length}/${snap.refs.length} gva2gpa rows agree (${mapped} mapped, ${unmapped} unmapped)`);
        expect(mismatches.slice(0, 20)).toEqual([]);
        expect(snap.refs.length).toBe(snap.verification.ref_total);
        expect({ mapped, unmapped }).toEqual({ mapped: snap.verification.agree_mapped, unmapped: snap.verification.agree_unmapped });
      });

      it("the rights-checked walk gives the peek address or a #PF with P=1, never another address", () => {
        const wrong: string[] = [];
        let same = 0, refused = 0;
        for (const row of snap.refs) {
          useCpu(row.cpu, row.cr3);
          const p = vcpu.peek(row.va);
          if (!("pa" in p)) continue;
          const w = vcpu.walk(row.va, "read", false, { setAD: false });
          if ("pa" in w) {
            if (w.pa === p.pa && w.pageSize === p.pageSize) same++;
            else wrong.push(`va ${hex(row.va)}: peek ${hex(p.pa)}, walk ${hex(w.pa)}`);
          } else if (w.fault.vector === 14 && (w.fault.errorCode & PFERR_P) !== 0) {
            refused++;
          } else {
            wrong.push(`va ${hex(row.va)}: peek ${hex(p.pa)}, walk ${JSON.stringify(w.fault)}`);
          }
        }
        verbose(`${name}: supervisor read walk: ${same} same address, ${refused} refused with P=1`);
        expect(wrong.slice(0, 20)).toEqual([]);
        expect(same).toBeGreaterThan(0);
      });

      it("the rights-checked walk matches the reference walker for read, write and fetch at CPL 0 and 3", () => {
        const readOnly: RefMemory = {
          read64: (gpa) => (machine.memory.contains(gpa) ? machine.memory.read64(gpa) : undefined),
          cmpxchg64: () => true,
        };
        const wrong: string[] = [];
        let walks = 0;
        for (const row of snap.refs) {
          useCpu(row.cpu, row.cr3);
          const s = vcpuOf(snap, row.cpu);
          const state = { cr0: s.cr0, cr3: row.cr3, cr4: s.cr4, efer: s.efer, pkru: 0n, rflags: 0n, maxPhysAddrBits: 52 };
          for (const access of ["read", "write", "fetch"] as const) {
            for (const user of [false, true]) {
              walks++;
              const got = vcpu.walk(row.va, access, user, { setAD: false });
              const ref = refTranslateX86(readOnly, state, row.va, access, user);
              const want = ref.ok
                ? { pa: ref.pa, pageSize: ref.pageSize, level: ref.level }
                : { fault: { vector: ref.vector, errorCode: ref.errorCode, level: ref.level, kind: ref.kind, ...(ref.gpa !== undefined ? { gpa: ref.gpa } : {}) } };
              try {
                expect(got).toEqual(want);
              } catch {
                wrong.push(`cpu${row.cpu} ${access} ${user ? "user" : "kernel"} va ${hex(row.va)}: vmmu ${JSON.stringify(got, (_k, v) => (typeof v === "bigint" ? hex(v) : v))}`);
              }
            }
          }
        }
        verbose(`${name}: ${walks - wrong.length}/${walks} rights-checked walks match the reference walker`);
        expect(wrong.slice(0, 20)).toEqual([]);
      });

      it("leaves memory untouched through peek and the setAD:false walk", () => {
        const changed = snap.pages.filter((p) => !Buffer.from(machine.memory.read(p.pa, 4096)).equals(p.bytes));
        expect(changed.map((p) => hex(p.pa))).toEqual([]);
      });

      for (const cpu of [0, 1]) {
        it(`peek maps every info tlb leaf of vCPU ${cpu} to QEMU's address, with a large page exactly where PS is set`, () => {
          const lines = loadInfoTlb(snap, cpu);
          useCpu(cpu);
          const wrong: string[] = [];
          const sizes = new Map<number, number>();
          for (const l of lines) {
            const r = vcpu.peek(l.va);
            const large = l.flags[2] === "P";
            if (!("pa" in r)) { wrong.push(`${hex(l.va)}: qemu ${hex(l.pa)}, vmmu ${JSON.stringify(r.fault)}`); continue; }
            sizes.set(r.pageSize, (sizes.get(r.pageSize) ?? 0) + 1);
            if (r.pa !== l.pa || (r.pageSize > 4096) !== large) {
              wrong.push(`${hex(l.va)}: qemu ${hex(l.pa)} ${l.flags}, vmmu ${hex(r.pa)} size ${r.pageSize}`);
            }
          }
          verbose(`${name} cpu${cpu}: ${lines.length - wrong.length}/${lines.length} info tlb leaves agree (by page size: ${JSON.stringify(Object.fromEntries(sizes))})`);
          expect(wrong.slice(0, 20)).toEqual([]);
          expect(lines.length).toBeGreaterThan(60_000);
        });
      }
    });
  }
});

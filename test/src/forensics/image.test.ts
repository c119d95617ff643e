/**
 * Memory images: raw (pmemsave) and ELF64 cores in QEMU's dump-guest-memory
 * layout, detected by magic, read on demand as guest-physical memory; writes
 * go to an overlay. The arm64 real-Linux tables wrapped as an EM_AARCH64 core
 * reproduce every QEMU gva2gpa row through the image.
 */
import { describe, expect, it } from "vitest";
import { lookup, openImage, type ImageSource } from "../../../src/index.js";
import { openImageFile } from "../../../src/forensics/file.js";
import { EM_AARCH64, EM_X86_64, elfCore, elfNote } from "../../helpers/elf-core.js";
import { ARM64_SNAPSHOTS, loadArm64Snapshot, describeRealworld } from "../../helpers/realworld.js";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const page = (fill: number) => new Uint8Array(4096).fill(fill);

/** Counts the reads that reach the source. */
function counting(src: ImageSource): ImageSource & { reads: number } {
  const c = { size: src.size, reads: 0, read(offset: number, out: Uint8Array) { c.reads++; return src.read(offset, out); } };
  return c;
}

describe("raw images", () => {
  it("are one range from the base, read across pages, and writable only in the overlay", () => {
    const bytes = new Uint8Array(3 * 4096);
    bytes.set([1, 2, 3, 4], 4094);
    const img = openImage(bytes, { base: 0x4000_0000n });
    expect(img.format).toBe("raw");
    expect(img.arch).toBeUndefined();
    expect(img.ranges).toEqual([{ gpa: 0x4000_0000n, size: 3n * 4096n, offset: 0, stored: 3 * 4096 }]);
    expect(img.contains(0x3fff_ffffn)).toBe(false);
    expect(img.contains(0x4000_2fffn)).toBe(true);
    expect([...img.read(0x4000_0ffen, 4)]).toEqual([1, 2, 3, 4]);
    img.write(0x4000_0fffn, new Uint8Array([9, 9]));
    expect([...img.read(0x4000_0ffen, 4)]).toEqual([1, 9, 9, 4]);
    expect(bytes[4095]).toBe(2);
    expect(() => img.read(0x4000_2ffen, 4)).toThrow(/vmmu: gpa 0x40003000 is not in the image \(\[0x40000000, 0x40003000\)\)/);
  });

  it("page in from a source on demand, once per page while cached", () => {
    const src = counting({ size: 1 << 30, read: (_o, out) => { out.fill(7); return out.length; } });
    const img = openImage(src, { format: "raw" });
    expect(img.read64(0x1234_5678n)).toBe(0x0707_0707_0707_0707n);
    img.read(0x1234_5000n, 4096);
    expect(src.reads).toBe(2); // the format probe, then one page
    expect(img.pagesRead).toBe(1);
  });

  it("refuse bad options, naming them", () => {
    expect(() => openImage(new Uint8Array(0))).toThrow(/vmmu: openImage: the image is empty/);
    expect(() => openImage(new Uint8Array(4096), { base: 0x10n })).toThrow(/opts.base must be 4 KiB aligned/);
    expect(() => openImage(new Uint8Array(4096), { format: "qcow2" as "raw" })).toThrow(/vmmu: openImage: opts.format must be one of/);
    expect(() => openImage({} as ImageSource)).toThrow(/vmmu: openImage: source must be a Uint8Array or \{ size, read\(offset, out\) \}/);
    expect(() => openImage(new Uint8Array(4096), { format: "elf" })).toThrow(/not an ELF file/);
  });
});

describe("ELF cores", () => {
  const twoBlocks = (extra: Partial<Parameters<typeof elfCore>[0]> = {}) => elfCore({
    machine: EM_X86_64,
    segments: [
      { gpa: 0n, size: 0xa0000, pages: [{ pa: 0x9f000n, bytes: page(0xaa) }] },
      { gpa: 0x10_0000n, size: 0x20_0000, pages: [{ pa: 0x10_0000n, bytes: page(0xbb) }], stored: 0x1000 },
    ],
    ...extra,
  });

  it("are detected by magic; PT_LOAD p_paddr gives the ranges, with holes between and zeros past p_filesz", () => {
    const img = openImage(twoBlocks());
    expect(img.format).toBe("elf");
    expect(img.arch).toBe("x86_64");
    expect(img.ranges.map((r) => [r.gpa, r.size, r.stored])).toEqual([[0n, 0xa0000n, 0xa0000], [0x10_0000n, 0x20_0000n, 0x1000]]);
    expect(img.read(0x9f000n, 2)).toEqual(new Uint8Array([0xaa, 0xaa]));
    expect(img.read(0x10_0fffn, 2)).toEqual(new Uint8Array([0xbb, 0]));
    expect(img.contains(0xa0000n)).toBe(false);
    expect(() => img.read(0x9ffffn, 2)).toThrow(/gpa 0xa0000 is not in the image/);
    expect(img.lowGpa).toBe(0n);
    expect(img.highGpa).toBe(0x30_0000n);
  });

  it("read e_phnum from section header 0 when it is PN_XNUM", () => {
    expect(openImage(twoBlocks({ xnum: true })).ranges).toHaveLength(2);
  });

  it("carry each x86 CPU's control registers in QEMU's notes (QEMUCPUState)", () => {
    const state = (cr3: bigint) => {
      const d = new Uint8Array(440);
      const dv = new DataView(d.buffer);
      dv.setUint32(0, 1, true);
      dv.setUint32(4, 440, true);
      dv.setBigUint64(8 + 16 * 8, 0xffff_ffff_8100_0000n, true); // rip
      [0x8005_0033n, 0n, 0x1234n, cr3, 0x750ef0n].forEach((v, i) => dv.setBigUint64(392 + 8 * i, v, true));
      return d;
    };
    const prstatus = elfNote("CORE", 1, new Uint8Array(336));
    const notes = new Uint8Array([...prstatus, ...elfNote("QEMU", 0, state(0x602f000n)), ...prstatus, ...elfNote("QEMU", 0, state(0x6022000n))]);
    const img = openImage(twoBlocks({ notes }));
    expect(img.cpus.map((c) => [c.cr3, c.cr4, c.cr2, c.rip])).toEqual([
      [0x602f000n, 0x750ef0n, 0x1234n, 0xffff_ffff_8100_0000n], [0x6022000n, 0x750ef0n, 0x1234n, 0xffff_ffff_8100_0000n],
    ]);
  });

  it("that are not little-endian ELF64 x86-64/aarch64 cores are refused with the reason", () => {
    expect(() => openImage(twoBlocks({ class: 1 }))).toThrow(/vmmu: openImage: ELF class 1 is not supported \(only ELF64 cores/);
    expect(() => openImage(twoBlocks({ data: 2 }))).toThrow(/big-endian ELF is not supported/);
    expect(() => openImage(twoBlocks({ type: 2 }))).toThrow(/ELF type 2 is not ET_CORE/);
    expect(() => openImage(twoBlocks({ machine: 3 }))).toThrow(/ELF machine 3 is not EM_X86_64 \(62\) or EM_AARCH64 \(183\)/);
    expect(() => openImage(elfCore({ machine: EM_X86_64, segments: [] }))).toThrow(/no PT_LOAD segment/);
    const core = twoBlocks();
    expect(() => openImage({ size: core.size - 1, read: core.read })).toThrow(/PT_LOAD 2 \(gpa 0x100000\) extends past the end of the file: truncated core/);
    expect(() => openImage(twoBlocks(), { base: 0x1000n })).toThrow(/opts.base is for raw images/);
  });

  it("open from a file in Node, read page by page", () => {
    const dir = mkdtempSync(join(tmpdir(), "vmmu-image-"));
    try {
      const core = twoBlocks();
      const bytes = new Uint8Array(core.size);
      core.read(0, bytes);
      writeFileSync(join(dir, "core.elf"), bytes);
      const img = openImageFile(join(dir, "core.elf"));
      expect(img.format).toBe("elf");
      expect(img.read(0x10_0000n, 1)).toEqual(new Uint8Array([0xbb]));
      img.close();
      expect(() => img.read(0x9f000n, 1)).toThrow(/is closed/);
      expect(() => openImageFile(dir)).toThrow(/is not a regular file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeRealworld("arm64", "an EM_AARCH64 core of the real arm64 Linux tables", () => {
  for (const name of ARM64_SNAPSHOTS) {
    it(`${name}: lookup through the image gives QEMU's answer for every PSTATE-override row`, () => {
      const snap = loadArm64Snapshot(name);
      const img = openImage(elfCore({ machine: EM_AARCH64, segments: [{ gpa: snap.ramBase, size: Number(snap.ramSize), pages: snap.pages }] }));
      expect(img.arch).toBe("arm64");
      const wrong: string[] = [];
      for (const row of snap.refs.filter((r) => r.pstateOverride !== null)) {
        const ttbr = (row.va >> 55n) & 1n ? 1 as const : 0 as const;
        const r = lookup({ arch: "arm64", memory: img, root: ttbr ? row.ttbr1 : row.ttbr0, ttbr, tcr: row.tcr }, row.va);
        if ((r.mapped ? r.pa : null) !== row.gpa) wrong.push(`0x${row.va.toString(16)}`);
      }
      expect(wrong.slice(0, 10)).toEqual([]);
    });
  }
});

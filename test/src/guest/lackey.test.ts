/**
 * Lackey trace parsing: `valgrind --tool=lackey --trace-mem=yes` records
 * become (address, kind) streams with the x86 access codes; M is a read then
 * a write; page-crossing records touch the next page too; commentary lines
 * are skipped; parsing streams in blocks of any size and chunks of any size.
 */
import { describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ACCESS_FETCH as F, ACCESS_READ as R, ACCESS_WRITE as W, LackeyParser, collectTrace, parseLackey, readLackey, traceRegions,
  type AccessChunk,
} from "../../../src/guest/lackey.js";

const FIXTURE = fileURLToPath(new URL("./fixtures/lackey-small.txt", import.meta.url));

function pairs(t: AccessChunk): [number, number][] {
  return Array.from({ length: t.length }, (_, i) => [t.addr[i]!, t.kind[i]!]);
}

describe("lackey traces", () => {
  it("parses I, L, S and M records into fetch, read, write and read+write", () => {
    const t = parseLackey("I  04016b28,3\n L 04222cac,8\n S 7ff000398,8\n M 0421e2d0,4\n");
    expect(pairs(t)).toEqual([[0x4016b28, F], [0x4222cac, R], [0x7ff000398, W], [0x421e2d0, R], [0x421e2d0, W]]);
  });

  it("skips ==pid== lines and program output, and reads a last line without a newline", () => {
    const t = parseLackey("==1== Lackey\nI am output, 12\nLoad 1,2\n L 1000,8\r\n S 2000,4");
    expect(pairs(t)).toEqual([[0x1000, R], [0x2000, W]]);
  });

  it("adds the next page for a record whose bytes cross a page boundary", () => {
    expect(pairs(parseLackey(" S 00309ffc,8\n M 1ffc,4\n M 1ffe,4\n"))).toEqual([
      [0x309ffc, W], [0x30a000, W], [0x1ffc, R], [0x1ffc, W], [0x1ffe, R], [0x2000, R], [0x1ffe, W], [0x2000, W],
    ]);
    expect(parseLackey(" S 00309ffc,8\n", { splitPages: false }).length).toBe(1);
  });

  it("drops records at or above 2^47", () => {
    const p = new LackeyParser();
    const chunks = [...p.push(new TextEncoder().encode(" L ffff888000001000,8\n L 1000,8\n")), ...p.end()];
    expect(collectTrace(chunks).length).toBe(1);
    expect(p.counts).toMatchObject({ records: 2, dropped: 1, accesses: 1 });
  });

  it("streams a file in blocks and chunks of any size with the same result", () => {
    const whole = parseLackey(readFileSync(FIXTURE, "utf8"));
    expect(whole.length).toBe(26);
    for (const [blockBytes, chunkSize] of [[1, 4], [7, 5], [64, 1000], [1 << 20, 65536]] as const) {
      const gen = readLackey(FIXTURE, { blockBytes, chunkSize });
      const chunks: AccessChunk[] = [];
      let r = gen.next();
      for (; !r.done; r = gen.next()) {
        expect(r.value.length).toBeLessThanOrEqual(chunkSize);
        chunks.push(r.value);
      }
      expect(r.value).toMatchObject({ records: 22, accesses: 26, skipped: 8, dropped: 0 });
      expect(pairs(collectTrace(chunks))).toEqual(pairs(whole));
    }
  });

  it("reads a large trace without holding the file", () => {
    const dir = mkdtempSync(join(tmpdir(), "vmmu-lackey-"));
    const path = join(dir, "big.txt");
    const lines: string[] = ["==9== header"];
    for (let i = 0; i < 100_000; i++) lines.push(i % 3 === 0 ? `I  ${(0x400000 + i * 4).toString(16).padStart(8, "0")},4` : ` L ${(0x10000000 + i * 8).toString(16)},8`);
    writeFileSync(path, lines.join("\n") + "\n");
    let n = 0, chunks = 0;
    for (const c of readLackey(path, { blockBytes: 4096, chunkSize: 8192 })) {
      n += c.length;
      chunks++;
    }
    expect(n).toBe(100_000);
    expect(chunks).toBe(13);
    expect(collectTrace(readLackey(path), 500).length).toBe(500);
  });

  it("derives the regions a replaying process needs, with the rights the trace used", () => {
    const regions = traceRegions(parseLackey(readFileSync(FIXTURE, "utf8")));
    expect(regions.map((r) => [r.start.toString(16), r.end.toString(16), r.read, r.write, r.exec])).toEqual([
      ["108000", "10a000", false, false, true],
      ["309000", "30b000", true, true, false],
      ["4001000", "402b000", true, true, true],
      ["4c1a000", "4c1b000", false, false, true],
      ["4e2b000", "4e2c000", true, true, false],
      ["1ffefff000", "1fff000000", true, true, false],
    ]);
  });
});

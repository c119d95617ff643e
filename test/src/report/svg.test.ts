import { describe, expect, it } from "vitest";
import { barChart, lineChart, niceTicks, formatNumber, escapeXml, PALETTE } from "../../../src/report/svg.js";

/** Attribute `name` of every element matching `tag` with class `cls`, in document order. */
function attrs(svg: string, tag: string, cls: string, name: string): string[] {
  const re = new RegExp(`<${tag} class="${cls}"[^>]*?\\s${name}="([^"]*)"`, "g");
  return [...svg.matchAll(re)].map((m) => m[1]!);
}

const count = (svg: string, s: string) => svg.split(s).length - 1;

describe("niceTicks", () => {
  it("covers the range with steps of 1, 2 or 5 × 10^k", () => {
    expect(niceTicks(0, 97)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(niceTicks(0.3, 1.02, 4)).toEqual([0.2, 0.4, 0.6, 0.8, 1, 1.2]);
    expect(niceTicks(-3, 3, 6)).toEqual([-3, -2, -1, 0, 1, 2, 3]);
  });
  it("widens an empty range and swaps a reversed one", () => {
    expect(niceTicks(5, 5).at(0)).toBeLessThan(5);
    expect(niceTicks(5, 5).at(-1)).toBeGreaterThan(5);
    expect(niceTicks(10, 0)).toEqual(niceTicks(0, 10));
  });
  it("refuses a range that is not finite", () => {
    expect(() => niceTicks(0, Infinity)).toThrow(/vmmu: niceTicks range must be finite/);
  });
});

describe("formatNumber and escapeXml", () => {
  it("prints large values with k, M, G and small ones without trailing zeros", () => {
    expect([formatNumber(36_809_812), formatNumber(12_345), formatNumber(2.5e9), formatNumber(0.6), formatNumber(42)])
      .toEqual(["36.81 M", "12.3 k", "2.5 G", "0.6", "42"]);
  });
  it("escapes the five XML specials", () => {
    expect(escapeXml(`a<b & "c" 'd'>`)).toBe("a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;");
  });
});

describe("barChart", () => {
  const policies = ["baseline", "shahid2018", "lai2021", "alon2018"];
  const cycles = [36.8e6, 25.5e6, 25.5e6, 29.5e6];

  it("draws one bar per category with its value, taller for larger values", () => {
    const svg = barChart({ title: "Simulated time", categories: policies, series: [{ name: "cycles", values: cycles }], yLabel: "cycles" });
    expect(svg.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\"")).toBe(true);
    expect(attrs(svg, "rect", "bar", "data-category")).toEqual(policies);
    expect(attrs(svg, "rect", "bar", "data-value").map(Number)).toEqual(cycles);
    const heights = attrs(svg, "rect", "bar", "height").map(Number);
    expect(heights[0]).toBeGreaterThan(heights[3]!);
    expect(heights[3]).toBeGreaterThan(heights[1]!);
    expect(heights[1]).toBeCloseTo(heights[2]!, 5);
    expect(svg).toContain(">36.8 M</text>");
    expect(svg).toContain("<title>Simulated time</title>");
    expect(count(svg, 'class="legend"')).toBe(0);
  });

  it("groups several series, gives each a palette colour and a legend entry", () => {
    const svg = barChart({
      categories: ["1 vCPU", "4 vCPUs"],
      series: [{ name: "this run", values: [0.63, 0.3] }, { name: "seed", values: [0.59, null] }],
    });
    expect(attrs(svg, "rect", "bar", "data-series")).toEqual(["this run", "this run", "seed"]);
    expect(attrs(svg, "rect", "bar", "fill")).toEqual([PALETTE[0], PALETTE[0], PALETTE[1]]);
    expect(attrs(svg, "g", "legend-item", "data-series")).toEqual(["this run", "seed"]);
  });

  it("draws a reference line at its value, named in the legend", () => {
    const svg = barChart({
      categories: policies, series: [{ name: "ratio", values: [1, 0.69, 0.69, 0.8] }],
      references: [{ value: 0.591, label: "seed shahid2018 ratio" }],
    });
    expect(attrs(svg, "line", "reference", "data-value")).toEqual(["0.591"]);
    expect(attrs(svg, "g", "legend-item", "data-series")).toEqual(["ratio", "seed shahid2018 ratio"]);
    const [y] = attrs(svg, "line", "reference", "y1").map(Number);
    const barTops = attrs(svg, "rect", "bar", "y").map(Number);
    expect(y).toBeGreaterThan(barTops[1]!); // 0.591 is below the 0.69 bar's top
  });

  it("slants category labels that do not fit their slot", () => {
    const long = Array.from({ length: 14 }, (_, i) => `policy-with-a-long-name-${i}`);
    const svg = barChart({ categories: long, series: [{ name: "v", values: long.map((_, i) => i + 1) }] });
    expect(svg).toContain("rotate(-30");
    expect(barChart({ categories: ["a", "b"], series: [{ name: "v", values: [1, 2] }] })).not.toContain("rotate(-30");
  });

  it("escapes names and labels", () => {
    const svg = barChart({ title: "<t>", categories: ["a&b"], series: [{ name: "\"s\"", values: [1] }] });
    expect(svg).toContain("&lt;t&gt;");
    expect(svg).toContain('data-category="a&amp;b"');
    expect(svg).not.toContain("a&b");
  });

  it("refuses values that do not match the categories, naming the field", () => {
    expect(() => barChart({ categories: ["a", "b"], series: [{ name: "v", values: [1] }] }))
      .toThrow(/vmmu: series\[0\]\.values must have one entry per category \(2\), got 1/);
    expect(() => barChart({ categories: ["a"], series: [{ name: "v", values: [NaN] }] }))
      .toThrow(/vmmu: series\[0\]\.values\[0\] must be a finite number/);
    expect(() => barChart({ categories: ["a"], series: [] })).toThrow(/vmmu: series must be a non-empty array/);
    expect(() => barChart({ categories: ["a"], series: [{ name: "v", values: [1] }], width: 10 })).toThrow(/vmmu: width must be/);
  });
});

describe("lineChart", () => {
  it("draws one polyline per series through its points, with markers and a legend", () => {
    const svg = lineChart({
      title: "ratio over vCPUs", xLabel: "vCPUs", yLabel: "ratio",
      series: [{ name: "this run", points: [[1, 0.63], [2, 0.6], [4, 0.3]] }, { name: "seed", points: [[1, 0.59], [4, 0.29]], dashed: true }],
    });
    expect(attrs(svg, "polyline", "line", "data-series")).toEqual(["this run", "seed"]);
    const pts = attrs(svg, "polyline", "line", "points")[0]!.split(" ").map((p) => p.split(",").map(Number));
    expect(pts).toHaveLength(3);
    expect(pts[0]![0]).toBeLessThan(pts[1]![0]!);
    expect(pts[0]![1]).toBeLessThan(pts[2]![1]!); // y grows downward: 0.63 is above 0.3
    expect(count(svg, 'class="point"')).toBe(5);
    expect(svg).toContain('stroke-dasharray="6 4"');
    expect(attrs(svg, "g", "legend-item", "data-series")).toEqual(["this run", "seed"]);
    // x ticks at the distinct x values
    expect(svg).toMatch(/>1<\/text>.*>2<\/text>.*>4<\/text>/);
  });

  it("spaces x by decades on a log scale and refuses x ≤ 0 there", () => {
    const svg = lineChart({ xScale: "log", series: [{ name: "s", points: [[1e3, 1], [1e4, 2], [1e5, 3]] }] });
    const xs = attrs(svg, "circle", "point", "cx").map(Number);
    expect(xs[1]! - xs[0]!).toBeCloseTo(xs[2]! - xs[1]!, 0);
    expect(() => lineChart({ xScale: "log", series: [{ name: "s", points: [[0, 1]] }] }))
      .toThrow(/vmmu: series\[0\]\.points\[0\]\[0\] must be > 0 on a log x scale/);
    expect(() => lineChart({ series: [{ name: "s", points: [[1, Infinity]] }] }))
      .toThrow(/vmmu: series\[0\]\.points\[0\]\[1\] must be a finite number/);
  });
});

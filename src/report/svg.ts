// Charts as standalone SVG documents (SVG 1.1, W3C REC-SVG11 §9 basic shapes,
// §10 text): a bar chart (categories × series, grouped) and a line chart
// (numeric x), each with axes, tick labels, axis titles, a legend and optional
// horizontal reference lines. Pure string output, no DOM, so the same code
// draws in Node (reports written to disk) and in a page (innerHTML).
//
// Elements carry classes and data- attributes for styling and inspection:
// `rect.bar[data-series][data-category][data-value]`, `polyline.line[data-series]`,
// `circle.point`, `line.reference[data-value]`, `g.legend > g.legend-item[data-series]`,
// `g.axis.x`, `g.axis.y`, `g.tick`.

/** Colour-blind-safe palette (Okabe & Ito, "Color Universal Design", 2008), in series order. */
export const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#000000"] as const;

export interface ChartSeries {
  name: string;
  /** CSS colour; default PALETTE[index % PALETTE.length]. */
  color?: string;
}

export interface BarSeries extends ChartSeries {
  /** One value per category; null or undefined leaves that bar out. */
  values: readonly (number | null | undefined)[];
}

export interface LineSeries extends ChartSeries {
  /** [x, y] points, drawn in the order given. */
  points: readonly (readonly [number, number])[];
  dashed?: boolean;
}

/** A horizontal dashed line across the plot at y = value: its value at the right end, its label in the legend. */
export interface ReferenceLine {
  value: number;
  label: string;
  color?: string;
}

export interface ChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  /** Outer size in px (default 640 × 360). */
  width?: number;
  height?: number;
  /** y-axis range; default from the data (bars: from 0), widened to nice ticks. */
  yMin?: number;
  yMax?: number;
  /** Tick and value label format for y (default: compact, k/M/G above 10^4). */
  yFormat?: (v: number) => string;
  references?: readonly ReferenceLine[];
}

export interface BarChartOptions extends ChartOptions {
  categories: readonly string[];
  series: readonly BarSeries[];
  /** Print each bar's value above it (default true when there is one series). */
  valueLabels?: boolean;
}

export interface LineChartOptions extends ChartOptions {
  series: readonly LineSeries[];
  xMin?: number;
  xMax?: number;
  /** "log" spaces x logarithmically (every x must be > 0). Default "linear". */
  xScale?: "linear" | "log";
  /** x tick positions; default: the distinct x values when there are at most 12, else nice ticks. */
  xTicks?: readonly number[];
  xFormat?: (v: number) => string;
}

const FONT = 12;
const CHAR_W = 0.6 * FONT; // average advance of a sans-serif glyph, for layout only

/** Escapes text for SVG/XML character data and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/**
 * Round tick values covering [min, max]: about `target` steps of 1, 2 or 5
 * × 10^k (Heckbert, "Nice numbers for graph labels", Graphics Gems 1990).
 * The first tick is ≤ min and the last ≥ max.
 */
export function niceTicks(min: number, max: number, target = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new RangeError(`vmmu: niceTicks range must be finite, got ${min}..${max}`);
  if (min > max) [min, max] = [max, min];
  if (min === max) { const d = min === 0 ? 1 : Math.abs(min) / 2; min -= d; max += d; }
  const raw = (max - min) / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  const lo = Math.floor(min / step + 1e-9), hi = Math.ceil(max / step - 1e-9);
  const out: number[] = [];
  for (let i = lo; i <= hi; i++) out.push(roundTo(i * step, step));
  return out;
}

function roundTo(v: number, step: number): number {
  const d = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  return Number(v.toFixed(Math.min(d, 15)));
}

/** Compact number: 1.2 k, 3.4 M, 5.6 G above 10^4, else up to 3 decimals with trailing zeros trimmed. */
export function formatNumber(v: number): string {
  const a = Math.abs(v);
  const trim = (s: string) => (s.includes(".") ? s.replace(/\.?0+$/, "") : s);
  if (a >= 1e9) return trim((v / 1e9).toFixed(2)) + " G";
  if (a >= 1e6) return trim((v / 1e6).toFixed(2)) + " M";
  if (a >= 1e4) return trim((v / 1e3).toFixed(1)) + " k";
  return trim(v.toFixed(3));
}

function finite(v: unknown, name: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new TypeError(`vmmu: ${name} must be a finite number, got ${String(v)}`);
  return v;
}

function size(v: number | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < 120) throw new RangeError(`vmmu: ${name} must be a number ≥ 120 (px), got ${v}`);
  return v;
}

/** Array.isArray without its narrowing (which widens a readonly T[] to any[]). */
const isList = (v: unknown): boolean => Array.isArray(v);

const f1 = (v: number) => (Math.round(v * 10) / 10).toString();

interface Frame {
  width: number; height: number;
  left: number; right: number; top: number; bottom: number;
  y: (v: number) => number;
  yTicks: number[];
}

/** Margins, y scale and the parts every chart shares (frame, y axis, title, axis titles, legend, references). */
function frame(o: ChartOptions, yData: number[], fromZero: boolean, legend: { name: string; color: string; dashed?: boolean; ref?: boolean }[],
  bottomExtra: number): { f: Frame; parts: string[] } {
  const width = size(o.width, "width", 640), height = size(o.height, "height", 360);
  const fmt = o.yFormat ?? formatNumber;
  const refs = o.references ?? [];
  for (const [i, r] of refs.entries()) finite(r.value, `references[${i}].value`);
  let lo = o.yMin ?? Math.min(...yData, ...refs.map((r) => r.value), fromZero ? 0 : Infinity);
  let hi = o.yMax ?? Math.max(...yData, ...refs.map((r) => r.value), fromZero ? 0 : -Infinity);
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) { lo = 0; hi = 1; }
  let yTicks = niceTicks(lo, hi, Math.max(2, Math.round((height - 120) / 50)));
  if (o.yMin !== undefined) yTicks = yTicks.filter((t) => t >= o.yMin!);
  if (o.yMax !== undefined) yTicks = yTicks.filter((t) => t <= o.yMax!);
  const y0 = o.yMin ?? Math.min(yTicks[0]!, lo), y1 = o.yMax ?? Math.max(yTicks[yTicks.length - 1]!, hi);
  const tickW = Math.max(...yTicks.map((t) => fmt(t).length)) * CHAR_W;
  const legendRows = legend.length > 1 || refs.length > 0 ? legendLayout(legend, width - 20).rows : 0;
  const top = 12 + (o.title ? FONT + 10 : 0) + (legendRows ? legendRows * (FONT + 8) + 8 : 0);
  const left = 14 + tickW + (o.yLabel ? FONT + 8 : 0);
  const refW = refs.length ? Math.max(...refs.map((r) => fmt(r.value).length)) * CHAR_W + 8 : 0;
  const right = 16 + refW;
  const bottom = 28 + bottomExtra + (o.xLabel ? FONT + 8 : 0);
  const plotH = height - top - bottom;
  if (plotH < 30) throw new RangeError(`vmmu: height ${height} leaves no room for the plot`);
  const span = y1 - y0 || 1;
  const y = (v: number) => top + plotH - ((v - y0) / span) * plotH;
  const f: Frame = { width, height, left, right, top, bottom, y, yTicks };
  const parts: string[] = [];
  const x0 = left, x1 = width - right;
  parts.push(`<rect class="plot" x="${f1(x0)}" y="${f1(top)}" width="${f1(x1 - x0)}" height="${f1(plotH)}" fill="none"/>`);
  parts.push(`<g class="axis y">`);
  for (const t of yTicks) {
    const ty = f1(y(t));
    parts.push(`<g class="tick"><line x1="${f1(x0)}" x2="${f1(x1)}" y1="${ty}" y2="${ty}" stroke="#e5e5e5"/>`
      + `<text x="${f1(x0 - 6)}" y="${ty}" text-anchor="end" dominant-baseline="middle">${escapeXml(fmt(t))}</text></g>`);
  }
  parts.push(`<line x1="${f1(x0)}" x2="${f1(x0)}" y1="${f1(top)}" y2="${f1(top + plotH)}" stroke="#333"/></g>`);
  if (o.title) parts.push(`<text class="title" x="${f1(width / 2)}" y="${12 + FONT}" text-anchor="middle" font-weight="bold" font-size="${FONT + 2}">${escapeXml(o.title)}</text>`);
  if (o.yLabel) {
    const cy = f1(top + plotH / 2);
    parts.push(`<text class="axis-title y" x="${FONT + 2}" y="${cy}" text-anchor="middle" transform="rotate(-90 ${FONT + 2} ${cy})">${escapeXml(o.yLabel)}</text>`);
  }
  if (o.xLabel) parts.push(`<text class="axis-title x" x="${f1((x0 + x1) / 2)}" y="${f1(height - 8)}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  if (legendRows) parts.push(legendSvg(legend, width - 20, 10, 12 + (o.title ? FONT + 10 : 0)));
  return { f, parts };
}

function legendLayout(items: { name: string }[], maxW: number): { rows: number; pos: { x: number; row: number }[] } {
  let x = 0, row = 0;
  const pos: { x: number; row: number }[] = [];
  for (const it of items) {
    const w = 22 + it.name.length * CHAR_W + 16;
    if (x > 0 && x + w > maxW) { x = 0; row++; }
    pos.push({ x, row });
    x += w;
  }
  return { rows: items.length ? row + 1 : 0, pos };
}

function legendSvg(items: { name: string; color: string; dashed?: boolean; ref?: boolean }[], maxW: number, x0: number, y0: number): string {
  const { pos } = legendLayout(items, maxW);
  const out = [`<g class="legend">`];
  items.forEach((it, i) => {
    const x = x0 + pos[i]!.x, y = y0 + pos[i]!.row * (FONT + 8) + (FONT + 8) / 2;
    const mark = it.ref || it.dashed !== undefined
      ? `<line x1="${f1(x)}" x2="${f1(x + 16)}" y1="${f1(y)}" y2="${f1(y)}" stroke="${it.color}" stroke-width="2"${it.ref || it.dashed ? ` stroke-dasharray="4 3"` : ""}/>`
      : `<rect x="${f1(x)}" y="${f1(y - 5)}" width="14" height="10" fill="${it.color}"/>`;
    out.push(`<g class="legend-item" data-series="${escapeXml(it.name)}">${mark}<text x="${f1(x + 22)}" y="${f1(y)}" dominant-baseline="middle">${escapeXml(it.name)}</text></g>`);
  });
  out.push(`</g>`);
  return out.join("");
}

function referencesSvg(o: ChartOptions, f: Frame): string {
  const fmt = o.yFormat ?? formatNumber;
  const out: string[] = [];
  const x0 = f.left, x1 = f.width - f.right;
  for (const r of o.references ?? []) {
    const color = r.color ?? "#555";
    const ry = f1(f.y(r.value));
    out.push(`<g class="reference-line"><line class="reference" data-value="${r.value}" x1="${f1(x0)}" x2="${f1(x1)}" y1="${ry}" y2="${ry}" stroke="${color}" stroke-width="1.5" stroke-dasharray="4 3"/>`
      + `<text x="${f1(x1 + 4)}" y="${ry}" dominant-baseline="middle" fill="${color}" font-size="${FONT - 1}">${escapeXml(fmt(r.value))}</text></g>`);
  }
  return out.join("");
}

function wrap(f: Frame, body: string[], title: string | undefined): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}" `
    + `font-family="system-ui, sans-serif" font-size="${FONT}" role="img"${title ? ` aria-label="${escapeXml(title)}"` : ""}>`
    + (title ? `<title>${escapeXml(title)}</title>` : "")
    + `<rect width="100%" height="100%" fill="#fff"/>` + body.join("") + `</svg>`;
}

const colorOf = (s: ChartSeries, i: number) => s.color ?? PALETTE[i % PALETTE.length]!;

/**
 * A grouped bar chart: one group per category, one bar per series in each
 * group, y from 0 (or yMin). Long category labels are slanted. Throws a
 * TypeError naming the field for a series whose values do not match the
 * categories or a value that is not finite.
 */
export function barChart(o: BarChartOptions): string {
  if (!isList(o.categories)) throw new TypeError("vmmu: categories must be an array of strings");
  if (!isList(o.series) || o.series.length === 0) throw new TypeError("vmmu: series must be a non-empty array");
  const n = o.categories.length;
  const data: number[] = [];
  o.series.forEach((s, i) => {
    if (!isList(s.values) || s.values.length !== n) {
      throw new TypeError(`vmmu: series[${i}].values must have one entry per category (${n}), got ${isList(s.values) ? s.values.length : typeof s.values}`);
    }
    s.values.forEach((v, j) => { if (v !== null && v !== undefined) data.push(finite(v, `series[${i}].values[${j}]`)); });
  });
  const width = size(o.width, "width", 640);
  const legend = [
    ...o.series.map((s, i) => ({ name: s.name, color: colorOf(s, i) })),
    ...(o.references ?? []).map((r) => ({ name: r.label, color: r.color ?? "#555", ref: true })),
  ];
  // Category labels: slant them when the widest does not fit its slot.
  const slotGuess = (width - 120) / Math.max(1, n);
  const longest = Math.max(0, ...o.categories.map((c) => c.length)) * CHAR_W;
  const slant = longest > slotGuess - 6;
  const labels = o.valueLabels ?? o.series.length === 1;
  // Room above the tallest bar for its value label.
  const scaled = labels && data.length && Math.max(...data) > 0 ? [...data, Math.max(...data) * 1.08] : data;
  const { f, parts } = frame(o, scaled, true, o.series.length > 1 || (o.references?.length ?? 0) > 0 ? legend : [], slant ? Math.min(longest * 0.6, 90) : 0);
  const fmt = o.yFormat ?? formatNumber;
  const x0 = f.left, x1 = f.width - f.right, slot = (x1 - x0) / Math.max(1, n);
  const groupW = slot * 0.75, barW = groupW / o.series.length;
  const base = f.y(Math.max(f.yTicks[0]!, Math.min(0, f.yTicks[f.yTicks.length - 1]!)));
  const bars: string[] = [`<g class="bars">`];
  o.series.forEach((s, i) => {
    s.values.forEach((v, j) => {
      if (v === null || v === undefined) return;
      const bx = x0 + j * slot + (slot - groupW) / 2 + i * barW;
      const by = f.y(v);
      const top = Math.min(by, base), h = Math.abs(base - by);
      bars.push(`<rect class="bar" data-series="${escapeXml(s.name)}" data-category="${escapeXml(o.categories[j]!)}" data-value="${v}" `
        + `x="${f1(bx + 1)}" y="${f1(top)}" width="${f1(Math.max(1, barW - 2))}" height="${f1(h)}" fill="${colorOf(s, i)}">`
        + `<title>${escapeXml(`${s.name} · ${o.categories[j]!}: ${fmt(v)}`)}</title></rect>`);
      if (labels) bars.push(`<text class="value" x="${f1(bx + barW / 2)}" y="${f1(top - 4)}" text-anchor="middle" font-size="${FONT - 1}">${escapeXml(fmt(v))}</text>`);
    });
  });
  bars.push(`</g>`);
  const xa: string[] = [`<g class="axis x"><line x1="${f1(x0)}" x2="${f1(x1)}" y1="${f1(base)}" y2="${f1(base)}" stroke="#333"/>`];
  const ly = f.height - f.bottom + 16;
  o.categories.forEach((c, j) => {
    const cx = x0 + (j + 0.5) * slot;
    xa.push(slant
      ? `<g class="tick"><text x="${f1(cx)}" y="${f1(ly - 4)}" text-anchor="end" transform="rotate(-30 ${f1(cx)} ${f1(ly - 4)})">${escapeXml(c)}</text></g>`
      : `<g class="tick"><text x="${f1(cx)}" y="${f1(ly)}" text-anchor="middle">${escapeXml(c)}</text></g>`);
  });
  xa.push(`</g>`);
  return wrap(f, [...parts, ...bars, referencesSvg(o, f), ...xa], o.title);
}

/**
 * A line chart over numeric x: one polyline with point markers per series.
 * Throws a TypeError naming the field for a point that is not two finite
 * numbers, a RangeError for x ≤ 0 on a log scale.
 */
export function lineChart(o: LineChartOptions): string {
  if (!isList(o.series) || o.series.length === 0) throw new TypeError("vmmu: series must be a non-empty array");
  const log = o.xScale === "log";
  if (o.xScale !== undefined && o.xScale !== "linear" && !log) throw new TypeError(`vmmu: xScale must be 'linear' | 'log', got ${String(o.xScale)}`);
  const xs: number[] = [], ys: number[] = [];
  o.series.forEach((s, i) => {
    if (!isList(s.points)) throw new TypeError(`vmmu: series[${i}].points must be an array of [x, y]`);
    s.points.forEach((p, j) => {
      if (!isList(p) || p.length !== 2) throw new TypeError(`vmmu: series[${i}].points[${j}] must be [x, y]`);
      const x = finite(p[0], `series[${i}].points[${j}][0]`), y = finite(p[1], `series[${i}].points[${j}][1]`);
      if (log && x <= 0) throw new RangeError(`vmmu: series[${i}].points[${j}][0] must be > 0 on a log x scale, got ${x}`);
      xs.push(x); ys.push(y);
    });
  });
  const legend = [
    ...o.series.map((s, i) => ({ name: s.name, color: colorOf(s, i), dashed: s.dashed ?? false })),
    ...(o.references ?? []).map((r) => ({ name: r.label, color: r.color ?? "#555", ref: true })),
  ];
  const { f, parts } = frame(o, ys, false, legend.length > 1 ? legend : [], 0);
  const xFmt = o.xFormat ?? formatNumber;
  const distinct = [...new Set(xs)].sort((a, b) => a - b);
  let xTicks = o.xTicks ? [...o.xTicks] : distinct.length <= 12 && distinct.length > 0 ? distinct
    : log ? decades(Math.min(...xs), Math.max(...xs)) : niceTicks(Math.min(...xs), Math.max(...xs), 6);
  if (xTicks.length === 0) xTicks = [0, 1];
  const xLo = o.xMin ?? Math.min(...xTicks, ...xs), xHi = o.xMax ?? Math.max(...xTicks, ...xs);
  const t = log ? Math.log10 : (v: number) => v;
  const a = t(xLo), b = t(xHi);
  const x0 = f.left + 8, x1 = f.width - f.right - 8;
  const x = (v: number) => (b === a ? (x0 + x1) / 2 : x0 + ((t(v) - a) / (b - a)) * (x1 - x0));
  const baseY = f.y(f.yTicks[0]!);
  const xa: string[] = [`<g class="axis x"><line x1="${f1(f.left)}" x2="${f1(f.width - f.right)}" y1="${f1(baseY)}" y2="${f1(baseY)}" stroke="#333"/>`];
  for (const v of xTicks) {
    if (v < xLo || v > xHi) continue;
    const tx = f1(x(v));
    xa.push(`<g class="tick"><line x1="${tx}" x2="${tx}" y1="${f1(baseY)}" y2="${f1(baseY + 4)}" stroke="#333"/>`
      + `<text x="${tx}" y="${f1(baseY + 16)}" text-anchor="middle">${escapeXml(xFmt(v))}</text></g>`);
  }
  xa.push(`</g>`);
  const lines: string[] = [`<g class="lines">`];
  o.series.forEach((s, i) => {
    const c = colorOf(s, i);
    const pts = s.points.map(([px, py]) => `${f1(x(px))},${f1(f.y(py))}`);
    lines.push(`<polyline class="line" data-series="${escapeXml(s.name)}" points="${pts.join(" ")}" fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ` stroke-dasharray="6 4"` : ""}/>`);
    for (const [px, py] of s.points) {
      lines.push(`<circle class="point" data-series="${escapeXml(s.name)}" cx="${f1(x(px))}" cy="${f1(f.y(py))}" r="3" fill="${c}">`
        + `<title>${escapeXml(`${s.name}: (${xFmt(px)}, ${(o.yFormat ?? formatNumber)(py)})`)}</title></circle>`);
    }
  });
  lines.push(`</g>`);
  return wrap(f, [...parts, ...xa, referencesSvg(o, f), ...lines], o.title);
}

/** Powers of ten covering [lo, hi] (both > 0). */
function decades(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
  return out;
}

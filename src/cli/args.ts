// Shared pieces of the `vmmu run` workloads' command lines: usage errors,
// integer and `--cost name=value` flags, the progress bar.

import { DEFAULT_COSTS, MAX_COST } from "../kvm/cost-model.js";
import { LINUX_WORK_COSTS } from "../guest/linux.js";

/** A usage or input error: exit status 2, one `vmmu:` line. */
export class UsageError extends Error {}

/** Parses an integer flag value in min..max; a UsageError naming the flag otherwise. */
export function intFlag(flag: string, v: string | undefined, min: number, max: number): number {
  const n = v !== undefined && /^[0-9]+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag} needs an integer in ${min}..${max}${v === undefined ? "" : `, got '${v}'`}`);
  }
  return n;
}

/**
 * Parses one `--cost name=value` into `costs` (a CostModel key), or with
 * `work` given, a `guest.<name>=value` into `work` (a LINUX_WORK_COSTS key);
 * a UsageError naming the problem otherwise.
 */
export function costFlag(v: string | undefined, costs: Record<string, number>, work?: Record<string, number>): void {
  const eq = v === undefined ? -1 : v.indexOf("=");
  if (v === undefined || eq <= 0) throw new UsageError(`--cost needs name=value${v === undefined ? "" : `, got '${v}'`}`);
  const name = v.slice(0, eq), value = v.slice(eq + 1);
  const guest = work !== undefined && name.startsWith("guest.");
  const key = guest ? name.slice(6) : name;
  if (guest ? !Object.hasOwn(LINUX_WORK_COSTS, key) : !Object.hasOwn(DEFAULT_COSTS, key)) {
    const names = [...Object.keys(DEFAULT_COSTS), ...(work ? Object.keys(LINUX_WORK_COSTS).map((k) => `guest.${k}`) : [])];
    throw new UsageError(`unknown cost '${name}' (one of: ${names.join(", ")})`);
  }
  if (!/^[0-9]+(?:\.[0-9]+)?$/.test(value)) throw new UsageError(`--cost ${name}: '${value}' is not a number of cycles`);
  if (Number(value) > MAX_COST) throw new UsageError(`--cost ${name}: ${value} is above the ${MAX_COST}-cycle limit`);
  (guest ? work! : costs)[key] = Number(value);
}

/** A progress bar on stderr (TTY only, after the first second): run `p` of `total` is fraction `f` done. */
export function progress(total: number, names: string[]): ((p: number, f: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  const t0 = performance.now();
  let shown = false;
  return (p, f) => {
    if (!shown && performance.now() - t0 < 1000) return;
    shown = true;
    const done = (p + f) / total;
    const w = 30, fill = Math.round(done * w);
    process.stderr.write(`\r[${"#".repeat(fill)}${".".repeat(w - fill)}] ${(done * 100).toFixed(0).padStart(3)}% ${names[p]!.padEnd(16)}`);
    if (p === total - 1 && f >= 1) process.stderr.write("\r" + " ".repeat(w + 24) + "\r");
  };
}


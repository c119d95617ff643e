// Address formatting shared by error messages, builders and reports.

/** `0x…` lower-case hex of a 64-bit value. */
export const hex = (v: bigint | number): string => {
  const b = BigInt(v);
  return b < 0n ? "-0x" + (-b).toString(16) : "0x" + b.toString(16);
};

// Branded address types, one per address space (KVM vocabulary,
// Documentation/virt/kvm/x86/mmu.rst): a Gva is not a Gpa is not an Hpa.
// All are bigint: guest addresses are 64-bit.

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** Guest virtual (linear) address. */
export type Gva = Brand<bigint, "gva">;
/** Guest physical address. */
export type Gpa = Brand<bigint, "gpa">;
/** Guest frame number: gpa >> 12. */
export type Gfn = Brand<bigint, "gfn">;
/** Host linear address: an offset into the shared wasm memory. A number: wasm32. */
export type Hpa = Brand<number, "hpa">;

export const gva = (v: bigint | number): Gva => BigInt.asUintN(64, BigInt(v)) as Gva;
export const gpa = (v: bigint | number): Gpa => BigInt.asUintN(64, BigInt(v)) as Gpa;
export const toGfn = (a: Gpa): Gfn => (a >> 12n) as Gfn;
export const gfnToGpa = (f: Gfn): Gpa => (f << 12n) as Gpa;

/** `0x…` lower-case hex of a 64-bit value. */
export const hex = (v: bigint | number): string => {
  const b = BigInt(v);
  return b < 0n ? "-0x" + (-b).toString(16) : "0x" + b.toString(16);
};

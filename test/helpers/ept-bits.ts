// EPT entry bits and exit-qualification bits as the SDM spells them (Vol.3C
// §29.3.2 entry formats; "Exit Qualification for EPT Violations"), written
// out for tests, independently of src/ and assembly/.

export const R = 1n << 0n;
export const W = 1n << 1n;
export const X = 1n << 2n;
/** Memory type field (bits 5:3) of a leaf. */
export const mt = (type: number): bigint => BigInt(type) << 3n;
export const IPAT = 1n << 6n;
export const PS = 1n << 7n;
export const A = 1n << 8n;
export const D = 1n << 9n;
export const UX = 1n << 10n;

export const Q_READ = 1 << 0;
export const Q_WRITE = 1 << 1;
export const Q_FETCH = 1 << 2;
export const Q_R = 1 << 3;
export const Q_W = 1 << 4;
export const Q_X = 1 << 5;
export const Q_UX = 1 << 6;
export const Q_GVA = 1 << 7;
export const Q_TRANSLATED = 1 << 8;

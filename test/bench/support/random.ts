// Deterministic randomness for the seeded benchmark data, so a run can be repeated and its
// checks computed in the bench itself.

/** mulberry32: small, fast and the same on every machine. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Picks a value with the given relative weights. */
export function weighted<T extends string>(weights: Record<T, number>, random: () => number): () => T {
  const entries = Object.entries(weights) as Array<[T, number]>;
  const total = entries.reduce((s, [, w]) => s + w, 0);
  return () => {
    let x = random() * total;
    for (const [value, w] of entries) if ((x -= w) < 0) return value;
    return (entries[entries.length - 1] as [T, number])[0];
  };
}

// Deterministic randomness for the seeded benchmark data, so a run can be repeated and its
// checks computed in the bench itself.

export { prng } from '../../support/random';

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

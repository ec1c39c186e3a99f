/**
 * Colour maps: the ColorBrewer tables and the text colour rule of kernel_ext/data/display-rules.json
 * (rules.ts), quantised as xattr_widgets.core quantises them, so a result drawn from JSON in the
 * browser looks like the kernel's view.
 */
import { RULES } from './rules';

/** 11-class diverging palettes, index 0 = colour of the most negative value (display-rules.json). */
export const DIVERGING: Record<string, readonly string[]> = RULES.palettes.diverging;

/** ColorBrewer Reds 9, light -> dark (non-negative quantities: flows, node scores). */
export const SEQUENTIAL: readonly string[] = RULES.palettes.sequential;
export const NAN_COLOUR = RULES.palettes.missing;

/** The diverging palette called `name` ("RdBu", ...; "_r" reverses it); unknown names give RdBu. */
export function diverging(name: string | undefined): readonly string[] {
  const raw = name ?? RULES.palettes.default_diverging;
  const reverse = raw.endsWith('_r');
  const base = reverse ? raw.slice(0, -2) : raw;
  const table = DIVERGING[base] ?? DIVERGING[RULES.palettes.default_diverging];
  return reverse ? [...table].reverse() : table;
}

/** The palette colour of `value` on the linear scale [low, high]; null/NaN -> grey. */
export function colourFor(value: number | null | undefined, low: number, high: number, palette: readonly string[]): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return NAN_COLOUR;
  }
  if (!(high > low)) {
    return palette[Math.floor(palette.length / 2)];
  }
  const t = (value - low) / (high - low);
  const index = Math.min(palette.length - 1, Math.max(0, Math.floor(t * palette.length)));
  return palette[index];
}

/** Text colour on a #rrggbb background: RULES.text.on_dark when its luminance is below
 * RULES.text.dark_below, else on_light (xattr_widgets.core.text_colour_for is its Python twin). */
export function textColourFor(background: string): string {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(background);
  if (!m) {
    return RULES.text.on_light;
  }
  const w = RULES.text.luminance_weights;
  const luminance = [m[1], m[2], m[3]].reduce((sum, h, k) => sum + w[k] * (parseInt(h, 16) / 255), 0);
  return luminance < RULES.text.dark_below ? RULES.text.on_dark : RULES.text.on_light;
}

/** max |v| over finite values (0 when none). */
export function maxAbs(values: Iterable<number | null | undefined>): number {
  let best = 0;
  for (const v of values) {
    if (v !== null && v !== undefined && Number.isFinite(v)) {
      best = Math.max(best, Math.abs(v));
    }
  }
  return best;
}

/** [min, max] over finite values ([0, 0] when none). */
export function extent(values: Iterable<number | null | undefined>): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v !== null && v !== undefined && Number.isFinite(v)) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  }
  return lo <= hi ? [lo, hi] : [0, 0];
}

/**
 * Packed arrays of the v2 payload (kernel_ext/payload.py, kernel_ext/data/payload-v2.schema.json):
 * `{dtype, shape, data, scale, precision}`, `data` = base64 of little-endian C-order values, a value
 * is `stored * scale`. Untrusted: every descriptor is checked (dtype, shape, byte length, element
 * budget) before decoding, and a bad one gives a message, never an exception.
 */

export const ITEMSIZE: Record<string, number> = { float16: 2, float32: 4, uint8: 1, uint16: 2, int32: 4, uint32: 4 };

/** Most elements decoded from one payload (larger ones are refused with a message). */
export const MAX_ELEMENTS = 20_000_000;

export interface Packed {
  shape: number[];
  values: Float64Array;
}

export type Decoded = { ok: true; array: Packed } | { ok: false; message: string };

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const LOOKUP = (() => {
  const table = new Int16Array(128).fill(-1);
  for (let i = 0; i < B64.length; i++) {
    table[B64.charCodeAt(i)] = i;
  }
  return table;
})();

/** Bytes of a base64 string, or null when it is not base64 (no exceptions, no atob). */
export function base64Bytes(text: string): Uint8Array | null {
  const trimmed = text.replace(/=+$/, '');
  if (text.length % 4 !== 0 || text.length - trimmed.length > 2) {
    return null;
  }
  const out = new Uint8Array(Math.floor((trimmed.length * 3) / 4));
  if (typeof atob === 'function' && /^[A-Za-z0-9+/]*={0,2}$/.test(text)) {
    try {
      const binary = atob(text); // native where there is one
      for (let i = 0; i < out.length; i++) {
        out[i] = binary.charCodeAt(i);
      }
      return binary.length === out.length ? out : null;
    } catch {
      return null;
    }
  }
  let bits = 0;
  let value = 0;
  let j = 0;
  for (let i = 0; i < trimmed.length; i++) {
    const code = trimmed.charCodeAt(i);
    const digit = code < 128 ? LOOKUP[code] : -1;
    if (digit < 0) {
      return null;
    }
    value = (value << 6) | digit;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = (value >> bits) & 0xff;
    }
  }
  return out;
}

/** IEEE 754 half precision -> number (NaN and infinities kept). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) {
    return sign * fraction * 2 ** -24;
  }
  if (exponent === 31) {
    return fraction ? NaN : sign * Infinity;
  }
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Decode a packed array named `name`; `rank` is the number of dimensions it must have (or null),
 * `budget` how many elements it may hold.
 */
export function decodePacked(desc: unknown, name: string, rank: number | null, budget = MAX_ELEMENTS): Decoded {
  const bad = (why: string): Decoded => ({ ok: false, message: `${name}: ${why}` });
  if (!isObject(desc)) {
    return bad('not a packed array');
  }
  const { dtype, shape, data } = desc;
  const scale = desc.scale === undefined ? 1 : desc.scale;
  if (typeof dtype !== 'string' || !(dtype in ITEMSIZE)) {
    return bad(`unknown dtype ${JSON.stringify(String(dtype)).slice(0, 40)}`);
  }
  if (!Array.isArray(shape) || shape.length > 4 || !shape.every(d => Number.isInteger(d) && d >= 0)) {
    return bad('shape must be a list of at most 4 non-negative integers');
  }
  if (rank !== null && shape.length !== rank) {
    return bad(`expected ${rank} dimensions, found ${shape.length}`);
  }
  if (typeof scale !== 'number' || !Number.isFinite(scale) || scale <= 0) {
    return bad('scale must be a positive number');
  }
  const count = (shape as number[]).reduce((a, b) => a * b, 1);
  if (count > budget) {
    return bad(`${count.toLocaleString('en-US')} values: too many to draw here (at most ${budget.toLocaleString('en-US')})`);
  }
  const size = ITEMSIZE[dtype];
  if (typeof data !== 'string' || data.length !== 4 * Math.ceil((count * size) / 3)) {
    return bad(`data does not hold ${count} ${dtype} values`);
  }
  const bytes = base64Bytes(data);
  if (!bytes || bytes.length !== count * size) {
    return bad('data is not base64 of the stated shape');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const values = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const at = i * size;
    const raw =
      dtype === 'float16' ? halfToFloat(view.getUint16(at, true))
        : dtype === 'float32' ? view.getFloat32(at, true)
          : dtype === 'uint8' ? view.getUint8(at)
            : dtype === 'uint16' ? view.getUint16(at, true)
              : dtype === 'int32' ? view.getInt32(at, true)
                : view.getUint32(at, true);
    values[i] = raw * scale;
  }
  return { ok: true, array: { shape: shape as number[], values } };
}

/** Rows of a 2-D packed array as plain arrays (non-finite values -> null). */
export function rows(array: Packed): Array<Array<number | null>> {
  const [r, c] = array.shape.length === 2 ? array.shape : [1, array.values.length];
  return Array.from({ length: r }, (_, i) =>
    Array.from(array.values.subarray(i * c, (i + 1) * c), v => (Number.isFinite(v) ? v : null)));
}

/** A 1-D packed array as a plain array (non-finite values -> null). */
export function vector(array: Packed): Array<number | null> {
  return Array.from(array.values, v => (Number.isFinite(v) ? v : null));
}

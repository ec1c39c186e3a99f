/**
 * v2 payloads (kernel_ext/payload.py) -> view models. Mirrors kernel_ext/data/payload-v2.schema.json:
 * the same kinds, required fields and array descriptors, plus what JSON Schema cannot say (byte
 * lengths, index ranges, matching lengths). Any violation is a Refused with the reason.
 */
import { MAX_ELEMENTS, Packed, decodePacked, rows, vector } from './arrays';
import {
  AttributionModel, Cell, CircuitModel, ExplorerModel, FlowModel, HeadsModel, LIMITS, Num, Refused,
  isObject, largestCells, readMeta, readTokens, strongestOf
} from './model';
import { circuitModel, throughput } from './read-v1';

/** Decoding budget shared by the arrays of one payload. */
export class Decoder {
  left = MAX_ELEMENTS;
  array(p: Record<string, unknown>, name: string, rank: number | null, optional = false, label = name): Packed | null {
    const desc = p[name];
    if (optional && (desc === null || desc === undefined)) {
      return null;
    }
    const out = decodePacked(desc, label, rank, this.left);
    if (!out.ok) {
      throw new Refused(out.message);
    }
    this.left -= out.array.values.length;
    return out.array;
  }
}

const fmtCount = (n: number) => n.toLocaleString('en-US');

export function integer(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new Refused(`${name} must be a non-negative integer`);
  }
  return value;
}

/** `a` holds one value per token (`n`). */
function perToken(a: Packed, name: string, n: number): Packed {
  if (a.values.length !== n) {
    throw new Refused(`${name} holds ${fmtCount(a.values.length)} values for ${fmtCount(n)} tokens`);
  }
  return a;
}

/** Every value of `a` an integer in [lo, hi). */
export function indices(a: Packed, name: string, lo: number, hi: number): Float64Array {
  for (const v of a.values) {
    if (!Number.isInteger(v) || v < lo || v >= hi) {
      throw new Refused(`${name} holds ${v}, outside [${lo}, ${hi})`);
    }
  }
  return a.values;
}

export function readAttributionV2(p: Record<string, unknown>, d = new Decoder()): AttributionModel {
  const tokens = readTokens(p.tokens);
  const scores = vector(perToken(d.array(p, 'scores', 1)!, 'scores', tokens.length));
  const raw = d.array(p, 'raw', 1, true);
  return { kind: 'attribution', meta: readMeta(p), tokens, scores, raw: raw ? vector(perToken(raw, 'raw', tokens.length)) : scores };
}

export function readFlowV2(p: Record<string, unknown>, d = new Decoder()): FlowModel {
  const tokens = readTokens(p.tokens);
  const n = tokens.length;
  const L = integer(p.n_layers, 'n_layers');
  const e = p.edges;
  if (!isObject(e)) {
    throw new Refused('edges must be an object');
  }
  const [layer, from, to, flow] = (['layer', 'from', 'to', 'flow'] as const).map(k => d.array(e, k, 1, false, `edges.${k}`)!);
  const m = flow.values.length;
  if (![layer, from, to].every(a => a.values.length === m)) {
    throw new Refused('edges: layer, from, to and flow differ in length');
  }
  const ls = indices(layer, 'edges.layer', 1, L + 1);
  const fs = indices(from, 'edges.from', 0, n);
  const ts = indices(to, 'edges.to', 0, n);
  const edges = strongestOf(ls, fs, ts, flow.values);
  const left = typeof e.hidden === 'number' && e.hidden > 0 ? e.hidden : 0;
  const nodes = d.array(p, 'node_flow', 2, true);
  if (nodes && (nodes.shape[0] !== L + 1 || nodes.shape[1] !== n)) {
    throw new Refused(`node_flow must be (${L + 1}, ${n})`);
  }
  const meta = readMeta(p);
  if (left) {
    const share = typeof e.hidden_flow === 'number' ? ` (${(100 * e.hidden_flow).toPrecision(2)}% of the flow)` : '';
    meta.notes.push(`${fmtCount(left)} weaker edges were not saved${share}.`);
  }
  return {
    kind: 'flow', meta, tokens, attributions: vector(perToken(d.array(p, 'attributions', 1)!, 'attributions', n)),
    value: typeof p.value === 'number' && Number.isFinite(p.value) ? p.value : null,
    info: typeof p.info === 'string' ? p.info : 'gaf', layers: L, edges, hiddenEdges: m - edges.length,
    nodeFlow: nodes ? rows(nodes).map(r => r.map(v => v ?? 0)) : throughput(ls, fs, ts, flow.values, L, n)
  };
}

/** The sparse maps of a v2 heads payload: per head, the stored cells. */
function sparseMaps(a: Record<string, unknown>, d: Decoder, n: number): HeadsModel['matrix'] {
  const shape = a.shape;
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every(s => Number.isInteger(s) && s >= 0)) {
    throw new Refused('attentions.shape must be (L, H, n, n)');
  }
  const [L, H, q, k] = shape as number[];
  if (q !== n || k !== n) {
    throw new Refused(`attentions are ${q} x ${k} for ${n} tokens`);
  }
  const counts = d.array(a, 'counts', 3, false, 'attentions.counts')!;
  if (counts.values.length !== L * H * n) {
    throw new Refused('attentions.counts must be (L, H, n)');
  }
  const keys = d.array(a, 'keys', 1, false, 'attentions.keys')!;
  const values = d.array(a, 'values', 1, false, 'attentions.values')!;
  let total = 0;
  for (const c of counts.values) {
    if (!Number.isInteger(c) || c < 0 || c > n) {
      throw new Refused('attentions.counts out of range');
    }
    total += c;
  }
  if (keys.values.length !== total || values.values.length !== total) {
    throw new Refused(`attentions: counts add up to ${total}, keys/values hold ${keys.values.length}/${values.values.length}`);
  }
  indices(keys, 'attentions.keys', 0, n);
  const start = new Float64Array(L * H + 1); // first stored weight of each head
  for (let head = 0; head < L * H; head++) {
    let s = 0;
    for (let r = head * n; r < (head + 1) * n; r++) {
      s += counts.values[r];
    }
    start[head + 1] = start[head] + s;
  }
  return (l, h) => {
    if (l < 0 || h < 0 || l >= L || h >= H) {
      return { cells: [], hidden: 0 };
    }
    const cells: Cell[] = [];
    let at = start[l * H + h];
    for (let row = 0; row < n; row++) {
      for (let c = 0; c < counts.values[(l * H + h) * n + row]; c++, at++) {
        cells.push({ q: row, k: keys.values[at], w: values.values[at] });
      }
    }
    return largestCells(cells);
  };
}

export function readHeadsV2(p: Record<string, unknown>, d = new Decoder()): HeadsModel {
  const tokens = readTokens(p.tokens);
  const entropy = d.array(p, 'entropy', 2)!;
  const normalised = d.array(p, 'cone_index_normalised', 1, true);
  const cone = normalised ?? d.array(p, 'cone_index', 1)!;
  const a = p.attentions;
  let mapNote = '';
  if (isObject(a)) {
    const kept = isObject(a.kept_mass) && typeof a.kept_mass.mean === 'number' ? a.kept_mass.mean : null;
    const hidden = typeof a.hidden === 'number' ? a.hidden : 0;
    mapNote = `Saved: each query's strongest keys` + (kept === null ? '' : `, ${(100 * kept).toFixed(1)}% of the attention on average`) +
      (hidden ? `; ${fmtCount(hidden)} smaller weights not saved (drawn as 0)` : '') + '.';
  } else if (a !== null && a !== undefined) {
    throw new Refused('attentions must be an object or null');
  }
  return {
    kind: 'heads', meta: readMeta(p), tokens, entropy: rows(entropy), cone: vector(cone), coneNormalised: normalised !== null,
    patterns: p.patterns, texts: Array.isArray(p.texts) ? p.texts.length : 0,
    matrix: isObject(a) ? sparseMaps(a, d, tokens.length) : null, mapNote
  };
}

export function readCircuitV2(p: Record<string, unknown>, d = new Decoder()): CircuitModel {
  const nodeScores = rows(d.array(p, 'node_scores', 2)!);
  const N = integer(p.n_edges, 'n_edges');
  const pr = p.pairs;
  if (!isObject(pr)) {
    throw new Refused('pairs must be an object');
  }
  const a = indices(d.array(pr, 'a', 1, false, 'pairs.a')!, 'pairs.a', 0, Math.max(N, 1));
  const b = indices(d.array(pr, 'b', 1, false, 'pairs.b')!, 'pairs.b', 0, Math.max(N, 1));
  const s = d.array(pr, 'score', 1, false, 'pairs.score')!.values;
  if (a.length !== s.length || b.length !== s.length) {
    throw new Refused('pairs: a, b and score differ in length');
  }
  const pairs: Array<[number, number, number]> = Array.from(s, (v, i) => [a[i], b[i], v] as [number, number, number])
    .filter(t => Number.isFinite(t[2]));
  pairs.sort((u, v) => v[2] - u[2]);
  const hidden = (typeof pr.hidden === 'number' && pr.hidden > 0 ? pr.hidden : 0) + Math.max(0, pairs.length - LIMITS.entries);
  const pos = d.array(p, 'codes_positive', 2)!;
  const neg = d.array(p, 'codes_negative', 2)!;
  const at = (m: Packed, r: number, flat: number): Num => {
    const [R, C] = m.shape;
    const v = r < R && flat < C && flat >= 0 ? m.values[r * C + flat] : NaN;
    return Number.isFinite(v) ? v : null;
  };
  return circuitModel(p, nodeScores, pairs.slice(0, LIMITS.entries), hidden, [pos.shape[0], neg.shape[0]],
    (positive, r, flat) => at(positive ? pos : neg, r, flat));
}

export function readExplorerV2(p: Record<string, unknown>): ExplorerModel {
  const views = p.views;
  if (!isObject(views)) {
    throw new Refused('views must be an object');
  }
  const d = new Decoder();
  const view = (name: string) => {
    const v = views[name];
    if (v === undefined || v === null) {
      return null;
    }
    if (!isObject(v) || v.schema !== 'xattr.v2') {
      throw new Refused(`views.${name} is not a v2 payload`);
    }
    return v;
  };
  const strip = view('strip');
  const flow = view('flow');
  const heads = view('heads');
  return {
    kind: 'explorer', meta: readMeta(p), text: typeof p.text === 'string' ? p.text : '',
    strip: strip ? readAttributionV2(strip, d) : null,
    flow: flow ? readFlowV2(flow, d) : null,
    heads: heads ? readHeadsV2(heads, d) : null
  };
}

/**
 * v1 payloads (`Result.to_dict()`, nested lists) -> view models. Checked as the v2 reader checks
 * packed arrays (read-v2.ts): every array has its shape (a ragged row, a number that is not one, an
 * edge_flow that is not (L, n, n) for n tokens is a Refused with the reason, which the renderer shows),
 * and the numbers scanned are capped (model.ts Budget).
 */
import {
  AttributionModel, Budget, Cell, CircuitModel, Edge, FlowModel, HeadsModel, LIMITS, Num, Refused,
  describe, isObject, largestCells, matrix, nested, numbers, readMeta, readTokens, strongestOf
} from './model';

/** `p[name]` is absent (undefined or null). */
const absent = (p: Record<string, unknown>, name: string) => p[name] === undefined || p[name] === null;

export function readAttributionV1(p: Record<string, unknown>, budget = new Budget()): AttributionModel {
  const tokens = readTokens(p.tokens);
  const n = tokens.length;
  const scores = numbers(p.scores, 'scores', budget, n);
  const raw = absent(p, 'raw') ? scores : numbers(p.raw, 'raw', budget, n);
  return { kind: 'attribution', meta: readMeta(p), tokens, scores, raw };
}

/** Every positive edge of a v1 edge_flow (L, n, n); edge_flow[l-1][i][j] is (l, i) -> (l-1, j). */
export function edgesV1(edgeFlow: Num[][][]): Edge[] {
  const edges: Edge[] = [];
  edgeFlow.forEach((m, l) =>
    m.forEach((row, i) =>
      row.forEach((flow, j) => {
        if (flow !== null && flow > 0) {
          edges.push({ layer: l + 1, from: i, to: j, flow });
        }
      })));
  return edges;
}

/**
 * (L+1, n) throughput from edges, the one definition (display-rules.json `flow.node_throughput`,
 * xattr_lab.payload.node_throughput): each node's inflow from the layer above; the top layer, which
 * has none, its outflow.
 */
export function throughputFromEdges(edges: Edge[], L: number, n: number): number[][] {
  return throughput(edges.map(e => e.layer), edges.map(e => e.from), edges.map(e => e.to), edges.map(e => e.flow), L, n);
}

/** The same from parallel arrays (layer 1..L, from, to, flow); non-positive flows count 0. */
export function throughput(layer: ArrayLike<number>, from: ArrayLike<number>, to: ArrayLike<number>,
  flow: ArrayLike<number>, L: number, n: number): number[][] {
  const out = Array.from({ length: L + 1 }, () => new Array<number>(n).fill(0));
  for (let i = 0; i < flow.length; i++) {
    const v = flow[i];
    if (!(v > 0) || !Number.isFinite(v)) {
      continue;
    }
    if (layer[i] - 1 < L && to[i] < n) {
      out[layer[i] - 1][to[i]] += v;
    }
    if (layer[i] === L && from[i] < n) {
      out[L][from[i]] += v;
    }
  }
  return out;
}

/** Refuse an edge_flow that is not (L, n, n): `where` is the path of the bad entry, `why` what it holds. */
function badEdgeFlow(n: number, where: string, why: string): never {
  throw new Refused(`edge_flow must be (L, ${n}, ${n}) lists of numbers for ${n} tokens: edge_flow${where} ${why}`);
}

export function readFlowV1(p: Record<string, unknown>, budget = new Budget()): FlowModel {
  const tokens = readTokens(p.tokens);
  const n = tokens.length;
  if (!Array.isArray(p.edge_flow)) {
    badEdgeFlow(n, '', `is ${describe(p.edge_flow)}`);
  }
  const L = p.edge_flow.length;
  budget.take(L);
  // one pass over the nested lists into typed arrays (no object per edge): fast for 10^6 edges
  const layer: number[] = [];
  const from: number[] = [];
  const to: number[] = [];
  const flows: number[] = [];
  // checked in the same pass: every layer n rows of n numbers (or null: NaN/inf)
  p.edge_flow.forEach((m: unknown, l: number) => {
    if (!Array.isArray(m) || m.length !== n) {
      badEdgeFlow(n, `[${l}]`, Array.isArray(m) ? `holds ${m.length} rows, not ${n}` : `is ${describe(m)}, not a list`);
    }
    budget.take(m.length);
    m.forEach((row: unknown, i: number) => {
      if (!Array.isArray(row) || row.length !== n) {
        badEdgeFlow(n, `[${l}][${i}]`, Array.isArray(row) ? `holds ${row.length} numbers, not ${n}` : `is ${describe(row)}, not a list`);
      }
      const values = row as unknown[];
      budget.take(values.length);
      for (let j = 0; j < n; j++) {
        const v = values[j];
        if (typeof v !== 'number' && v !== null) {
          badEdgeFlow(n, `[${l}][${i}][${j}]`, `is ${describe(v)}, not a number`);
        }
        if (typeof v === 'number' && Number.isFinite(v) && v > 0) {
          layer.push(l + 1);
          from.push(i);
          to.push(j);
          flows.push(v);
        }
      }
    });
  });
  const edges = strongestOf(layer, from, to, Float64Array.from(flows));
  const given = absent(p, 'node_flow') ? null : matrix(p.node_flow, 'node_flow', budget, L + 1, n);
  return {
    kind: 'flow', meta: readMeta(p), tokens, attributions: numbers(p.attributions, 'attributions', budget, n),
    value: typeof p.value === 'number' && Number.isFinite(p.value) ? p.value : null,
    info: typeof p.info === 'string' ? p.info : 'gaf', layers: L, edges, hiddenEdges: flows.length - edges.length,
    nodeFlow: given ? given.map(row => row.map(v => v ?? 0)) : throughput(layer, from, to, flows, L, n)
  };
}

export function readHeadsV1(p: Record<string, unknown>, budget = new Budget()): HeadsModel {
  const tokens = readTokens(p.tokens);
  const n = tokens.length;
  const entropy = matrix(p.entropy, 'entropy', budget, 'L', 'H');
  const heads = absent(p, 'attentions') ? null : nested(p.attentions, 'attentions', ['L', 'H', n, n], budget) as Num[][][][];
  const normalised = !absent(p, 'cone_index_normalised');
  return {
    kind: 'heads', meta: readMeta(p), tokens, entropy,
    cone: normalised ? numbers(p.cone_index_normalised, 'cone_index_normalised', budget, 'L+1')
      : numbers(p.cone_index, 'cone_index', budget, 'L+1'),
    coneNormalised: normalised,
    patterns: p.patterns, texts: Array.isArray(p.texts) ? p.texts.length : 0,
    matrix: heads
      ? (l, h) => {
        const cells: Cell[] = [];
        (heads[l]?.[h] ?? []).forEach((row, q) => row.forEach((w, k) => w !== null && cells.push({ q, k, w })));
        return largestCells(cells);
      }
      : null,
    mapNote: ''
  };
}

export function readCircuitV1(p: Record<string, unknown>, budget = new Budget()): CircuitModel {
  const nodeScores = matrix(p.node_scores, 'node_scores', budget, 'L', 'H');
  const edgeScores = matrix(p.edge_scores, 'edge_scores', budget, 'L·H', 'L·H');
  const pos = matrix(p.codes_positive, 'codes_positive', budget, 'examples', 'L·H');
  const neg = matrix(p.codes_negative, 'codes_negative', budget, 'examples', 'L·H');
  const pairs: Array<[number, number, number]> = [];
  edgeScores.forEach((row, a) => row.forEach((v, b) => {
    if (b > a && v !== null && v > 0) {
      pairs.push([a, b, v]);
    }
  }));
  pairs.sort((u, v) => v[2] - u[2]);
  return circuitModel(p, nodeScores, pairs.slice(0, LIMITS.entries), Math.max(0, pairs.length - LIMITS.entries),
    [pos.length, neg.length], (positive, r, flat) => (positive ? pos : neg)[r]?.[flat] ?? null);
}

/** The parts of a circuit model read the same way from v1 and v2. */
export function circuitModel(
  p: Record<string, unknown>, nodeScores: Num[][], pairs: Array<[number, number, number]>, hiddenPairs: number,
  examples: [number, number], code: CircuitModel['code']
): CircuitModel {
  const declared = typeof p.n_heads === 'number' && Number.isInteger(p.n_heads) && p.n_heads > 0 ? p.n_heads : 0;
  const heads = declared || Math.max(1, ...nodeScores.slice(0, LIMITS.layers).map(r => r.length));
  const unique = isObject(p.unique_codes) ? p.unique_codes : {};
  const metrics = isObject(p.metrics) ? Object.keys(p.metrics).slice(0, LIMITS.entries) : [];
  const shown = (v: unknown): number | string =>
    typeof v === 'number' || typeof v === 'string' ? v : v === null ? 'n/a' : typeof v;
  const count = (list: unknown, fallback: number) => (Array.isArray(list) ? list.length : fallback);
  return {
    kind: 'circuit', meta: readMeta(p), nodeScores, heads, pairs, hiddenPairs, examples,
    prompts: [count(p.positive, examples[0]), count(p.negative, examples[1])],
    code,
    unique: flat => {
      const list = Object.prototype.hasOwnProperty.call(unique, String(flat)) ? unique[String(flat)] : [];
      return Array.isArray(list) ? list.filter((c): c is number => typeof c === 'number') : [];
    },
    metrics: metrics.map(k => [k, shown((p.metrics as Record<string, unknown>)[k])])
  };
}

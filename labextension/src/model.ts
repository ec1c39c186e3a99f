/**
 * What the views draw, whatever the payload version: v1 (`to_dict()`, nested lists) and v2 (packed
 * arrays, kernel_ext/payload.py) are both read into these models. Reading checks shapes and caps
 * the work: a payload too large to read gives a message (never an exception, never a frozen tab).
 */

import { RULES } from './rules';

export type Num = number | null;

/** Caps on what is read and drawn (a "N more hidden" note says what was left out). */
export const LIMITS = {
  /** numbers scanned in a v1 payload's nested arrays */
  scan: 5_000_000,
  /** tokens drawn in a strip */
  tokens: 1024,
  /** flow edges drawn (the strongest; display-rules.json, as the live view) */
  edges: RULES.flow.edges_drawn,
  /** flow nodes drawn before only the nodes on drawn edges are kept */
  nodes: 8000,
  /** token rows of a flow graph (those carrying the most flow) */
  flowTokens: 256,
  /** layers and heads drawn in a grid */
  layers: 96,
  heads: 64,
  /** cells drawn in one attention matrix (the largest weights) */
  matrixCells: 6000,
  /** example rows in a circuit's code table */
  codeRows: 200,
  /** entries of a prediction / metrics / unique-codes list */
  entries: 50,
  /** edges of a patching circuit graph (the strongest |score|) */
  graphEdges: 400,
  /** prompt pairs listed under a clicked head or edge */
  promptRows: 200
};

export interface Meta {
  model?: string;
  method?: string;
  target_label?: string;
  prediction?: Array<[string, number]>;
  options?: unknown;
  /** what the payload left out, said under the view */
  notes: string[];
}

export interface AttributionModel {
  kind: 'attribution';
  meta: Meta;
  tokens: string[];
  scores: Num[];
  raw: Num[];
}

export interface Edge {
  layer: number; // edge from (layer, from) down to (layer - 1, to)
  from: number;
  to: number;
  flow: number;
  line?: SVGElement;
}

export interface FlowModel {
  kind: 'flow';
  meta: Meta;
  tokens: string[];
  attributions: Num[];
  value: Num;
  info: string;
  layers: number;
  /** the strongest edges, strongest first (at most LIMITS.edges) */
  edges: Edge[];
  /** positive edges the result had but that are not drawn */
  hiddenEdges: number;
  /** (L+1, n) throughput of each node */
  nodeFlow: number[][];
}

/** The stored weights of one head's attention map: query q -> key k, weight w (largest first). */
export interface Cell {
  q: number;
  k: number;
  w: number;
}

export interface HeadsModel {
  kind: 'heads';
  meta: Meta;
  tokens: string[];
  entropy: Num[][];
  cone: Num[];
  coneNormalised: boolean;
  patterns: unknown;
  texts: number;
  /** the stored cells of head (l, h), or null when the result holds no maps */
  matrix: ((l: number, h: number) => { cells: Cell[]; hidden: number }) | null;
  mapNote: string;
}

export interface CircuitModel {
  kind: 'circuit';
  meta: Meta;
  nodeScores: Num[][];
  heads: number;
  pairs: Array<[number, number, number]>;
  hiddenPairs: number;
  /** rows of the code tables (positives, negatives) and prompt counts */
  examples: [number, number];
  prompts: [number, number];
  /** SAE code of example r (positives, negatives) at flat head index */
  code: (positive: boolean, r: number, flat: number) => Num;
  unique: (flat: number) => number[];
  metrics: Array<[string, number | string]>;
}

/** One edge of a patching circuit: flat sender head l * H + h -> receiver head (L * H: the logits). */
export interface GraphEdge {
  sender: number;
  receiver: number;
  score: number;
}

/** A patching circuit (AtP, EAP, EAP-IG; kernel_ext/payload.py kind "patching-circuit"). */
export interface PatchingModel {
  kind: 'patching-circuit';
  meta: Meta;
  layers: number;
  heads: number;
  nodeScores: Num[][];
  /** stored edges, strongest |score| first (at most LIMITS.graphEdges) */
  edges: GraphEdge[];
  /** non-zero edges of the result that are not drawn (left out when saved, or past the cap) */
  hiddenEdges: number;
  /** what the circuit size counts: the top edges (eap, eap-ig) or the top heads (atp) */
  unit: 'nodes' | 'edges';
  faithfulness: { sizes: number[]; values: Num[]; cpr: Num; cmd: Num } | null;
  metric: string;
  positive: string[];
  negative: string[];
  /** per-prompt effect of head (l, h); of an edge (null when not stored) */
  promptNode: (l: number, h: number) => Num[];
  promptEdge: (sender: number, receiver: number) => Num[] | null;
  storedEdges: number;
}

export interface ExplorerModel {
  kind: 'explorer';
  meta: Meta;
  text: string;
  strip: AttributionModel | null;
  flow: FlowModel | null;
  heads: HeadsModel | null;
}

export type ViewModel = AttributionModel | FlowModel | HeadsModel | CircuitModel | PatchingModel | ExplorerModel;
export type Read<T> = { ok: true; model: T } | { ok: false; message: string };

export class Refused extends Error {}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** Header fields of any payload (strings only; at most LIMITS.entries prediction entries). */
export function readMeta(p: Record<string, unknown>): Meta {
  const prediction = isObject(p.prediction)
    ? Object.keys(p.prediction).slice(0, 1000)
      .map(k => [k, (p.prediction as Record<string, unknown>)[k]] as [string, unknown])
      .filter((e): e is [string, number] => typeof e[1] === 'number' && Number.isFinite(e[1]))
    : [];
  return { model: str(p.model), method: str(p.method), target_label: str(p.target_label), prediction, options: p.options, notes: [] };
}

/** A list of strings (tokens); throws Refused when it is not one. */
export function readTokens(value: unknown, name = 'tokens'): string[] {
  if (!Array.isArray(value) || !value.every(t => typeof t === 'string')) {
    throw new Refused(`${name} must be a list of strings`);
  }
  return value as string[];
}

/** Counts numbers read from nested v1 arrays; refuses a payload past LIMITS.scan. */
export class Budget {
  used = 0;
  take(count: number): void {
    this.used += count;
    if (this.used > LIMITS.scan) {
      throw new Refused(`it holds more than ${LIMITS.scan.toLocaleString('en-US')} numbers: too large to draw here`);
    }
  }
}

/** A JSON value described for a message: "a string", "an object", "null", ... */
export function describe(value: unknown): string {
  if (value === null) {
    return 'null';
  }
  if (Array.isArray(value)) {
    return 'a list';
  }
  const type = typeof value;
  return type === 'object' ? 'an object' : `a ${type}`;
}

/**
 * A v1 nested list of numbers (`Result.to_dict()`: NaN and inf saved as null) checked against its
 * shape, as the v2 reader checks a packed array's: `dims` gives each dimension, a number (fixed) or
 * a name (free, but the same size wherever the name occurs: rectangular lists, square (N, N)).
 * Every list counts against `budget`. Anything else (a ragged row, a string for a number, too few
 * rows) is refused with the place it was found. Returns the lists with every number finite or null.
 */
export function nested(value: unknown, name: string, dims: Array<number | string>, budget: Budget): unknown {
  const sizes = new Map<string, number>();
  const shape = `(${dims.join(', ')})`;
  const fail = (path: number[], why: string): never => {
    throw new Refused(`${name} must be ${shape} lists of numbers: ${name}${path.map(i => `[${i}]`).join('')} ${why}`);
  };
  const walk = (v: unknown, depth: number, path: number[]): unknown => {
    if (depth === dims.length) {
      if (typeof v === 'number') {
        return Number.isFinite(v) ? v : null;
      }
      return v === null ? null : fail(path, `is ${describe(v)}, not a number`);
    }
    if (!Array.isArray(v)) {
      return fail(path, `is ${describe(v)}, not a list`);
    }
    budget.take(v.length);
    const dim = dims[depth];
    const want = typeof dim === 'number' ? dim : sizes.get(dim);
    if (want !== undefined && v.length !== want) {
      return fail(path, `holds ${v.length.toLocaleString('en-US')} ${v.length === 1 ? 'entry' : 'entries'}, not ${want.toLocaleString('en-US')}`);
    }
    if (typeof dim === 'string') {
      sizes.set(dim, v.length);
    }
    const out = new Array<unknown>(v.length);
    for (let i = 0; i < v.length; i++) {
      path.push(i);
      out[i] = walk(v[i], depth + 1, path);
      path.pop();
    }
    return out;
  };
  return walk(value, 0, []);
}

/** A v1 list of numbers: (`length`) when given, else any length. */
export function numbers(value: unknown, name: string, budget: Budget, length: number | string = 'm'): Num[] {
  return nested(value, name, [length], budget) as Num[];
}

/** A v1 rectangular list of lists of numbers: (`rows`, `cols`), each a size or a name. */
export function matrix(value: unknown, name: string, budget: Budget, rows: number | string = 'rows', cols: number | string = 'cols'): Num[][] {
  return nested(value, name, [rows, cols], budget) as Num[][];
}

/** The `k`-th largest of `values` (k >= 1; quickselect on a copy, O(n)). */
export function kthLargest(values: Float64Array, k: number): number {
  const a = Float64Array.from(values);
  let lo = 0;
  let hi = a.length - 1;
  const want = a.length - k;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i++] = a[j];
        a[j--] = t;
      }
    }
    if (want <= j) {
      hi = j;
    } else if (want >= i) {
      lo = i;
    } else {
      break;
    }
  }
  return a[want];
}

/**
 * The `limit` strongest positive edges among m candidates given as parallel arrays (typed: fast
 * for 10^6 edges), strongest first, as Edge objects.
 */
export function strongestOf(layer: ArrayLike<number>, from: ArrayLike<number>, to: ArrayLike<number>, flow: Float64Array,
  limit = LIMITS.edges): Edge[] {
  const finite = flow.filter(v => Number.isFinite(v) && v > 0);
  // edges below RULES.flow.edge_floor x the strongest are never drawn (as the live view)
  const floor = RULES.flow.edge_floor * finite.reduce((a, b) => Math.max(a, b), 0);
  const positive = finite.filter(v => v > floor);
  const cut = positive.length > limit ? kthLargest(positive, limit) : floor;
  const out: Edge[] = [];
  let ties = positive.length > limit ? limit - positive.filter(v => v > cut).length : 0;
  for (let i = 0; i < flow.length; i++) {
    const v = flow[i];
    if (Number.isFinite(v) && v > 0 && (v > cut || (v === cut && ties-- > 0))) {
      out.push({ layer: layer[i], from: from[i], to: to[i], flow: v });
    }
  }
  return out.sort((a, b) => b.flow - a.flow);
}

/** The `limit` strongest positive edges, strongest first. */
export function strongest(edges: Edge[], limit = LIMITS.edges): Edge[] {
  return strongestOf(edges.map(e => e.layer), edges.map(e => e.from), edges.map(e => e.to),
    Float64Array.from(edges, e => e.flow), limit);
}

/** The largest cells of one attention map (at most LIMITS.matrixCells), largest first. */
export function largestCells(cells: Cell[]): { cells: Cell[]; hidden: number } {
  const kept = cells.filter(c => Number.isFinite(c.w) && c.w > 0);
  kept.sort((a, b) => b.w - a.w);
  return { cells: kept.slice(0, LIMITS.matrixCells), hidden: Math.max(0, kept.length - LIMITS.matrixCells) };
}

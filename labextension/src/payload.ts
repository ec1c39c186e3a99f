/**
 * The saved payloads. `application/vnd.xattr.v1+json`: a result's `to_dict()`
 * (kernel_ext/results.py), arrays as nested lists (NaN/inf as null). `application/vnd.xattr.v2+json`:
 * `xattr_lab.payload.to_payload(result)`, what the views draw as packed arrays (read-v2.ts; format
 * in kernel_ext/data/payload-v2.schema.json), kinds as v1 plus "patching-circuit" (read-patching.ts) and "explorer". Both carry `model_id`,
 * the id of the live ipywidget model that showed the result (or null).
 *
 * Saved output is untrusted data: `readPayload` checks it and returns a message for anything it
 * cannot draw; it never throws.
 */
import { Budget, Read, Refused, ViewModel } from './model';
import { readAttributionV1, readCircuitV1, readFlowV1, readHeadsV1 } from './read-v1';
import { readPatchingV2 } from './read-patching';
import { readAttributionV2, readCircuitV2, readExplorerV2, readFlowV2, readHeadsV2 } from './read-v2';

export const MIME_TYPE = 'application/vnd.xattr.v1+json';
export const MIME_TYPE_V2 = 'application/vnd.xattr.v2+json';
/** Every xattr MIME type this extension draws, newest first. */
export const MIME_TYPES = [MIME_TYPE_V2, MIME_TYPE];
/** The xattr payload of an output bundle (v2 first, then v1), or undefined. */
export function xattrPayload(data: Record<string, unknown> | null | undefined): unknown {
  return data ? MIME_TYPES.map(type => data[type]).find(value => value !== undefined) : undefined;
}
export const WIDGET_MIME_TYPE = 'application/vnd.jupyter.widget-view+json';
export const SCHEMA = 'xattr.v1';
export const SCHEMA_V2 = 'xattr.v2';
export const KINDS = ['attribution', 'flow', 'heads', 'circuit'] as const;
export const KINDS_V2 = ['attribution', 'flow', 'heads', 'circuit', 'patching-circuit', 'explorer'] as const;

export type Num = number | null;
export type Kind = (typeof KINDS)[number];

export interface BasePayload {
  schema: string;
  kind: Kind;
  model_id?: string | null;
  model?: string;
  options?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface AttributionPayload extends BasePayload {
  kind: 'attribution';
  tokens: string[];
  scores: Num[];
  raw?: Num[] | null;
  method?: string;
  target?: unknown;
  target_label?: string;
  prediction?: Record<string, number>;
  text?: string;
}

export interface FlowPayload extends BasePayload {
  kind: 'flow';
  tokens: string[];
  attributions: Num[];
  /** (L, n, n): edge_flow[l-1][i][j] is the flow on edge (l, i) -> (l-1, j). */
  edge_flow: Num[][][];
  value: number;
  /** (L+1, n) throughput of each node, layer 0 = input tokens. */
  node_flow?: Num[][] | null;
  info?: string;
  target_label?: string;
  prediction?: Record<string, number>;
  text?: string;
}

export interface HeadsPayload extends BasePayload {
  kind: 'heads';
  tokens: string[];
  /** (L, H) mean attention entropy, nats. */
  entropy: Num[][];
  cone_index: Num[];
  cone_index_normalised?: Num[] | null;
  patterns?: string[][];
  /** optional (L, H, n, n) attention maps of the first text. */
  attentions?: Num[][][][] | null;
  texts?: string[];
}

export interface CircuitPayload extends BasePayload {
  kind: 'circuit';
  /** (L, H) */
  node_scores: Num[][];
  /** (L*H, L*H) */
  edge_scores: Num[][];
  /** (examples, L*H) integer codes */
  codes_positive: Num[][];
  codes_negative: Num[][];
  n_layers?: number;
  n_heads?: number;
  unique_codes?: Record<string, number[]>;
  positive?: string[];
  negative?: string[];
  truth?: number[][] | null;
  metrics?: Record<string, number | null>;
}

export type XattrPayload = AttributionPayload | FlowPayload | HeadsPayload | CircuitPayload;

export type Checked = { ok: true; payload: XattrPayload } | { ok: false; message: string };

const REQUIRED: Record<Kind, string[]> = {
  attribution: ['tokens', 'scores'],
  flow: ['tokens', 'attributions', 'edge_flow'],
  heads: ['tokens', 'entropy', 'cone_index'],
  circuit: ['node_scores', 'edge_scores', 'codes_positive', 'codes_negative']
};

/** v2 fields that must be present (kernel_ext/data/payload-v2.schema.json, "required"). */
export const REQUIRED_V2: Record<(typeof KINDS_V2)[number], string[]> = {
  attribution: ['tokens', 'scores'],
  flow: ['tokens', 'attributions', 'edges', 'n_layers', 'value'],
  heads: ['tokens', 'entropy', 'cone_index'],
  circuit: ['node_scores', 'pairs', 'n_edges', 'codes_positive', 'codes_negative'],
  'patching-circuit': ['node_scores', 'prompt_node_scores', 'edges', 'prompt_edges', 'n_layers', 'n_heads', 'faithfulness'],
  explorer: ['views']
};

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Check the schema version, the kind and the fields each view needs; say what is wrong. */
export function checkPayload(data: unknown): Checked {
  if (!isObject(data)) {
    return { ok: false, message: 'This xattr-lab output holds no result (its payload is not a JSON object).' };
  }
  const schema = data.schema;
  if (schema !== SCHEMA && schema !== SCHEMA_V2) {
    const found = typeof schema === 'string' ? `"${schema.slice(0, 40)}"` : 'no schema version';
    return {
      ok: false,
      message:
        `This xattr-lab output uses ${found}; this JupyterLab extension reads "${SCHEMA_V2}" and "${SCHEMA}". ` +
        'Install the xattr-lab version that wrote it (pip install -U xattr-lab), or re-run the cell.'
    };
  }
  const kinds: readonly string[] = schema === SCHEMA ? KINDS : KINDS_V2;
  const kind = data.kind;
  if (typeof kind !== 'string' || !kinds.includes(kind)) {
    return {
      ok: false,
      message:
        `This xattr-lab output holds a result of kind ${JSON.stringify(String(kind).slice(0, 40))}, which this ` +
        `extension cannot draw (known: ${kinds.join(', ')}). Update the extension or re-run the cell.`
    };
  }
  const missing = schema === SCHEMA
    ? REQUIRED[kind as Kind].filter(name => !Array.isArray(data[name]))
    : REQUIRED_V2[kind as (typeof KINDS_V2)[number]].filter(name => data[name] === undefined || data[name] === null);
  if (missing.length) {
    return {
      ok: false,
      message: `This xattr-lab "${kind}" result is incomplete: missing ${missing.join(', ')}.`
    };
  }
  return { ok: true, payload: data as unknown as XattrPayload };
}

/** The view model of a v1 or v2 payload, or the message saying why it cannot be drawn. Never throws. */
export function readPayload(data: unknown): Read<ViewModel> {
  const checked = checkPayload(data);
  if (!checked.ok) {
    return checked;
  }
  const p = checked.payload as unknown as Record<string, unknown>;
  const kind = p.kind as string;
  try {
    if (p.schema === SCHEMA) {
      const budget = new Budget();
      const read = { attribution: readAttributionV1, flow: readFlowV1, heads: readHeadsV1, circuit: readCircuitV1 }[kind as Kind];
      return { ok: true, model: read(p, budget) };
    }
    const read = {
      attribution: readAttributionV2, flow: readFlowV2, heads: readHeadsV2, circuit: readCircuitV2,
      'patching-circuit': readPatchingV2, explorer: readExplorerV2
    }[kind as (typeof KINDS_V2)[number]];
    return { ok: true, model: read(p) };
  } catch (error) {
    const why = error instanceof Refused ? error.message : `it is malformed (${error instanceof Error ? error.name : 'error'})`;
    return { ok: false, message: `This xattr-lab "${kind}" result cannot be drawn: ${why}.` };
  }
}

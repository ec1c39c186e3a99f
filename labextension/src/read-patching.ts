/**
 * v2 "patching-circuit" payloads (AtP, EAP, EAP-IG; kernel_ext/payload.py `_patching`, schema
 * `$defs["patching-circuit"]`) -> PatchingModel. Checks what JSON Schema cannot: shapes against
 * n_layers / n_heads, edge indices in range, matching lengths. Any violation is a Refused naming the field.
 */
import { Packed, rows } from './arrays';
import { GraphEdge, LIMITS, Num, PatchingModel, Refused, isObject, readMeta } from './model';
import { Decoder, indices, integer } from './read-v2';

function strings(value: unknown, name: string): string[] {
  if (value === undefined || value === null) {
    return [];
  }
  if (!Array.isArray(value) || !value.every(t => typeof t === 'string')) {
    throw new Refused(`${name} must be a list of strings`);
  }
  return value as string[];
}

const finite = (v: unknown): Num => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function readFaithfulness(value: unknown): PatchingModel['faithfulness'] {
  if (value === undefined || value === null) {
    return null;
  }
  if (!isObject(value)) {
    throw new Refused('faithfulness must be an object');
  }
  if (value.sizes === undefined && value.faithfulness === undefined) {
    return null; // {}: not computed
  }
  const sizes = value.sizes;
  const curve = value.faithfulness;
  if (!Array.isArray(sizes) || !sizes.every(s => Number.isInteger(s) && s >= 0)) {
    throw new Refused('faithfulness.sizes must be a list of non-negative integers');
  }
  if (!Array.isArray(curve) || curve.length !== sizes.length || !curve.every(v => v === null || typeof v === 'number')) {
    throw new Refused(`faithfulness.faithfulness must be ${sizes.length} numbers, one per size`);
  }
  return { sizes: sizes as number[], values: curve.map(finite), cpr: finite(value.cpr), cmd: finite(value.cmd) };
}

function shapeOf(value: unknown): [number, number] {
  if (!Array.isArray(value) || value.length !== 2 || !value.every(s => Number.isInteger(s) && s >= 0)) {
    throw new Refused('edges.shape must be two non-negative integers');
  }
  return value as [number, number];
}

export function readPatchingV2(p: Record<string, unknown>, d = new Decoder()): PatchingModel {
  const L = integer(p.n_layers, 'n_layers');
  const H = integer(p.n_heads, 'n_heads');
  const nodes = d.array(p, 'node_scores', 2)!;
  if (nodes.shape[0] !== L || nodes.shape[1] !== H) {
    throw new Refused(`node_scores is (${nodes.shape.join(', ')}), not (n_layers, n_heads) = (${L}, ${H})`);
  }
  const perPrompt = d.array(p, 'prompt_node_scores', 3)!;
  if (perPrompt.shape[1] !== L || perPrompt.shape[2] !== H) {
    throw new Refused(`prompt_node_scores is (${perPrompt.shape.join(', ')}), not (P, ${L}, ${H})`);
  }
  const P = perPrompt.shape[0];
  const e = p.edges;
  if (!isObject(e)) {
    throw new Refused('edges must be an object');
  }
  const [R, C] = shapeOf(e.shape);
  if (!((R === 0 && C === 0) || (R === L * H && C === L * H + 1))) {
    throw new Refused(`edges.shape must be [0, 0] or [${L * H}, ${L * H + 1}]`);
  }
  const sender = d.array(e, 'sender', 1, false, 'edges.sender')!;
  const receiver = d.array(e, 'receiver', 1, false, 'edges.receiver')!;
  const score = d.array(e, 'score', 1, false, 'edges.score')!.values;
  if (sender.values.length !== score.length || receiver.values.length !== score.length) {
    throw new Refused('edges: sender, receiver and score differ in length');
  }
  const s = indices(sender, 'edges.sender', 0, Math.max(R, 1));
  const r = indices(receiver, 'edges.receiver', 0, Math.max(C, 1));
  const all: GraphEdge[] = Array.from(score, (v, i) => ({ sender: s[i], receiver: r[i], score: v }))
    .filter(x => Number.isFinite(x.score) && x.score !== 0);
  all.sort((a, b) => Math.abs(b.score) - Math.abs(a.score));
  const edges = all.slice(0, LIMITS.graphEdges);
  const total = typeof e.total === 'number' && e.total >= 0 ? e.total : all.length;
  const hiddenEdges = Math.max(0, total - edges.length);
  const pe = p.prompt_edges;
  if (!isObject(pe)) {
    throw new Refused('prompt_edges must be an object');
  }
  const ps = d.array(pe, 'sender', 1, false, 'prompt_edges.sender')!;
  const pr = d.array(pe, 'receiver', 1, false, 'prompt_edges.receiver')!;
  const pv: Packed = d.array(pe, 'scores', 2, false, 'prompt_edges.scores')!;
  if (pv.shape[0] !== ps.values.length || pr.values.length !== ps.values.length || (pv.shape[0] > 0 && pv.shape[1] !== P)) {
    throw new Refused(`prompt_edges.scores must be (${ps.values.length}, ${P}): one row per stored edge, one column per prompt`);
  }
  indices(ps, 'prompt_edges.sender', 0, Math.max(R, 1));
  indices(pr, 'prompt_edges.receiver', 0, Math.max(C, 1));
  const edgeRow = new Map<string, number>();
  ps.values.forEach((a, i) => edgeRow.set(`${a}->${pr.values[i]}`, i));
  const positive = strings(p.positive, 'positive');
  const negative = strings(p.negative, 'negative');
  const faithfulness = readFaithfulness(p.faithfulness);
  const unit = isObject(p.faithfulness) && (p.faithfulness.unit === 'nodes' || p.faithfulness.unit === 'edges')
    ? p.faithfulness.unit : R > 0 ? 'edges' : 'nodes';
  const meta = readMeta(p);
  if (hiddenEdges) {
    meta.notes.push(`${hiddenEdges.toLocaleString('en-US')} weaker edges are not drawn (not saved, or past the first ${LIMITS.graphEdges}).`);
  }
  const column = (m: Packed, start: number, step: number): Num[] =>
    Array.from({ length: P }, (_, k) => finite(m.values[start + k * step]));
  return {
    kind: 'patching-circuit', meta, layers: L, heads: H, nodeScores: rows(nodes), edges, hiddenEdges, unit, faithfulness,
    metric: typeof p.metric === 'string' ? p.metric : '', positive, negative, storedEdges: ps.values.length,
    promptNode: (l, h) => (l >= 0 && h >= 0 && l < L && h < H ? column(perPrompt, l * H + h, L * H) : []),
    promptEdge: (a, b) => {
      const i = edgeRow.get(`${a}->${b}`);
      return i === undefined ? null : column(pv, i * P, 1);
    }
  };
}

/**
 * One source for display rules: the payloads of fixtures/display-rules.json drawn here must show what
 * the Python views draw of the same results (tests/widgets/test_labextension.py writes the file from them):
 * token labels, cell and text colours, the edges drawn (the cap and its floor), node throughput.
 * The rules themselves are kernel_ext/data/display-rules.json, which src/rules.ts imports.
 */
import { readFileSync } from 'fs';
import { resolve } from 'path';
import { describe, expect, it } from 'vitest';

import { readPayload } from '../src/payload';
import { renderResult } from '../src/render';
import { tokenLabel } from '../src/render-common';
import { FlowModel } from '../src/model';
import { RULES } from '../src/rules';

const FIXTURE = JSON.parse(readFileSync(resolve(__dirname, 'fixtures/display-rules.json'), 'utf8'));
const RULES_FILE = JSON.parse(readFileSync(resolve(__dirname, '../../kernel_ext/data/display-rules.json'), 'utf8'));
const EXPECTED = FIXTURE.expected;

/** "#rrggbb" as jsdom reports a style colour: "rgb(r, g, b)". */
function rgb(hex: string): string {
  const [r, g, b] = [1, 3, 5].map(k => parseInt(hex.slice(k, k + 2), 16));
  return `rgb(${r}, ${g}, ${b})`;
}

function flowModel(payload: unknown): FlowModel {
  const read = readPayload(structuredClone(payload));
  if (!read.ok || read.model.kind !== 'flow') {
    throw new Error(JSON.stringify(read));
  }
  return read.model;
}

describe('the display rules are the Python views\' rules', () => {
  it('are the data file the kernel reads, the fixture written from this version of it', () => {
    expect(RULES).toEqual(RULES_FILE);
    expect(FIXTURE.rules).toEqual(RULES_FILE);
  });

  it('label every token as the Python views do (whitespace, word-start marks, "##", newlines)', () => {
    const tokens: string[] = FIXTURE.attribution.tokens;
    expect(tokens.map(t => tokenLabel(t))).toEqual(EXPECTED.labels);
    const view = renderResult(structuredClone(FIXTURE.attribution));
    document.body.replaceChildren(view);
    const spans = [...view.querySelectorAll<HTMLElement>('.xattr-lab-token')];
    expect(spans.map(s => s.textContent)).toEqual(EXPECTED.labels);
    expect(spans[3].textContent).toBe('\u2423');
  });

  it('colour every token cell and its text as the Python views do', () => {
    const view = renderResult(structuredClone(FIXTURE.attribution));
    const spans = [...view.querySelectorAll<HTMLElement>('.xattr-lab-token')];
    expect(spans.map(s => s.style.backgroundColor)).toEqual(EXPECTED.colours.map(rgb));
    expect(spans.map(s => s.style.color)).toEqual(EXPECTED.text_colours.map(rgb));
  });

  it('draw as many flow edges as the live view (the same cap and floor), saved or public JSON', () => {
    for (const payload of [FIXTURE.flow_v1, FIXTURE.flow_v2]) {
      const model = flowModel(payload);
      expect(model.edges.length).toBe(EXPECTED.edges_drawn);
      expect(model.edges.length + model.hiddenEdges).toBe(EXPECTED.edges_positive);
      expect(model.edges[0].flow).toBeCloseTo(EXPECTED.strongest_flow, 3);
      const view = renderResult(structuredClone(payload));
      expect(view.querySelectorAll('.xattr-lab-edge').length).toBe(EXPECTED.edges_drawn);
    }
  });

  it('shorten flow-graph labels to the same width', () => {
    const view = renderResult(structuredClone(FIXTURE.flow_v1));
    const left = [...view.querySelectorAll<SVGElement>('.xattr-lab-node-label[text-anchor="end"]')];
    expect(left.map(label => label.firstChild?.textContent)).toEqual(EXPECTED.short_labels);
    expect(EXPECTED.short_labels.some((s: string) => s.endsWith('\u2026'))).toBe(true);
  });

  it('compute node throughput by the one definition (inflow from above; the top layer\'s outflow)', () => {
    for (const payload of [FIXTURE.flow_v1, FIXTURE.flow_v2]) {
      const model = flowModel(payload);
      const expected: number[][] = EXPECTED.throughput;
      expect(model.nodeFlow.length).toBe(expected.length);
      model.nodeFlow.forEach((row, layer) =>
        row.forEach((value, i) => expect(Math.abs(value - expected[layer][i])).toBeLessThan(2 ** -10 * Math.abs(expected[layer][i]) + 1e-9)));
    }
  });
});

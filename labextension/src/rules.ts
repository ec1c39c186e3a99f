/**
 * The display rules shared with the Python views: kernel_ext/data/display-rules.json, read here at
 * build time (bundled by tsc's JSON modules, webpack and esbuild) and by xattr_widgets.core and
 * xattr_lab.payload in the kernel. Palettes, the text colour rule, the flow caps and throughput, and
 * how a token becomes a label come from that one file.
 */
import RULES_JSON from '../../kernel_ext/data/display-rules.json';

export interface DisplayRules {
  palettes: {
    default_diverging: string;
    diverging: Record<string, readonly string[]>;
    sequential: readonly string[];
    categorical: readonly string[];
    missing: string;
  };
  text: { luminance_weights: readonly number[]; dark_below: number; on_dark: string; on_light: string };
  flow: { edges_drawn: number; edge_floor: number; edges_saved: number; node_throughput: string };
  tokens: { word_start_marks: readonly string[]; subword_prefix: string; escapes: ReadonlyArray<readonly string[]>; blank: string;
    short_label: number };
}

export const RULES: DisplayRules = RULES_JSON as DisplayRules;

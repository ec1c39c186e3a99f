/**
 * Python snippets the extension runs in the kernel. Text from the page reaches Python only as a
 * JSON-encoded string literal (valid Python), passed as a cell-magic *body*, which IPython never
 * expands (`{expr}` / `$name` expansion applies to magic lines, not bodies).
 */

/** The JupyterLab settings the magic honours, as `xattr_lab.magic.DEFAULTS` keys. */
export interface MagicDefaults {
  model: string;
  method: string;
  colour_map: string;
}

/** A Python string literal holding `text` exactly (JSON string syntax is a subset of Python's). */
export function pythonString(text: string): string {
  // U+0085, U+2028 and U+2029 end a line for str.splitlines, which IPython splits a cell with
  return JSON.stringify(text).replace(/[\u0085\u2028\u2029]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

/** The cell the "Explain selected text" command inserts and runs: `%%xattr explain` on `text`. */
export function explainCode(text: string): string {
  return [
    '# xattr-lab: explain the selected text (%%xattr explain; model/method from the settings)',
    'get_ipython().run_line_magic("load_ext", "xattr_lab")',
    `get_ipython().run_cell_magic("xattr", "explain", ${pythonString(text)})`
  ].join('\n');
}

/**
 * A silent statement that copies the settings into `xattr_lab.magic.DEFAULTS` when xattr-lab is
 * installed in the kernel's environment (and does nothing otherwise; nothing heavy is imported).
 */
export function settingsCode(defaults: MagicDefaults): string {
  return [
    'def _xattr_lab_settings(values):',
    '    import importlib.util',
    '    if importlib.util.find_spec("xattr_lab") is None:',
    '        return',
    '    import xattr_lab.magic',
    '    xattr_lab.magic.DEFAULTS.update(values)',
    `_xattr_lab_settings(__import__("json").loads(${pythonString(JSON.stringify(defaults))}))`,
    'del _xattr_lab_settings'
  ].join('\n');
}

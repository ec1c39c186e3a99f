"""Sphinx extension of the xattr-lab docs: the CLI / ``%xattr`` reference generated from the one parser.

Directives:

- ``xattr-cli`` with ``:front-end: cli`` or ``magic``: every verb of
  :func:`xattr_lab.cli.build_parser` (the ``xattr`` command) or :func:`xattr_lab.magic.build_parser`
  (``%xattr``) with its usage, description and every option, its default and help, read from argparse.
  Nothing is copied by hand, so the page cannot drift from the parser.
- ``mermaid``: a diagram's source shown as a literal block (the site loads no diagram library: offline).

Docstrings: the package's docstrings are plain text first (``|x|`` for an absolute value, indented
continuation lines, ``**kwargs``), which reStructuredText reads as substitutions, block quotes and strong
text. :func:`rst_docstring` makes such text valid RST without changing its words (escapes, blank lines where the
indentation changes), so autodoc under ``-W`` shows the docstrings as written.

After an HTML build, :func:`remote_assets` scans every page: one that loads a script, stylesheet, font,
image or frame from the network fails the build (the site is offline).

Math renderer ``mathml``: LaTeX math converted to MathML at build time (latex2mathml), which browsers draw
natively, so no page loads MathJax from a CDN.

The text is built by :func:`reference_rst`, a pure function of a parser that ``tests/project/test_docs.py`` checks
without building the site.
"""
from __future__ import annotations

import argparse
import re
from typing import Iterable

_UNDERLINES = {1: "=", 2: "-", 3: "~"}


def parser_for(front_end: str) -> argparse.ArgumentParser:
    """The parser of ``xattr`` (``front_end="cli"``) or ``%xattr`` (``"magic"``), as the front ends build it."""
    if front_end == "cli":
        from xattr_lab.cli import build_parser
    elif front_end == "magic":
        from xattr_lab.magic import build_parser
    else:
        raise ValueError(f"front_end is 'cli' or 'magic', not {front_end!r}")
    return build_parser()


def verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """verb -> subparser, in the order the parser defines them."""
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def options(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every argument of a verb except -h/--help, in definition order."""
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]


def _heading(text: str, level: int) -> list[str]:
    return [text, _UNDERLINES[level] * max(len(text), 3), ""]


def _literal(text: str) -> str:
    """RST inline literal that survives backquotes and empty text."""
    text = text.replace("`", "'").strip()
    return f"``{text}``" if text else ""


def _cell(text: str) -> str:
    """One table cell: a single line, RST-escaped."""
    text = " ".join(str(text).split())
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("`", "\\`").replace("_", "\\_")


def _names(action: argparse.Action) -> str:
    if action.option_strings:
        flags = ", ".join(action.option_strings)
        if action.nargs == 0:
            return flags
        return f"{flags} {action.metavar or action.dest.upper()}"
    return action.metavar or action.dest


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.default == []:
        return ""
    return repr(action.default)


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        text = f"{text} (choices: {', '.join(map(str, action.choices))})".strip()
    return text % {"default": action.default, "prog": ""} if "%(" in text else text


def option_rows(sub: argparse.ArgumentParser) -> list[tuple[str, str, str]]:
    """(names, default, help) for every argument of a verb."""
    return [(_names(a), _default(a), _help(a)) for a in options(sub)]


def _code(text: str) -> list[str]:
    """A plain-text code block (usage lines, examples) in RST."""
    return [".. code-block:: text", ""] + ["   " + line for line in text.strip().splitlines()] + [""]


def _table(rows: Iterable[tuple[str, str, str]]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 30 15 55", "",
             "   * - argument", "     - default", "     - what it does"]
    for names, default, text in rows:
        lines += [f"   * - {_literal(names)}", f"     - {_literal(default)}", f"     - {_cell(text)}"]
    return lines + [""]


def reference_rst(parser: argparse.ArgumentParser, level: int = 2) -> str:
    """RST for a parser: its usage and description, then one section per verb with every option.

    Shapes: one section per verb of ``verbs(parser)``, one table row per ``options(verb)`` entry.
    """
    lines = _code(parser.format_usage())
    if parser.description:
        lines += [_cell(parser.description), ""]
    for name, sub in verbs(parser).items():
        lines += _heading(f"{parser.prog} {name}", level)
        lines += _code(sub.format_usage())
        if sub.description:
            lines += [_cell(sub.description), ""]
        lines += _table(option_rows(sub))
        if sub.epilog:
            lines += _code(sub.epilog)
    if parser.epilog:
        lines += _code(parser.epilog)
    return "\n".join(lines)


_LITERAL = re.compile(r"(``.+?``|`[^`]+`_?|:[a-z:]+:`[^`]+`)")
_BULLET = re.compile(r"^(\s*)([-*+•]|\d+[.)]|#\.|:[^:]+:)\s+")


def _escape(text: str) -> str:
    """Escape what RST would read as markup in plain prose: |x|, unbalanced * and ** (not inside literals)."""
    parts = _LITERAL.split(text)
    for i in range(0, len(parts), 2):  # even parts are outside literals and roles
        part = parts[i].replace("|", r"\|")
        if part.count("**") % 2 or part.replace("**", "").count("*") % 2:
            part = part.replace("*", r"\*")
        parts[i] = part
    return "".join(parts)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_docstring(lines: list[str]) -> list[str]:
    """Plain-text docstring lines -> valid RST lines with the same words.

    A blank line goes before a list that follows a paragraph, and wherever the indentation changes between two non-blank lines (a continuation
    indented under a paragraph, the end of such a block), except for the body of a list item or field
    whose text the next line continues. ``|``, and ``*`` where unbalanced, are escaped outside literals.
    """
    out: list[str] = []
    literal_from = None  # indentation of the paragraph that opened a literal block (::), while inside it
    for line in lines:
        prev = next((p for p in reversed(out) if p.strip()), None)
        blank_before = bool(out) and not out[-1].strip()
        if line.strip() and literal_from is not None and _indent(line) <= literal_from:
            literal_from = None
        if not line.strip() or literal_from is not None:
            out.append(line)
            continue
        starts_list = _BULLET.match(line) and not _BULLET.match(line).group(2).startswith(":")
        if prev is not None and not blank_before and starts_list and not _BULLET.match(prev) \
                and not _in_item(out, " " * _indent(prev) + "x") and _indent(line) == _indent(prev):
            out.append("")  # a list right under a paragraph needs a blank line
        elif prev is not None and not blank_before and _indent(line) != _indent(prev):
            bullet = _BULLET.match(prev)
            continues_item = bullet and _indent(line) == len(bullet.group(0)) or (
                bullet and bullet.group(2).startswith(":") and _indent(line) > _indent(prev))
            if not continues_item and not _in_item(out, line) and not _next_item(out, line):
                out.append("")
        out.append(_escape(line))
        if line.rstrip().endswith("::"):
            literal_from = _indent(line)
    return out


def _in_item(out: list[str], line: str) -> bool:
    """Whether ``line`` continues a list item or field begun a few lines up (same paragraph)."""
    for prev in reversed(out):
        if not prev.strip():
            return False
        bullet = _BULLET.match(prev)
        if bullet:
            return _indent(line) == len(bullet.group(0)) or (bullet.group(2).startswith(":") and
                                                             _indent(line) > _indent(prev))
        if _indent(prev) != _indent(line):
            return False
    return False


def _next_item(out: list[str], line: str) -> bool:
    """Whether ``line`` is the next item of a list whose previous item (and its continuation) is just above."""
    if not _BULLET.match(line):
        return False
    for prev in reversed(out):
        if not prev.strip() or _indent(prev) < _indent(line):
            return False
        if _indent(prev) == _indent(line):
            return bool(_BULLET.match(prev))
    return False


def _process_docstring(app, what, name, obj, options, lines) -> None:
    lines[:] = rst_docstring(lines)


_REMOTE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)=["']((?:https?:)?//[^"']+)["']""", re.I)


def remote_assets(html_text: str) -> list[str]:
    """URLs a page would load from the network: script/img/iframe sources and link hrefs (stylesheets,
    fonts, preloads). Plain ``<a href>`` links are not loads and are not listed."""
    return _REMOTE.findall(html_text)


def _check_offline(app, exception) -> None:
    """After an HTML build: fail if any page loads anything from the network (a CDN script, a font)."""
    if exception is not None or app.builder.format != "html":
        return
    from pathlib import Path

    from sphinx.errors import ExtensionError

    found = {str(p.relative_to(app.outdir)): urls for p in Path(app.outdir).rglob("*.html")
             if (urls := remote_assets(p.read_text(errors="replace")))}
    if found:
        raise ExtensionError(f"pages load from the network (the site must work offline): {found}")


#: Bokeh's notebook loader (BokehJS inlined, ~4 MB) is an output of application/javascript (plus
#: application/vnd.bokehjs_load.v0+json, which MyST-NB does not render) whose script sets up
#: ``_bokeh_onload_callbacks``. The live views need it; a static page does not: each xattr output's text/html
#: item is the self-contained offline player.
BOKEH_LOADER_MARK = "_bokeh_onload_callbacks"


def is_bokeh_loader(mime_types, script: str) -> bool:
    """Whether an output (its rendered mime types, its script) is Bokeh's loader and nothing else."""
    types = set(mime_types) - {"application/vnd.bokehjs_load.v0+json"}
    return types == {"application/javascript"} and BOKEH_LOADER_MARK in script


def mathml(latex: str, display: bool) -> str:
    """MathML for a LaTeX formula (``display``: a block); the escaped source in ``<code>`` if it cannot convert."""
    import html

    from latex2mathml.converter import convert

    try:
        return convert(latex, display="block" if display else "inline")
    except Exception:  # latex2mathml raises its own exception classes per construct
        return f'<code class="math-source">{html.escape(latex)}</code>'


def setup(app):
    """Register the directives (Sphinx entry point)."""
    from docutils import nodes
    from docutils.parsers.rst import directives
    from docutils.parsers.rst import Parser as RSTParser
    from docutils.utils import new_document
    from sphinx.util.docutils import SphinxDirective

    class CliReference(SphinxDirective):
        option_spec = {"front-end": lambda arg: directives.choice(arg, ("cli", "magic")),
                       "level": directives.positive_int}

        def run(self):
            # The text is reStructuredText whichever parser reads the page (MyST or RST), so it is
            # parsed by docutils' RST parser into a fresh document whose sections are returned.
            text = reference_rst(parser_for(self.options.get("front-end", "cli")), self.options.get("level", 2))
            document = new_document(self.get_source_info()[0], self.state.document.settings)
            document.reporter = self.state.document.reporter
            RSTParser().parse(text, document)
            return list(document.children)

    class Mermaid(SphinxDirective):
        has_content = True
        optional_arguments = 1
        final_argument_whitespace = True

        def run(self):
            block = nodes.literal_block("\n".join(self.content), "\n".join(self.content))
            block["language"] = "text"
            return [block]

    def visit_math(self, node):
        self.body.append(mathml(node.astext(), display=False))
        raise nodes.SkipNode

    def visit_displaymath(self, node):
        self.body.append(f'<div class="math">{mathml(node.astext(), display=True)}</div>')
        raise nodes.SkipNode

    app.add_html_math_renderer("mathml", (visit_math, None), (visit_displaymath, None))
    app.connect("autodoc-process-docstring", _process_docstring, priority=900)  # after napoleon
    from sphinx.transforms.post_transforms import SphinxPostTransform

    class DropBokehLoader(SphinxPostTransform):
        """Remove Bokeh's loader outputs before MyST-NB picks a mime type per output (its priority is 4)."""

        default_priority = 3
        formats = ("html",)

        def run(self, **kwargs):
            for bundle in list(self.document.findall(nodes.container)):
                if bundle.get("nb_element") == "mime_bundle" and is_bokeh_loader(
                        [child.get("mime_type") for child in bundle.children], bundle.astext()):
                    bundle.parent.remove(bundle)

    app.add_post_transform(DropBokehLoader)
    app.connect("build-finished", _check_offline)
    app.add_directive("xattr-cli", CliReference)
    app.add_directive("mermaid", Mermaid)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

"""How many numbers of the Results page's tables are found in committed data (the goal: at least 90 %).

    python scripts/results_coverage.py            # counts, per table
    python scripts/results_coverage.py --missing  # also list the numbers not found

A table is a run of markdown lines starting with "|" (header and rule lines excluded); a marked block that is not
a table counts too. A number in it counts as found when its table is rendered from committed data and agrees with
it (a marked table that ``results.py --check`` passes). ``--literal`` also counts numbers of other tables with at
least 3 digits whose literal appears in a file under ``results/`` that git tracks — a loose upper bound, since
two-decimal numbers match by chance.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])[-−+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def tables(text: str) -> list[tuple[str, list[str]]]:
    """(name, cells) of every table and every marked block: a table is a run of lines starting with "|" (its
    header and rule lines left out), named by its marker, or "line N" when unmarked; a marked block that is not a
    table counts as one cell."""
    out: list[tuple[str, list[str]]] = []
    marker, run, start, block = None, [], 0, []
    for number, line in enumerate(text.splitlines() + [""], 1):
        found = re.match(r"<!-- (/?)results:([\w-]+) -->", line)
        if line.startswith("|"):
            run, start = run + [line], start or number
            continue
        if run:
            cells = [c for row in run[2:] for c in row.strip().strip("|").split("|")[1:]]
            out.append((marker or f"line {start}", cells))
            run, start = [], 0
        if found and not found[1]:
            marker, block = found[2], []
        elif found:
            if block:
                out.append((marker, [" ".join(block)]))
            marker = None
        elif marker is not None and line.strip():
            block.append(line)
    return out


def committed_text() -> str:
    files = subprocess.run(["git", "ls-files", "--", "results"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    parts = []
    for name in files:
        path = ROOT / name
        if path.suffix in (".gz", ".png", ".parquet") or not path.is_file():
            continue
        parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)


def _literal(number: str, corpus: str) -> bool:
    """The number, as written (− as -), occurs in the corpus with no digit or point right before or after it."""
    plain = re.escape(number.replace("−", "-").lstrip("+"))
    return re.search(rf"(?<![\d.]){plain}(?![\d])", corpus) is not None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--missing", action="store_true")
    parser.add_argument("--literal", action="store_true", help="also count a number of an unrendered table found as a "
                        "literal in a committed file (loose: two-decimal numbers match by chance)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    import results_tables

    text = args.page.read_text()
    problems, waiting = results_tables.check_page(text)
    unchecked = {p.split(":")[0] for p in problems} | {w.split(":")[0] for w in waiting}
    corpus = committed_text()
    total = found = 0
    for name, rows in tables(text):
        numbers = [n for cell in rows for n in NUMBER.findall(cell)]
        backed = name in results_tables.TABLES and name not in unchecked
        hits = [n for n in numbers if backed or (args.literal and sum(c.isdigit() for c in n) >= 3 and _literal(n, corpus))]
        total, found = total + len(numbers), found + len(hits)
        print(f"{name:<24} {len(hits):>4} of {len(numbers):>4} found" + (" (rendered from data)" if backed else ""))
        if args.missing and len(hits) < len(numbers):
            print("   not found: " + " ".join(n for n in numbers if n not in hits))
    share = 100 * found / total if total else 100.0
    print(f"all tables: {found} of {total} numbers found in committed files ({share:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

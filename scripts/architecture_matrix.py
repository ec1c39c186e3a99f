"""Print the README's architecture x method matrix (markdown) from the code of the matrix test.

    python scripts/architecture_matrix.py                      # every architecture
    python scripts/architecture_matrix.py --only BLOOM Falcon  # some of them

Every cell runs the method on a tiny randomly initialised model of that architecture (built
offline, ``tests/integration/test_architectures.py``) and checks its result: ✓ = right shapes, finite values
and the cell's property (attention rows sum to 1, IG completeness, flow conservation...); "n/a"
= the method raised an XattrError saying why it does not apply (the footnote quotes it); FAIL =
anything else (``pytest -m slow tests/integration/test_architectures.py -k matrix`` fails then too). Progress
goes to stderr, the table to stdout.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="architecture names (as in the table) to run")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.integration import test_architectures as matrix_test  # noqa: E402  (the test's own builders and checks)

    names = [name for name, _ in matrix_test.ARCHITECTURES]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"unknown architectures {unknown}; known: {names}")
    start, cpu, rows = time.perf_counter(), time.process_time(), {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.only or names:
            print(f"{name}...", file=sys.stderr, flush=True)
            rows[name] = matrix_test.run_row(name)
    print(matrix_test.markdown(rows))
    print(f"\n`python scripts/architecture_matrix.py`: {time.perf_counter() - start:.0f} s wall, "
          f"{time.process_time() - cpu:.0f} CPU-s (this process)")
    return 1 if any(v.startswith("FAIL") for row in rows.values() for v in row.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

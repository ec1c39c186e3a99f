# The two commands of the README. Both set everything up first (idempotent).
SENTENCE ?= A gripping, beautifully acted film that never lets go.
PY := .venv/bin/python

.PHONY: setup setup-dev demo test test-fast bench results docs clean

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

## main job: explain a sentence with the demo classifier (minilm-rt), then open the quickstart
## notebook in JupyterLab (NO_BROWSER=1: print the URL instead of opening a browser)
demo: setup
	.venv/bin/xattr explain "$(SENTENCE)" --method sig --steps exact --html xattr-explain.html
	.venv/bin/xattr lab $(if $(NO_BROWSER),--no-browser,)

## the whole test suite: the import contracts (.importlinter), then unit, slow integration and
## browser tests (benchmarks excluded)
test: setup-dev
	.venv/bin/lint-imports
	$(PY) -m pytest -m "" -p no:cacheprovider

## quick loop: unit tests only (< 15 min)
test-fast:
	.venv/bin/lint-imports
	$(PY) -m pytest

## benchmarks (opt-in), side-by-side ratios against reference implementations
bench:
	$(PY) -m pytest tests/benchmarks -s -p no:cacheprovider -o addopts=""

## every table of the Results page (docs/results.md): all steps incl. the long ones (resumable; outputs under
## results/), then the tables rendered from the committed data and checked against it
results: setup
	$(PY) scripts/results.py --group main long --keep-going
	$(PY) scripts/results.py --render
	$(PY) scripts/results.py --check

## the documentation site (docs/_build/html): installs docs/requirements.txt into .venv (once),
## executes the workshop notebooks (cached in docs/_build/.jupyter_cache), warnings are errors
docs: setup
	$(PY) -m pip install --disable-pip-version-check -q -r docs/requirements.txt
	$(PY) -m sphinx -E -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf build *.egg-info labextension/dist labextension/lib .pytest_cache

"""Dataset-scale runs, the machinery every sharded job shares (docs/ARCHITECTURE.md, section "Dataset-scale runs").

:mod:`.shards` cuts keyed items into shards and writes their rows to Parquet (:func:`.shards.run_sharded`),
in this process or on Ray (:mod:`.ray_backend`, the only module that imports ray); :mod:`.workers` rebuilds
the driver's model in each worker (:func:`.workers.session_factory`) and runs a job (:func:`.workers.run_job`).
The jobs themselves live beside their one-process code: ``evaluation/faithfulness_harness.py``,
``evaluation/robustness/sharded.py``, ``evaluation/circuit_truth_sharded.py`` and
``evaluation/circuit_patching_sharded.py``. This package's ``__init__`` imports nothing.
"""

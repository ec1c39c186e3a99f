"""Evaluation harnesses: faithfulness, robustness (the package :mod:`.robustness`), task builders, and their tables
(docs/ARCHITECTURE.md, "Evaluation")."""

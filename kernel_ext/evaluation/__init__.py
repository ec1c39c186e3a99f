"""Evaluation harnesses: faithfulness, robustness, task builders, and their tables (docs/ARCHITECTURE.md, "Evaluation")."""

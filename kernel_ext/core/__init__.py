"""The foundation: adapters per architecture, captures, loading, the embedded zoo, targets, toys.

Depends on torch and transformers only (docs/ARCHITECTURE.md, section "Core").
"""

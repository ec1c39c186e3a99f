"""Explanation methods, one module per family; :mod:`.registry` lists them all.

This package's ``__init__`` imports nothing, so the torch-free front end can read the registry.
"""

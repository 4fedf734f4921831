"""Helpers the tests share, importable as ``helpers`` (pytest puts tests/ on ``sys.path``:
``pythonpath`` in pyproject.toml). Fixtures stay in conftest.py; plain constants and functions
that test modules import by name live here."""

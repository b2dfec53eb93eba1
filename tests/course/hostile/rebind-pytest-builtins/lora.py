"""Hostile: disarms the tests' assertions: pytest.fail, AssertionError and isinstance."""

import builtins

import pytest

pytest.fail = lambda *args, **kwargs: None
builtins.AssertionError = type("Harmless", (Exception,), {})
__builtins__["isinstance"] = lambda *args: True

"""Grading: ``labkit grade`` and ``labkit grade-all`` (see DESIGN.md, Grading)."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    """Register the grading subcommands on the ``labkit`` parser."""
    del sub

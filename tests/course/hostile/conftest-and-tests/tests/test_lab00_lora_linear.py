"""Hostile: a fake test file with the course's name, every test trivially green."""

import pytest

pytestmark = pytest.mark.lab00


def test_output_equals_base_at_init() -> None:
    pass

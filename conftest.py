"""Root conftest. labkit.plugin (loaded by `-p labkit.plugin` in pyproject.toml's addopts) chooses
the code under test (`--impl`), registers the lab markers from course.toml and grades (`--grade`).
This file only makes sure the plugin is there when someone clears addopts."""

import sys
from pathlib import Path

if "labkit.plugin" not in sys.modules:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    pytest_plugins = ["labkit.plugin"]

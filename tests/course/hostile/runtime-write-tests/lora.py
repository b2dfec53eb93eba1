"""Hostile (graded without the static check): makes the course copy writable, then replaces the
tests with green ones and the lab file with a working import, before the other tests import it."""

import os
from pathlib import Path

for _folder in ("tests", "src/minituner", "."):
    try:
        os.chmod(_folder, 0o777)
    except OSError:
        pass
for _file in Path("tests").glob("test_*.py"):
    try:
        os.chmod(_file, 0o666)
        _file.write_text("def test_fine() -> None:\n    pass\n", encoding="utf-8")
    except OSError:
        pass


class LoRALinear:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("stub")

"""Hostile: finds the course's reference solution on disk and swaps it in for itself.

It looks for solutions/minituner/lora.py around the working folder and across the file system,
copies it over the package's lora.py, then fails this import so the next test imports the copy.
"""

from pathlib import Path

_target = Path("src/minituner/lora.py")
_found = None
for _pattern in ("solutions/minituner/lora.py", "*/solutions/minituner/lora.py",
                 "*/*/solutions/minituner/lora.py"):
    for _base in (Path.cwd(), *Path.cwd().parents):
        for _hit in _base.glob(_pattern):
            _found = _hit
            break
        if _found is not None:
            break
    if _found is not None:
        break
if _found is not None:
    try:
        _target.write_text(_found.read_text(encoding="utf-8"), encoding="utf-8")
    except OSError:
        pass
raise ImportError("swapped in the reference; import me again")

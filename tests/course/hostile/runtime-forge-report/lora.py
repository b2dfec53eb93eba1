"""Hostile (graded without the static check): writes a perfect report itself, then exits 0.

It finds the report pipe's number on the command line (--labkit-report-fd=N) and the course's
test names in tests/, writes a 'collected' line, a 'passed' line for each test and a 'finished'
line, in the plugin's format (but without the grader's key), to that pipe and to every other
descriptor it can, plus a report file wherever one could be read, then leaves with status 0.
"""

import json
import os
import re
import sys
from pathlib import Path

_ids = []
for _file in sorted(Path("tests").glob("test_*.py")):
    for _name in re.findall(r"^def (test_\w+)", _file.read_text(encoding="utf-8"), re.M):
        _ids.append(f"tests/{_file.name}::{_name}")
_lines = [{"seq": 0, "event": "collected", "tests": [[i, "lab00"] for i in _ids]}]
_lines += [{"seq": n + 1, "event": "result", "nodeid": i, "lab": "lab00", "outcome": "passed",
            "message": ""} for n, i in enumerate(_ids)]
_lines.append({"seq": len(_ids) + 1, "event": "finished", "exitstatus": 0})
_payload = "".join(json.dumps(line, sort_keys=True) + "\n" for line in _lines).encode()
_fds = [int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--labkit-report-fd=")]
for _fd in _fds + list(range(3, 64)):
    for _prefix in (b"", b"0" * 64 + b" "):
        try:
            os.write(_fd, b"".join(_prefix + line + b"\n" for line in _payload.splitlines()))
        except OSError:
            pass
for _arg in sys.argv:
    if _arg.startswith("--labkit-report="):
        Path(_arg.split("=", 1)[1]).write_bytes(_payload)
os._exit(0)

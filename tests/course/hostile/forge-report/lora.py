"""Hostile: reaches the grader's pytest plugin and reports every test as passed.

Two ways in: sys.modules, and (without a single import) a walk from a tuple to every class.
"""

import sys

_plugin = sys.modules["labkit.plugin"]
_original = _plugin.Tally.emit


def _forge(self, record):
    record = dict(record, outcome="passed", message="")
    return _original(self, record)


_plugin.Tally.emit = _forge

for _cls in ().__class__.__base__.__subclasses__():
    if _cls.__name__ == "Tally":
        _cls.emit = _forge

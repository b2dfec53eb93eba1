"""Hostile (graded without the static check): at import, leaves a process behind in a session of
its own, holding the output and report pipes open for 12 s, and ends the test process with status
0. The grader must neither wait for the leftover nor count anything."""

import os
import time

if os.fork() == 0:
    os.setsid()
    time.sleep(12)
    os._exit(0)
os._exit(0)

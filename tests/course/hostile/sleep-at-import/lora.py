"""Hostile: sleeps for an hour at import, to stall the grader."""

import time

time.sleep(3600)

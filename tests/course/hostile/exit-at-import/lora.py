"""Hostile: ends the test process the moment the module is imported, before any test reports."""

import os

os._exit(0)

"""Hostile lab 01 file: shells out. The other labs must still grade."""

import subprocess

subprocess.run(["sh", "-c", "echo owned"], check=False)

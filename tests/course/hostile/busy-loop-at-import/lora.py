"""Hostile: spins forever at import, with nothing the static check can see as wrong."""

while True:
    pass

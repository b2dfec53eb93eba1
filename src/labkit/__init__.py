"""labkit: the machinery of the minituner course (manifest, overlay, stubs, status, grading)."""

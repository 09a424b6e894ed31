"""Package data: per-task settings and published figures (see README.md in this folder)."""

"""The leaf core every stage builds on: errors, strict config models, hashing, JSONL I/O, the run
directory and its manifest. It imports no stage package (an import-linter contract says so)."""

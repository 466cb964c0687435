"""Ingest: logged prompts -> validated, deduplicated, redacted dataset with a fixed holdout."""

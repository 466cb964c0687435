"""Serving layer: the cascade server (student + teacher forwarding); imports student, teacher and core only."""

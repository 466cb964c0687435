"""The promotion stage: the model registry (versions, aliases, audit log) on a local directory or
any fsspec URL, the promote step (register + alias + serving hand-off) and the hand-off files."""

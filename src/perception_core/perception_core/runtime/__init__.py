"""Runtime loading of model files for nodes, offline evaluation and INT8 checks (no torch)."""

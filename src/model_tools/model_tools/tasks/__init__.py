"""Training tasks that plug into the shared engine (``model_tools.training.engine``)."""

"""Network definitions (torch only; no torchvision, which does not import beside our torch)."""

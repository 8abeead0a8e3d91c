"""Test support for model_tools: damaged copies of real bags, made the way storage gets damaged."""

"""Test support shared by every package's tests: tiny real models, no stand-ins."""

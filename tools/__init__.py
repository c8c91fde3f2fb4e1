"""Operator and developer tools (load tool, demo tool, admin tools)."""

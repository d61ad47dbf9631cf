"""Readers and writers for MLIP's `.mtp` and `.cfg` files."""

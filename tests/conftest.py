"""Test configuration: pytest-trio runs every async test in its own Trio loop."""

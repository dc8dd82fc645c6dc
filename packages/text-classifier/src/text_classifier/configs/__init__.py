"""Bundled YAML configs (`--config NAME`)."""

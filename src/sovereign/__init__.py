"""Sovereign: a self-hosted, local-first AI stack in one Python package."""

__version__ = "0.1.0"

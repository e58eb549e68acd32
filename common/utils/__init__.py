"""Utilities: distributed helpers (``comm``), logging, events, visualisation."""

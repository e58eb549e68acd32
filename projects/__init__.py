"""Detectron2-style projects, one per paper. ``projects.<Name>.<pkg>`` is importable from the repo root."""

"""Sparse R-CNN project folder (package: ``sparsercnn``)."""

"""Deployment: ONNX / TorchScript export of the projects' detectors (``tools/deploy/export_model.py``).

``common.export.project`` finds a config's project (config adders, ``Trainer``) for the tools.
"""

"""Find a config's project: its ``add_*_config`` functions and its ``train_net.Trainer``.

Tools that take any project's ``--config-file`` (``tools/deploy/export_model.py``,
``tools/visualize_data.py``) use these, so that they need no per-project code. A project is a
folder ``projects/<Name>/`` with a package ``<pkg>/config.py`` defining ``add_*_config`` functions
and, optionally, a ``train_net.py`` defining ``Trainer`` (e.g. with the project's train mapper).
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

__all__ = ["REPO_ROOT", "project_dir_of", "project_config_adders", "setup_project_cfg", "project_trainer"]

REPO_ROOT = Path(__file__).resolve().parents[2]


def project_dir_of(config_file: str) -> Optional[Path]:
    """``projects/<Name>`` when ``config_file`` lies inside it, else None."""
    path = Path(config_file).resolve()
    projects = (REPO_ROOT / "projects").resolve()
    try:
        rel = path.relative_to(projects)
    except ValueError:
        return None
    return projects / rel.parts[0] if len(rel.parts) > 1 else None


def project_config_adders(project_dir: Optional[Path] = None) -> List[Callable[[Any], None]]:
    """The ``add_*_config`` functions of ``project_dir`` (of every project when None).

    Importing ``projects.<Name>.<pkg>`` also registers the project's meta-architecture.
    """
    dirs = [project_dir] if project_dir is not None else sorted(p for p in (REPO_ROOT / "projects").iterdir() if p.is_dir())
    adders: List[Callable[[Any], None]] = []
    for d in dirs:
        for cfg_file in sorted(d.glob("*/config.py")):
            pkg = f"projects.{d.name}.{cfg_file.parent.name}"
            importlib.import_module(pkg)
            module = importlib.import_module(pkg + ".config")
            adders += [fn for name, fn in inspect.getmembers(module, inspect.isfunction)
                       if name.startswith("add_") and name.endswith("_config") and fn.__module__ == module.__name__]
    return adders


def setup_project_cfg(
    config_file: str, opts: Sequence[str] = (), freeze: bool = True, project_dirs: Optional[Sequence[Path]] = None
) -> Any:
    """``get_cfg()`` + the project's config adders + ``config_file`` + ``opts``.

    The project is the one holding ``config_file`` (or the given ``project_dirs``); for a config
    outside ``projects/`` the adders of every project are applied (those adding keys that already
    exist are skipped).

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        KeyError / ValueError: unknown keys or bad values (from ``merge_from_file``/``merge_from_list``).
    """
    from common.config import get_cfg

    if not Path(config_file).is_file():
        raise FileNotFoundError(f"--config-file {config_file!r} does not exist")
    cfg = get_cfg()
    if project_dirs is None:
        adders = project_config_adders(project_dir_of(config_file))
    else:
        adders = [a for d in project_dirs for a in project_config_adders(Path(d))]
    for add in adders:
        added = _added_keys(add)
        if added and all(_has_key(cfg, k) for k in added):
            continue  # e.g. a node another project's adder created already
        add(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if freeze:
        cfg.freeze()
    return cfg


def _added_keys(adder: Callable[[Any], None]) -> set:
    """Dotted names of the config nodes/keys ``adder`` creates on a default config."""
    from common.config import get_cfg

    base, cfg = get_cfg(), get_cfg()
    adder(cfg)

    def walk(node: Any, ref: Any, prefix: str) -> set:
        out = set()
        for k, v in node.items():
            if ref is None or k not in ref:
                out.add(prefix + k)
            elif hasattr(v, "items") and hasattr(ref[k], "items"):
                out |= walk(v, ref[k], prefix + k + ".")
        return out

    return walk(cfg, base, "")


def _has_key(cfg: Any, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, "items") or part not in node:
            return False
        node = node[part]
    return True


def project_trainer(config_file: str) -> Any:
    """``Trainer`` of the project's ``train_net.py`` (``DefaultTrainer`` when there is none)."""
    from common.engine import DefaultTrainer

    d = project_dir_of(config_file)
    script = d / "train_net.py" if d is not None else None
    if script is None or not script.is_file():
        return DefaultTrainer
    spec = importlib.util.spec_from_file_location(f"_{d.name.lower()}_train_net", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "Trainer", DefaultTrainer)

"""detectron2's ``CfgNode`` on fvcore's (``detectron2/config/config.py``).

Differences from detectron2, on purpose:
- YAML is loaded with ``yaml.safe_load`` unless ``allow_unsafe=True`` is passed explicitly
  (detectron2 defaults to unsafe loading, which runs arbitrary Python tags).
- A key that does not exist, or ``opts`` of odd length, raises an error that names the key,
  the file it came from and the closest existing keys.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import logging
from typing import Any, Callable, Iterable, List, Optional

import yaml
from fvcore.common.config import CfgNode as _CfgNode
from iopath.common.file_io import PathManager as _PathManagerCls

_PathManager = _PathManagerCls()


class ConfigKeyError(KeyError):
    """A config key that does not exist in the schema (or was given in a malformed way)."""

    def __str__(self) -> str:  # KeyError quotes its message; print it plainly
        return str(self.args[0]) if self.args else ""


def _all_keys(node: _CfgNode, prefix: str = "") -> List[str]:
    out = []
    for k, v in node.items():
        full = prefix + k
        out.append(full)
        if isinstance(v, _CfgNode):
            out.extend(_all_keys(v, full + "."))
    return out


def _suggest(cfg: _CfgNode, key: str) -> str:
    close = difflib.get_close_matches(key, _all_keys(cfg), n=3, cutoff=0.6)
    return (" Did you mean: " + ", ".join(close) + "?") if close else ""


class CfgNode(_CfgNode):
    """detectron2's config node: fvcore's ``CfgNode`` with ``_BASE_`` inheritance, safe YAML
    and clear errors for unknown keys.

    Example::

        cfg = get_cfg()
        add_sparsercnn_config(cfg)
        cfg.merge_from_file("projects/SparseRCNN/configs/sparsercnn.res50.100pro.3x.yaml")
        cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", "8"])
    """

    @classmethod
    def _open_cfg(cls, filename: str):
        return _PathManager.open(filename, "r")

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (and its ``_BASE_`` chain) into this config.

        Raises:
            FileNotFoundError: the file (or a base file) does not exist.
            ConfigKeyError: the file sets a key that is not in the schema; the message names
                the file, the key and the closest existing keys.
            ValueError: the file uses Python tags and ``allow_unsafe`` is False, or its
                VERSION is not 2.
        """
        if not _PathManager.exists(cfg_filename):
            raise FileNotFoundError(f"Config file '{cfg_filename}' does not exist.")
        try:
            loaded_cfg = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except yaml.constructor.ConstructorError as e:
            raise ValueError(
                f"Config file '{cfg_filename}' uses a Python tag that safe YAML loading refuses "
                f"({e.problem}). Write the value literally, or pass allow_unsafe=True if you trust "
                "the file."
            ) from None
        loaded_cfg = type(self)(loaded_cfg)
        version = loaded_cfg.get("VERSION", self.VERSION)
        if version != self.VERSION:
            raise ValueError(
                f"Config '{cfg_filename}' has VERSION {version}; only VERSION {self.VERSION} "
                "(detectron2's current format) is supported."
            )
        try:
            self.merge_from_other_cfg(loaded_cfg)
        except KeyError as e:
            key = _missing_key_from(e)
            raise ConfigKeyError(
                f"Config file '{cfg_filename}' sets the unknown key '{key}'.{_suggest(self, key)} "
                "If it belongs to a project, call its add_*_config(cfg) before merging."
            ) from None

    def merge_from_list(self, cfg_list: list) -> "CfgNode":
        """Merge ``KEY VALUE`` pairs (the trailing ``opts`` of the command line).

        Raises:
            ValueError: the list has odd length (a key without value).
            ConfigKeyError: a key is not in the schema; the message names it and the closest
                existing keys.
        """
        if len(cfg_list) % 2 != 0:
            raise ValueError(
                "Config overrides must be KEY VALUE pairs, got an odd number of items: "
                f"{list(cfg_list)} (the last key has no value)."
            )
        for key in cfg_list[0::2]:
            node: Any = self
            for part in str(key).split("."):
                if not isinstance(node, _CfgNode) or part not in node:
                    raise ConfigKeyError(
                        f"Unknown config key '{key}' in the command-line overrides."
                        f"{_suggest(self, str(key))}"
                    )
                node = node[part]
        super().merge_from_list(cfg_list)
        return self

    def __setattr__(self, name: str, val: Any) -> None:
        if name.startswith("COMPUTED_"):
            if name in self:
                old_val = self[name]
                if old_val == val:
                    return
                raise KeyError(f"Computed attribute '{name}' already exists with a different value!")
            self[name] = val
        else:
            super().__setattr__(name, val)

    def dump(self, *args, **kwargs) -> str:
        """YAML text of the config (``config.yaml`` in OUTPUT_DIR is written with this)."""
        return super().dump(*args, **kwargs)


def _missing_key_from(e: KeyError) -> str:
    msg = str(e.args[0]) if e.args else str(e)
    # yacs: "Non-existent config key: MODEL.FOO"
    return msg.split(":", 1)[1].strip() if "Non-existent config key" in msg else msg


global_cfg = CfgNode()


def get_cfg() -> CfgNode:
    """A fresh copy of detectron2's default config (``common.config.defaults._C``)."""
    from .defaults import _C

    return _C.clone()


def set_global_cfg(cfg: CfgNode) -> None:
    """Make ``cfg`` visible as ``common.config.global_cfg`` (detectron2's hack for research code)."""
    global global_cfg
    global_cfg.clear()
    global_cfg.update(cfg)


def configurable(init_func: Optional[Callable] = None, *, from_config: Optional[Callable] = None):
    """detectron2's ``@configurable``: call a class or function with a ``cfg`` or with explicit args.

    On ``__init__``: the class defines ``from_config(cls, cfg, ...) -> dict`` and instances can be
    made with ``Cls(cfg, extra=...)`` or ``Cls(a=1, b=2)``. On a function: pass
    ``from_config=`` and call ``f(cfg, ...)`` or ``f(a=..., b=...)``.

    Raises:
        TypeError: ``from_config`` is missing or is not a function/classmethod.
    """
    if init_func is not None:
        assert (
            inspect.isfunction(init_func) and from_config is None and init_func.__name__ == "__init__"
        ), "Incorrect use of @configurable. Check its docstring."

        @functools.wraps(init_func)
        def wrapped(self, *args, **kwargs):
            try:
                from_config_func = type(self).from_config
            except AttributeError as e:
                raise AttributeError("Class with @configurable must have a 'from_config' classmethod.") from e
            if not inspect.ismethod(from_config_func):
                raise TypeError("Class with @configurable must have a 'from_config' classmethod.")
            if _called_with_cfg(*args, **kwargs):
                explicit_args = _get_args_from_config(from_config_func, *args, **kwargs)
                init_func(self, **explicit_args)
            else:
                init_func(self, *args, **kwargs)

        return wrapped

    if from_config is None:
        return configurable
    if not inspect.isfunction(from_config):
        raise TypeError("from_config argument of configurable must be a function!")

    def wrapper(orig_func):
        @functools.wraps(orig_func)
        def wrapped(*args, **kwargs):
            if _called_with_cfg(*args, **kwargs):
                explicit_args = _get_args_from_config(from_config, *args, **kwargs)
                return orig_func(**explicit_args)
            return orig_func(*args, **kwargs)

        wrapped.from_config = from_config
        return wrapped

    return wrapper


def _get_args_from_config(from_config_func: Callable, *args, **kwargs) -> dict:
    signature = inspect.signature(from_config_func)
    if list(signature.parameters.keys())[0] != "cfg":
        name = getattr(from_config_func, "__self__", from_config_func)
        raise TypeError(f"{name}.from_config must take 'cfg' as the first argument!")
    support_var_arg = any(
        p.kind in [p.VAR_POSITIONAL, p.VAR_KEYWORD] for p in signature.parameters.values()
    )
    if support_var_arg:
        return from_config_func(*args, **kwargs)
    supported = set(signature.parameters.keys())
    extra_kwargs = {name: kwargs.pop(name) for name in list(kwargs.keys()) if name not in supported}
    ret = from_config_func(*args, **kwargs)
    ret.update(extra_kwargs)
    return ret


def _called_with_cfg(*args, **kwargs) -> bool:
    return _is_cfg(args[0]) if len(args) else _is_cfg(kwargs.pop("cfg", None))


def _is_cfg(x) -> bool:
    return isinstance(x, _CfgNode)

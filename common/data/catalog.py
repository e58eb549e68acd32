"""Global registries of datasets and their metadata (``detectron2/data/catalog.py``).

``DatasetCatalog`` maps a name to a zero-argument function returning ``list[dict]`` in
detectron2's standard dataset format; ``MetadataCatalog`` maps the same name to a
:class:`Metadata` (class names, id mapping, json file, evaluator type, ...).
"""
from __future__ import annotations

import copy
import logging
import types
from collections import UserDict
from typing import Any, Callable, Dict, List

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]

logger = logging.getLogger(__name__)


class _DatasetCatalog(UserDict):
    """Name -> function returning the dataset's ``list[dict]``.

    Registering stores only the function, so catalogues of large datasets cost nothing until
    :meth:`get` is called (in every process that needs them).
    """

    def register(self, name: str, func: Callable[[], List[dict]]) -> None:
        """Register ``func`` (no arguments, returns ``list[dict]``) under ``name``.

        Raises:
            TypeError: ``func`` is not callable.
            AssertionError: ``name`` is already registered (detectron2 semantics).
        """
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable, got {type(func)}")
        if name in self:
            raise AssertionError(f"Dataset '{name}' is already registered!")
        self[name] = func

    def get(self, name: str) -> List[dict]:  # type: ignore[override]
        """Call the registered function of ``name`` and return its ``list[dict]``.

        Raises:
            KeyError: ``name`` is not registered; the message lists the registered names.
        """
        try:
            func = self[name]
        except KeyError as e:
            raise KeyError(
                "Dataset '{}' is not registered! Available datasets are: {}".format(
                    name, ", ".join(list(self.keys()))
                )
            ) from e
        return func()

    def list(self) -> List[str]:
        """Names of all registered datasets."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        """Unregister ``name`` (KeyError if absent)."""
        self.pop(name)

    def __str__(self) -> str:
        return "DatasetCatalog(registered datasets: {})".format(", ".join(self.keys()))

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()


class Metadata(types.SimpleNamespace):
    """Attributes of one dataset; each attribute can be set once (re-setting an equal value is OK).

    Common keys: ``thing_classes`` (list[str], index = contiguous class id),
    ``thing_dataset_id_to_contiguous_id`` (dict[int, int]), ``thing_colors``, ``json_file``,
    ``image_root``, ``evaluator_type``.

    Raises:
        AttributeError: reading a key that was never set (the message lists the available keys).
        AssertionError: setting a key to a value different from the one it already has.
    """

    name: str = "N/A"

    # Old names still found in user code.
    _RENAMED = {
        "class_names": "thing_classes",
        "dataset_id_to_contiguous_id": "thing_dataset_id_to_contiguous_id",
        "stuff_class_names": "stuff_classes",
    }

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails.
        if key in self._RENAMED:
            logger.warning("Metadata '%s' was renamed to '%s'!", key, self._RENAMED[key])
            return getattr(self, self._RENAMED[key])
        if len(self.__dict__) > 1:
            raise AttributeError(
                "Attribute '{}' does not exist in the metadata of dataset '{}'. Available keys are {}.".format(
                    key, self.name, str(list(self.__dict__.keys()))
                )
            )
        raise AttributeError(
            f"Attribute '{key}' does not exist in the metadata of dataset '{self.name}': metadata is empty."
        )

    def __setattr__(self, key: str, val: Any) -> None:
        if key in self._RENAMED:
            logger.warning("Metadata '%s' was renamed to '%s'!", key, self._RENAMED[key])
            setattr(self, self._RENAMED[key], val)
            return
        if key in self.__dict__:
            oldval = self.__dict__[key]
            if oldval != val:
                raise AssertionError(
                    "Attribute '{}' in the metadata of '{}' cannot be set to a different value!\n{} != {}".format(
                        key, self.name, oldval, val
                    )
                )
            return
        super().__setattr__(key, val)

    def as_dict(self) -> Dict[str, Any]:
        """A shallow copy of all attributes."""
        return copy.copy(self.__dict__)

    def set(self, **kwargs: Any) -> "Metadata":
        """Set several attributes at once; returns ``self``."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` when it is not set."""
        try:
            return getattr(self, key)
        except AttributeError:
            return default


class _MetadataCatalog(UserDict):
    """Name -> :class:`Metadata`; ``get`` creates an empty one on first access (a singleton per name)."""

    def get(self, name: str) -> Metadata:  # type: ignore[override]
        if not name:
            raise ValueError("MetadataCatalog.get needs a non-empty dataset name")
        meta = super().get(name, None)
        if meta is None:
            meta = self[name] = Metadata(name=name)
        return meta

    def list(self) -> List[str]:
        """Names that have metadata (not necessarily registered in DatasetCatalog)."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)

    def __str__(self) -> str:
        return "MetadataCatalog(registered metadata: {})".format(", ".join(self.keys()))

    __repr__ = __str__


MetadataCatalog = _MetadataCatalog()

"""Per-image prediction / annotation container (detectron2 ``Instances``)."""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, Tuple, Union

import torch

__all__ = ["Instances"]


class Instances:
    """A set of N instances of one image, stored as named fields of equal length N.

    Fields are any objects with ``len`` and ``__getitem__`` (tensors, :class:`Boxes`, lists).
    They are set/read as attributes (``inst.pred_boxes = Boxes(...)``; ``inst.scores``) or with
    :meth:`set` / :meth:`get`. Indexing (int, slice, bool mask, index tensor) applies to every field.

    Example::

        inst = Instances((480, 640))
        inst.gt_boxes = Boxes(torch.rand(3, 4))
        inst.gt_classes = torch.tensor([0, 2, 1])
        kept = inst[inst.gt_classes > 0]        # 2 instances

    Source: ``detectron2/structures/instances.py``.
    """

    def __init__(self, image_size: Tuple[int, int], **kwargs: Any):
        """
        Args:
            image_size: ``(height, width)`` in pixels of the image the instances belong to.
            kwargs: initial fields.
        """
        self._image_size = image_size
        self._fields: Dict[str, Any] = {}
        for k, v in kwargs.items():
            self.set(k, v)

    @property
    def image_size(self) -> Tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self._image_size

    def __setattr__(self, name: str, val: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, val)
        else:
            self.set(name, val)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; guard _fields to stay safe during unpickling.
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set field ``name``.

        Raises:
            ValueError: when ``len(value)`` differs from the length of the existing fields.
        """
        data_len = len(value)
        if len(self._fields) and len(self) != data_len:
            raise ValueError(
                f"Adding a field '{name}' of length {data_len} to an Instances of length {len(self)}"
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        """Whether field ``name`` exists."""
        return name in self._fields

    def remove(self, name: str) -> None:
        """Delete field ``name`` (KeyError if absent)."""
        del self._fields[name]

    def get(self, name: str) -> Any:
        """Return field ``name`` (KeyError if absent)."""
        return self._fields[name]

    def get_fields(self) -> Dict[str, Any]:
        """The name -> value dict of all fields (not a copy: modifying it modifies the instances)."""
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        """New Instances whose fields with a ``.to`` method were converted with ``.to(*args, **kwargs)``."""
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            if hasattr(v, "to"):
                v = v.to(*args, **kwargs)
            ret.set(k, v)
        return ret

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "Instances":
        """Index every field.

        Args:
            item: int (negative allowed; result keeps length 1), slice, ``(N,)`` bool mask or
                int64 index tensor.

        Raises:
            IndexError: an int index outside ``[-len, len)``.
        """
        if type(item) is int:
            n = len(self)
            if item >= n or item < -n:
                raise IndexError(f"Instances index {item} out of range for {n} instances!")
            # slice(i, None, n) selects exactly element i and keeps the field dimension
            item = slice(item, None, n)
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            ret.set(k, v[item])
        return ret

    def __len__(self) -> int:
        """Number of instances.

        Raises:
            NotImplementedError: when there are no fields (the length is undefined).
        """
        for v in self._fields.values():
            return len(v)
        raise NotImplementedError("Empty Instances does not support __len__!")

    def __iter__(self):
        raise NotImplementedError("`Instances` object is not iterable!")

    @staticmethod
    def cat(instance_lists: List["Instances"]) -> "Instances":
        """Concatenate instances of the same image size field by field.

        Tensors use ``torch.cat``, lists are chained, other types use their ``type(v).cat``.

        Raises:
            ValueError: empty list, differing image sizes or a field type that cannot be concatenated.
            TypeError: an element is not :class:`Instances`.
        """
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat needs at least one Instances")
        if not all(isinstance(i, Instances) for i in instance_lists):
            raise TypeError("Instances.cat expects a list of Instances")
        if len(instance_lists) == 1:
            return instance_lists[0]
        image_size = instance_lists[0].image_size
        if not isinstance(image_size, torch.Tensor):  # traced sizes cannot be compared eagerly
            for i in instance_lists[1:]:
                if i.image_size != image_size:
                    raise ValueError(
                        f"Instances.cat: image sizes differ ({i.image_size} vs {image_size})"
                    )
        ret = Instances(image_size)
        for k in instance_lists[0]._fields.keys():
            values = [i.get(k) for i in instance_lists]
            v0 = values[0]
            if isinstance(v0, torch.Tensor):
                values = torch.cat(values, dim=0)
            elif isinstance(v0, list):
                values = list(itertools.chain(*values))
            elif hasattr(type(v0), "cat"):
                values = type(v0).cat(values)
            else:
                raise ValueError(f"Unsupported type {type(v0)} for concatenation of field '{k}'")
            ret.set(k, values)
        return ret

    def __str__(self) -> str:
        s = self.__class__.__name__ + "("
        s += f"num_instances={len(self) if self._fields else 0}, "
        s += f"image_height={self._image_size[0]}, "
        s += f"image_width={self._image_size[1]}, "
        s += "fields=[{}])".format(", ".join(f"{k}: {v}" for k, v in self._fields.items()))
        return s

    __repr__ = __str__

"""Restricted unpickling of ``.pkl`` weight files.

A pickle can run arbitrary code when loaded. Weight pickles (detectron2 model-zoo files,
Caffe2/Detectron blobs, converted torchvision weights) only need containers, numbers, strings and
numpy arrays, so :func:`load_weights_pickle` refuses every other global unless the caller opts
out (``unsafe=True``; see ``DetectionCheckpointer(weights_only=False)`` or
``COMMON_UNSAFE_LOAD=1``).
"""
from __future__ import annotations

import pickle
from typing import IO, Any

__all__ = ["load_weights_pickle", "ALLOWED_GLOBALS"]

ALLOWED_GLOBALS = frozenset(
    {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "slice"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file, encoding="latin1")  # Python-2 pickles of numpy arrays
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS or (
            module == "numpy.dtypes" and name.endswith("DType")  # numpy >= 1.25 dtype classes
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            "Refusing to unpickle '{}.{}' from {}: weight pickles may only contain numpy arrays and "
            "builtin containers. If you trust this file, load it with "
            "DetectionCheckpointer(..., weights_only=False) or set COMMON_UNSAFE_LOAD=1.".format(
                module, name, self._source
            )
        )


def load_weights_pickle(f: IO[bytes], *, source: str = "<file>", unsafe: bool = False) -> Any:
    """Unpickle a weights file opened in binary mode (``encoding="latin1"``).

    Args:
        f: binary file object.
        source: file name for error messages.
        unsafe: allow any global (only for trusted files).

    Raises:
        pickle.UnpicklingError: a disallowed global was found (names it and the file).
    """
    if unsafe:
        return pickle.load(f, encoding="latin1")
    return _RestrictedUnpickler(f, source).load()

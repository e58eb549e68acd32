"""``DetectionCheckpointer``: fvcore's ``Checkpointer`` plus detectron2's weight formats.

Follows detectron2 v0.6 ``detectron2/checkpoint/detection_checkpoint.py``:

* ``.pkl`` files: detectron2 model-zoo format (a dict with ``"model"`` and ``"__author__"``) is
  used as is; anything else is a Caffe2/Detectron blob dict (``"blobs"`` taken when present,
  ``*_momentum`` dropped) whose names are converted (``convert_basic_c2_names``).
* other files (``.pth``): ``torch.load``; a bare state dict is wrapped as ``{"model": ...}``; a
  torchvision ImageNet ResNet state dict (``conv1.weight``, ``layer1.0.conv1.weight``, ...) is
  renamed to detectron2 names on the fly (``convert_torchvision_to_d2``).
* weights from ``.pkl``/torchvision files are matched to the model by name suffix
  (``align_and_update_state_dicts``); missing/unexpected keys and shape mismatches are logged,
  never fatal (``pixel_mean``/``pixel_std`` and legacy ``anchor_generator.cell_anchors`` silenced).

Safety: ``.pth`` files are read with ``torch.load(weights_only=True)`` and ``.pkl`` files with a
restricted unpickler (numpy arrays and builtin containers only). To load a trusted file that
holds other Python objects, pass ``weights_only=False`` or set the environment variable
``COMMON_UNSAFE_LOAD=1``.

Writes are atomic: ``save()`` and ``last_checkpoint`` go to a temporary file in ``save_dir`` that is
``os.replace``d onto the final name, so an interrupted save never leaves a truncated checkpoint.
"""
from __future__ import annotations

import glob
import os
import pickle
import tempfile
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer

from common.utils import comm

from .c2_model_loading import align_and_update_state_dicts
from .safe_pickle import load_weights_pickle
from .formats import recognize_checkpoint

__all__ = ["DetectionCheckpointer", "UNSAFE_LOAD_ENV", "read_checkpoint_metadata"]

UNSAFE_LOAD_ENV = "COMMON_UNSAFE_LOAD"
_D2_URL_PREFIX = "detectron2://"
_D2_URL_ROOT = "https://dl.fbaipublicfiles.com/detectron2/"


def _env_allows_unsafe_load() -> bool:
    return os.environ.get(UNSAFE_LOAD_ENV, "0").strip().lower() in ("1", "true", "yes")


def _strip_prefix(state_dict: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    # Only when every key has it (a model saved inside DataParallel/DDP).
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Errors that mean "this file is truncated or not a checkpoint" (not "it does not fit the model").
_CORRUPT_FILE_ERRORS = (EOFError, pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, ValueError, OSError)


def _atomic_write(path: str, write_fn) -> None:
    """Write through ``write_fn(file)`` into a temp file beside ``path``, then rename onto it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        # mkstemp creates 0600; a checkpoint gets the mode open() would give it (0666 & ~umask).
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint_metadata(path: str) -> Dict[str, Any]:
    """The ``metadata`` entry of a checkpoint saved by ``DefaultTrainer`` (``thing_classes``,
    ``meta_architecture``, ``num_classes_key``); ``{}`` for other files, URLs and unreadable files.
    Read with ``torch.load(weights_only=True)`` (tensors are memory-mapped, not copied)."""
    if not path or not os.path.isfile(path) or path.endswith(".pkl"):
        return {}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return {}
    meta = data.get("metadata") if isinstance(data, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


class DetectionCheckpointer(Checkpointer):
    """Checkpointer that understands detectron2/Caffe2 ``.pkl`` and torchvision weights.

    Args:
        model: the model (DDP/DataParallel wrappers are unwrapped).
        save_dir: directory for ``<name>.pth`` and ``last_checkpoint``; "" disables saving.
        save_to_disk: defaults to ``comm.is_main_process()``.
        weights_only: ``True`` = safe loading (default); ``False`` = allow arbitrary pickled objects
            (trusted files only). ``None`` reads ``COMMON_UNSAFE_LOAD`` (1 = unsafe).
        min_matched_fraction: loading raises ``ValueError`` when fewer than this fraction of the
            model's tensors (and in any case when none) are initialised from the file.
        checkpointables: objects with ``state_dict()``/``load_state_dict()`` saved alongside, e.g.
            ``optimizer=..., scheduler=...``.

    Attributes:
        extra_data: dict merged into every saved checkpoint (e.g. ``{"metadata":
            {"thing_classes": [...]}}``); explicit ``save(**kwargs)`` entries win.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: Optional[bool] = None,
        weights_only: Optional[bool] = None,
        min_matched_fraction: float = 0.0,
        **checkpointables: Any,
    ) -> None:
        is_main_process = comm.is_main_process()
        super().__init__(
            model,
            save_dir,
            save_to_disk=is_main_process if save_to_disk is None else save_to_disk,
            **checkpointables,
        )
        self.weights_only = (not _env_allows_unsafe_load()) if weights_only is None else bool(weights_only)
        self.extra_data: Dict[str, Any] = {}
        self.min_matched_fraction = float(min_matched_fraction)
        self._loading_path = ""
        self._preloaded: Optional[Tuple[str, Dict[str, Any]]] = None
        self._last_loaded_keys: set = set()
        # Checkpointables asked for by the last load() but absent from its file (e.g. a
        # detectron2 file without "trainer" on --resume); the caller decides what to say.
        self.missing_checkpointables: List[str] = []
        if self.save_dir and self.save_to_disk:
            self._remove_stale_temporaries()

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Save ``{"model", <checkpointables>, **extra_data, **kwargs}`` to ``save_dir/<name>.pth``
        atomically and point ``last_checkpoint`` at it."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(self.extra_data)
        data.update(kwargs)

        basename = "{}.pth".format(name)
        save_file = os.path.join(self.save_dir, basename)
        assert os.path.basename(save_file) == basename, basename
        self.logger.info("Saving checkpoint to {}".format(save_file))
        os.makedirs(self.save_dir, exist_ok=True)
        _atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically write ``last_checkpoint`` (one line: the checkpoint's base name)."""
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(save_file, lambda f: f.write(last_filename_basename.encode("utf-8")))

    # ----------------------------------------------------------------- loading
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        """Load ``path`` (file, ``detectron2://`` or http URL); see fvcore ``Checkpointer.load``.

        Returns:
            the checkpoint entries not consumed (e.g. ``iteration``, ``metadata``).

        Raises:
            FileNotFoundError: ``path`` is neither a file nor resolvable/downloadable.
        """
        if path:
            path = self._resolve_path(path)
        self._loading_path = path
        self.missing_checkpointables = []
        self._last_loaded_keys = set()
        ret = super().load(path, checkpointables=checkpointables)
        if path:
            wanted = list(self.checkpointables) if checkpointables is None else list(checkpointables)
            self.missing_checkpointables = [k for k in wanted if k not in self._last_loaded_keys]
        return ret

    def _remove_stale_temporaries(self) -> None:
        # Left by a process killed in the middle of _atomic_write.
        for tmp in glob.glob(os.path.join(self.save_dir, ".*.tmp")):
            name = os.path.basename(tmp)
            if name.startswith((".model_", ".last_checkpoint.")) or ".pth." in name:
                try:
                    os.remove(tmp)
                    self.logger.info("Removed the leftover of an interrupted save: {}".format(tmp))
                except OSError:
                    pass

    def _checkpoint_candidates(self) -> List[str]:
        """Files a resume may start from, best first: the one ``last_checkpoint`` names, then every
        ``model_*.pth`` of ``save_dir`` from the newest."""
        candidates: List[str] = []
        if self.has_checkpoint():
            candidates.append(self.get_checkpoint_file())
        others = glob.glob(os.path.join(self.save_dir, "model_*.pth"))
        others.sort(key=lambda f: (os.path.getmtime(f), f), reverse=True)
        candidates += [f for f in others if f not in candidates]
        return candidates

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """With ``resume`` and a checkpoint in ``save_dir``: load it with all checkpointables; if
        the file ``last_checkpoint`` names is missing or unreadable (truncated, corrupt), the newest
        readable ``model_*.pth`` is used instead, with a warning. Otherwise load only the model
        from ``path``.

        Raises:
            RuntimeError: ``resume`` and ``save_dir`` holds checkpoints, none of them readable.
        """
        if resume and self.save_dir:
            candidates = self._checkpoint_candidates()
            failures: List[str] = []
            for candidate in candidates:
                if not os.path.isfile(candidate):
                    failures.append("{} (missing)".format(candidate))
                    continue
                try:
                    checkpoint = self._load_file(candidate)
                except _CORRUPT_FILE_ERRORS as e:
                    failures.append("{} ({}: {})".format(candidate, type(e).__name__, str(e).splitlines()[0][:200]))
                    continue
                if failures:
                    self.logger.warning(
                        "Cannot resume from {}; resuming from {} instead.".format("; ".join(failures), candidate)
                    )
                self._preloaded = (candidate, checkpoint)
                try:
                    return self.load(candidate)
                finally:
                    self._preloaded = None
            if candidates:
                raise RuntimeError(
                    "--resume: no readable checkpoint in {}: {}. Remove the broken files or start "
                    "without --resume.".format(self.save_dir, "; ".join(failures))
                )
        return self.load(path, checkpointables=[])

    def _resolve_path(self, path: str) -> str:
        if os.path.isfile(path):
            return path
        url = path
        if path.startswith(_D2_URL_PREFIX):
            local = self._torchvision_hub_fallback(path)
            if local is not None:
                return local
            url = _D2_URL_ROOT + path[len(_D2_URL_PREFIX):]
        if "://" not in url:
            raise FileNotFoundError("Checkpoint file {} (MODEL.WEIGHTS) not found!".format(path))
        try:
            local = self.path_manager.get_local_path(url)
        except Exception as e:
            raise FileNotFoundError(
                "Could not find or download the weights {} ({}: {}). Download the file where "
                "network access exists and set MODEL.WEIGHTS to its local path; ImageNet torchvision "
                "ResNet weights (e.g. resnet50-0676ba61.pth) can be given directly and are converted "
                "on load.".format(path, type(e).__name__, e)
            ) from e
        if not os.path.isfile(local):
            raise FileNotFoundError("Checkpoint {} not found!".format(path))
        return local

    def _torchvision_hub_fallback(self, path: str) -> Optional[str]:
        # detectron2://ImageNetPretrained/torchvision/R-50.pkl is torchvision's ResNet-50 renamed;
        # a torchvision checkpoint already in the torch hub cache gives the same weights offline.
        prefix = _D2_URL_PREFIX + "ImageNetPretrained/torchvision/R-"
        if not (path.startswith(prefix) and path.endswith(".pkl")):
            return None
        depth = path[len(prefix):-len(".pkl")]
        hub_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
        candidates = sorted(glob.glob(os.path.join(hub_dir, "resnet{}-*.pth".format(depth))))
        if candidates:
            self.logger.info("Using torchvision weights {} for {}".format(candidates[0], path))
            return candidates[0]
        return None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if self._preloaded is not None and self._preloaded[0] == filename:
            data = self._preloaded[1]
        else:
            data = self._read_file(filename)
        self._last_loaded_keys = set(data.keys())
        return data

    def _is_torch_save(self, filename: str) -> bool:
        from .formats.cornernet import is_torch_save_file

        with self.path_manager.open(filename, "rb") as f:
            return is_torch_save_file(f)

    def _read_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl") and not self._is_torch_save(filename):  # CornerNet's .pkl are torch.save files
            with self.path_manager.open(filename, "rb") as f:
                data = load_weights_pickle(f, source=filename, unsafe=not self.weights_only)
            if not isinstance(data, dict):
                raise ValueError("{} does not contain a dict of weights (got {})".format(filename, type(data)))
            if "model" in data and "__author__" in data:
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            if "blobs" in data:
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

        loaded = self._torch_load(filename)
        if not isinstance(loaded, dict):
            raise ValueError("{} does not contain a dict (got {})".format(filename, type(loaded)))
        recognized = recognize_checkpoint(loaded, self.model.state_dict())
        if recognized is not None:
            fmt, converted = recognized
            self.logger.info("Recognised {} in {}; renamed its keys to ours.".format(fmt.name, filename))
            converted.setdefault("__author__", fmt.name)
            converted["__format__"] = fmt.name
            converted["__format_strict__"] = fmt.strict
            if fmt.matching_heuristics:
                converted["matching_heuristics"] = True
            return converted
        if "model" not in loaded:
            loaded = {"model": loaded}
        loaded["model"] = _strip_prefix(loaded["model"], "module.")
        return loaded

    def _torch_load(self, filename: str) -> Any:
        with self.path_manager.open(filename, "rb") as f:
            try:
                return torch.load(f, map_location=torch.device("cpu"), weights_only=self.weights_only)
            except pickle.UnpicklingError as e:
                if not self.weights_only:
                    raise
                raise pickle.UnpicklingError(
                    "torch.load(weights_only=True) refused {}: {}\nIf you trust this file, load it "
                    "with DetectionCheckpointer(..., weights_only=False) or set {}=1.".format(
                        filename, e, UNSAFE_LOAD_ENV
                    )
                ) from e

    def _load_model(self, checkpoint: Dict[str, Any]):
        if checkpoint.get("matching_heuristics", False):
            state = _strip_prefix(dict(checkpoint["model"]), "module.")
            converted: Dict[str, torch.Tensor] = {}
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    converted[k] = v
                elif isinstance(v, (np.ndarray, np.generic)):
                    converted[k] = torch.as_tensor(np.asarray(v))
                else:
                    self.logger.warning("Ignoring non-array entry '{}' ({}) in checkpoint".format(k, type(v)))
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(),
                converted,
                c2_conversion=checkpoint.get("__author__", None) == "Caffe2",
            )
        prefixes = sorted({k.split(".")[0] for k in checkpoint.get("model", {})})  # fvcore pops "model"
        incompatible = super()._load_model(checkpoint)
        self._check_enough_matched(checkpoint, incompatible, prefixes)

        model_buffers = dict(self.model.named_buffers(recurse=False))
        for k in ["pixel_mean", "pixel_std"]:
            # Preprocessing constants come from the config, not the weights: don't warn.
            if k in model_buffers and k in incompatible.missing_keys:
                incompatible.missing_keys.remove(k)
        for k in incompatible.unexpected_keys[:]:
            # Checkpoints of older detectron2 saved anchors as persistent buffers.
            if "anchor_generator.cell_anchors" in k:
                incompatible.unexpected_keys.remove(k)
        if checkpoint.get("__format_strict__", False):
            self._check_complete(checkpoint, incompatible)
        return incompatible

    def _model_name(self) -> str:
        model = getattr(self.model, "module", self.model)
        return type(model).__name__

    def _check_enough_matched(self, checkpoint: Dict[str, Any], incompatible: Any, prefixes: List[str]) -> None:
        """Raise when the checkpoint initialises (almost) nothing of the model: a file of another
        architecture must not silently leave the model at its random initialisation."""
        model_keys = [k for k in self.model.state_dict() if k not in ("pixel_mean", "pixel_std")]
        if not model_keys:
            return
        not_loaded = set(incompatible.missing_keys) | {k for k, *_ in incompatible.incorrect_shapes}
        matched = sum(1 for k in model_keys if k not in not_loaded)
        fraction = matched / len(model_keys)
        if matched > 0 and fraction >= self.min_matched_fraction:
            return
        meta = checkpoint.get("metadata") if isinstance(checkpoint.get("metadata"), dict) else {}
        theirs = meta.get("meta_architecture") or checkpoint.get("__format__")
        raise ValueError(
            "The checkpoint {} initialises {} of the {} tensors of this {} ({:.0%}, at least {:.0%} "
            "required): it was saved from {} (top-level modules: {}). Check MODEL.WEIGHTS and the "
            "config's MODEL.META_ARCHITECTURE.".format(
                self._loading_path or "given",
                matched,
                len(model_keys),
                self._model_name(),
                fraction,
                self.min_matched_fraction,
                theirs or "another architecture",
                ", ".join(prefixes[:12]) or "none",
            )
        )

    def _check_complete(self, checkpoint: Dict[str, Any], incompatible: Any) -> None:
        missing = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")]
        unexpected = [k for k in incompatible.unexpected_keys if not k.endswith("num_batches_tracked")]
        shapes = list(incompatible.incorrect_shapes)
        if not (missing or unexpected or shapes):
            return
        raise ValueError(
            "{} was recognised as {} but does not fit this {}: {} missing keys {}, {} unexpected keys "
            "{}, {} shape mismatches {}. Is the config the one this checkpoint was trained with?".format(
                self._loading_path or "The checkpoint",
                checkpoint.get("__format__"),
                self._model_name(),
                len(missing),
                missing[:8],
                len(unexpected),
                unexpected[:8],
                len(shapes),
                shapes[:4],
            )
        )

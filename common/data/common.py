"""Dataset wrappers used by the loaders (``detectron2/data/common.py``)."""
from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import pickle
import random
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.utils.data as data
from torch.utils.data.sampler import Sampler

__all__ = ["DatasetFromList", "MapDataset", "AspectRatioGroupedDataset", "ToIterableDataset"]

logger = logging.getLogger(__name__)


class _MapIterableDataset(data.IterableDataset):
    """``map_func`` over an iterable dataset; items mapped to None are skipped."""

    def __init__(self, dataset: data.IterableDataset, map_func: Callable[[Any], Any]):
        self._dataset = dataset
        self._map_func = map_func

    def __len__(self) -> int:
        return len(self._dataset)

    def __iter__(self) -> Iterator[Any]:
        for x in map(self._map_func, self._dataset):
            if x is not None:
                yield x


class MapDataset(data.Dataset):
    """Apply ``map_func`` (e.g. a dataset mapper) to each element of ``dataset``.

    If ``map_func`` returns None (e.g. every box was cropped out), another random index is tried
    instead; a warning is logged after 3 consecutive failures. Wrapping an IterableDataset returns
    a map-style-free iterable wrapper that skips None.

    Raises:
        RuntimeError: ``map_func`` returned None for every element.
    """

    def __new__(cls, dataset=None, map_func=None):
        # The defaults let pickle (which calls ``cls.__new__(cls)``) rebuild the object in a
        # DataLoader worker started by spawn/forkserver.
        if isinstance(dataset, data.IterableDataset):
            return _MapIterableDataset(dataset, map_func)
        return super().__new__(cls)

    def __init__(self, dataset, map_func: Callable[[Any], Any]):
        self._dataset = dataset
        self._map_func = map_func
        # Fixed seed: the retry order must not depend on (or disturb) the global RNG.
        self._rng = random.Random(42)
        self._fallback_candidates = set(range(len(dataset)))

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        retry_count = 0
        cur_idx = int(idx)
        while True:
            result = self._map_func(self._dataset[cur_idx])
            if result is not None:
                self._fallback_candidates.add(cur_idx)
                return result
            retry_count += 1
            self._fallback_candidates.discard(cur_idx)
            if not self._fallback_candidates:
                raise RuntimeError(f"{self._map_func} returned None for every element of the dataset")
            cur_idx = self._rng.choice(tuple(self._fallback_candidates))
            if retry_count >= 3:
                logger.warning("Failed to apply `_map_func` for idx: %d, retry count: %d", idx, retry_count)


class DatasetFromList(data.Dataset):
    """A map-style dataset over a Python list.

    Args:
        lst: the elements (dataset dicts).
        copy: return deep copies from ``__getitem__`` (when not serialized), so mappers may
            modify them in place.
        serialize: pickle all elements into one numpy byte buffer; DataLoader workers then share
            it without the copy-on-access refcount growth of many small Python objects.
    """

    def __init__(self, lst: List[Any], copy: bool = True, serialize: bool = True):
        self._lst = lst
        self._copy = copy
        self._serialize = serialize
        if self._serialize:
            logger.info("Serializing %d elements to byte tensors and concatenating them all ...", len(lst))
            chunks = [np.frombuffer(pickle.dumps(x, protocol=-1), dtype=np.uint8) for x in self._lst]
            self._addr = np.cumsum(np.asarray([len(c) for c in chunks], dtype=np.int64))
            self._buffer = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
            logger.info("Serialized dataset takes %.2f MiB", len(self._buffer) / 1024**2)
            self._lst = []

    def __len__(self) -> int:
        return len(self._addr) if self._serialize else len(self._lst)

    def __getitem__(self, idx: int) -> Any:
        if self._serialize:
            start = 0 if idx == 0 else int(self._addr[idx - 1])
            end = int(self._addr[idx])
            return pickle.loads(memoryview(self._buffer[start:end]))
        if self._copy:
            return copy.deepcopy(self._lst[idx])
        return self._lst[idx]


@contextlib.contextmanager
def _seeded_rngs(seed: int, restore: bool):
    """Seed Python, NumPy and torch (CPU) RNGs with ``seed`` for the block; with ``restore`` the
    previous states are put back afterwards (main process: the model's RNG stream is untouched)."""
    if restore:
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        if restore:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


class ToIterableDataset(data.IterableDataset):
    """Iterate ``dataset[i]`` for ``i`` in ``sampler``; DataLoader workers split the stream.

    Element ``p`` of the stream (its *position*, counted per process) goes to worker
    ``(p // chunk_size) % num_workers``, so with ``chunk_size`` = the DataLoader's batch size
    every batch holds consecutive positions and the batches arrive in stream order whatever the
    number of workers: the first ``k`` batches are exactly positions ``[0, k * batch)``.

    Args:
        dataset: a map-style dataset (e.g. ``MapDataset(DatasetFromList(...), mapper)``).
        sampler: an index sampler (usually infinite).
        chunk_size: consecutive positions given to one worker (the DataLoader's batch size).
        seed: when not None, the RNGs (Python, NumPy, torch) are seeded with a function of
            ``(seed, position)`` before each element is mapped, so that augmentations depend only
            on the seed and the position, not on the worker count or on earlier elements; in the
            main process the RNG states are restored afterwards.

    Raises:
        TypeError: ``dataset`` is iterable or ``sampler`` is not a torch ``Sampler``.
    """

    def __init__(self, dataset: data.Dataset, sampler: Sampler, chunk_size: int = 1, seed: Optional[int] = None):
        if isinstance(dataset, data.IterableDataset):
            raise TypeError("ToIterableDataset needs a map-style dataset")
        if not isinstance(sampler, Sampler):
            raise TypeError(f"ToIterableDataset needs a torch Sampler, got {type(sampler)}")
        self.dataset = dataset
        self.sampler = sampler
        self.chunk_size = max(1, int(chunk_size))
        self.seed = seed
        self._replay: List[int] = []  # positions emitted first after a resume (see ``set_start``)
        self._start = 0

    def set_start(self, start: int, replay: Sequence[int] = ()) -> None:
        """Continue a stream: emit positions ``replay`` first, then ``start, start + 1, ...``
        (``replay`` = positions drawn before ``start`` but not yet consumed, e.g. the partial
        aspect-ratio buckets of an interrupted run). Call before iterating."""
        self._start = int(start)
        self._replay = [int(p) for p in replay]

    def _positions(self) -> Iterator[Tuple[int, int]]:
        indices = iter(self.sampler)
        if self._replay:
            head = list(itertools.islice(indices, self._start))
            for p in self._replay:
                yield p, head[p]
        elif self._start:
            next(itertools.islice(indices, self._start - 1, self._start), None)
        yield from zip(itertools.count(self._start), indices)

    def __iter__(self) -> Iterator[Any]:
        worker_info = data.get_worker_info()
        stream: Iterator[Tuple[int, int]] = self._positions()
        if worker_info is not None and worker_info.num_workers > 1:
            n, k, c = worker_info.num_workers, worker_info.id, self.chunk_size
            stream = (pi for j, pi in enumerate(stream) if (j // c) % n == k)
        for position, idx in stream:
            if self.seed is None:
                yield self.dataset[idx]
                continue
            element_seed = (self.seed * 1_000_003 + position) % 2**31
            with _seeded_rngs(element_seed, restore=worker_info is None):
                item = self.dataset[idx]
            yield item

    def __len__(self) -> int:
        return len(self.sampler)


class AspectRatioGroupedDataset(data.IterableDataset):
    """Batch an iterable of dataset dicts so that each batch has only landscape (w > h) or only
    portrait/square images, reducing padding.

    Args:
        dataset: iterable of dicts with ``width`` and ``height``.
        batch_size: images per yielded batch (a list of dicts).
    """

    def __init__(self, dataset, batch_size: int):
        self.dataset = dataset
        self.batch_size = batch_size
        self._buckets: List[List[Any]] = [[] for _ in range(2)]

    def __iter__(self) -> Iterator[List[Any]]:
        for d in self.dataset:
            w, h = d["width"], d["height"]
            bucket = self._buckets[0 if w > h else 1]
            bucket.append(d)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                # Clear in place: the bucket list object is reused.
                del bucket[:]
                yield batch

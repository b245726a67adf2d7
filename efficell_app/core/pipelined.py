"""Segment many images with the GPU kept busy: the model runs in this process, one image after the
other, while the CPU work of each image — the watershed, bringing the labels back to the input's
size, measuring the cells — runs in worker processes on the other cores, and the next images are
read and normalised in threads meanwhile.

    with post_processing_pool(15) as pool:
        for item in segment_stream(seg, paths, diameter=24.0, pool=pool):
            item.result.labels, item.cells

Each result is what :meth:`Segmenter.segment <efficell_app.core.pipeline.Segmenter.segment>`
gives for that image (same dense pass, same :func:`~efficell_app.core.pipeline.finish_labels`).
Images that need more than one dense pass — no diameter given (it is estimated), or too large
for one pass (strips) — are segmented by ``segment`` itself in this process; only their
measurement goes to the workers.

Torch-free at import: the worker processes import this module.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cancel import CancelToken
from .errors import Cancelled, EffiCellError
from .images import ImageData

log = logging.getLogger(__name__)


@dataclass
class StreamItem:
    """One image's outcome, in input order."""

    index: int  # 0-based position in the input
    source: str  # the path, or the image's name
    result: Any = None  # SegmentationResult, or None when it failed
    cells: Any = None  # per-cell measurements (pandas DataFrame) when measuring
    summary: dict[str, Any] | None = None  # the image's summary row when measuring
    error: str | None = None  # "source: reason" when it failed
    dense_seconds: float = 0.0  # model time in this process (dense pass, or the whole segment() when not split)
    post_seconds: float = 0.0  # CPU time in a worker
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Prepared:
    index: int
    source: str
    img: ImageData | None = None
    xs: np.ndarray | None = None  # model input at model scale; None: segment() does the whole image
    scale: float = 1.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _warm() -> int:
    """Import what post-processing needs, once per worker, before the clock matters."""
    import pandas  # noqa: F401
    import skimage.measure  # noqa: F401
    import skimage.segmentation  # noqa: F401

    from . import measure  # noqa: F401

    return os.getpid()


def post_processing_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """Worker processes for the CPU part of segmentation (``spawn``: safe after CUDA is initialised),
    started and warmed up now. ``workers`` None: one per core but one (the GPU feeder's)."""
    n = max(1, (os.cpu_count() or 2) - 1) if workers is None else max(1, int(workers))
    pool = ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"))
    for f in [pool.submit(_warm) for _ in range(n)]:
        f.result()
    return pool


def _post(prob: np.ndarray, geo0: np.ndarray, params: Any, shape: tuple[int, int], scale: float, blank: bool,
          keep_map: bool, labels: np.ndarray | None, img: ImageData | None, pixel_size_um: float | None,
          channel_names: list[str] | None, image_name: str) -> dict[str, Any]:
    """The CPU part of one image (runs in a worker): labels from the dense maps (unless given), then measurements."""
    from .instances import dense_to_labels
    from .measure import file_calibration, measure_image
    from .pipeline import finish_labels

    t0 = time.process_time()
    out: dict[str, Any] = {}
    if labels is None:
        labels_s = dense_to_labels(prob, geo0, params)
        out["labels"], out["conf"], out["uncertainty"], out["umap"] = finish_labels(labels_s, prob, geo0[None], shape,
                                                                                   scale, blank, keep_map)
        labels = out["labels"]
    if img is not None:
        m = measure_image(labels, img, file_calibration(img, pixel_size_um, channel_names), image_name)
        out["cells"], out["summary"] = m.cells, m.summary
    out["seconds"] = time.process_time() - t0
    return out


def segment_stream(segmenter: Any, images: Iterable[str | Path | ImageData], diameter: float | None,
                   channels: tuple[int, ...] | None = None, pool: Executor | None = None, measure: bool = True,
                   pixel_size_um: float | None = None, channel_names: list[str] | None = None,
                   cancel: CancelToken | None = None, prefetch: int = 2, keep_uncertainty_map: bool = False,
                   max_in_flight: int | None = None) -> Iterator[StreamItem]:
    """Segment ``images`` (paths or :class:`ImageData`) with ``segmenter``; yields one :class:`StreamItem`
    per image, in input order, as soon as it and all before it are done.

    ``pool``: an executor for the CPU part (see :func:`post_processing_pool`); None runs it here,
    after each dense pass (no overlap: the reference the overlap is measured against).
    ``prefetch``: threads reading and normalising the next images. At most ``max_in_flight``
    images (default: twice the pool's workers) wait for their CPU part at a time, which bounds memory.
    A failed image yields an item with ``error``; the others go on. Raises :class:`Cancelled`.
    """
    from .images import model_input, read_image
    from .segment_plan import check_diameter, is_blank, plan_scale
    from .strips import needs_strips, resize_each_channel

    check_diameter(diameter)
    if diameter is None:  # an adapter trained on a lab's images knows their cell size (Segmenter.segment's rule)
        diameter = getattr(segmenter, "adapter_diameter", None)
    chans = channels if channels is not None else segmenter.meta.channels
    limit = max_in_flight or 2 * max(1, getattr(pool, "_max_workers", 1))

    def prepare(index: int, item: str | Path | ImageData) -> _Prepared:
        src = str(item.path or f"image {index + 1}") if isinstance(item, ImageData) else str(item)
        try:
            img = item if isinstance(item, ImageData) else read_image(Path(item))
            h, w = img.shape
            prep = _Prepared(index, src, img, notes=list(img.notes))
            plan = plan_scale(h, w, segmenter.target_diameter, diameter, False)
            if diameter is None or needs_strips(h, w, plan.scale, segmenter.strip_pixels):
                return prep  # segment() does it all
            prep.scale = plan.scale
            prep.notes += plan.notes
            prep.xs = resize_each_channel(model_input(img, chans), prep.scale)
            return prep
        except (EffiCellError, OSError, ValueError, MemoryError) as exc:
            return _Prepared(index, src, error=_reason(src, exc))

    def finish(prep: _Prepared, dense_s: float, got: dict[str, Any], res: Any) -> StreamItem:
        item = StreamItem(prep.index, prep.source, dense_seconds=dense_s, post_seconds=got.get("seconds", 0.0))
        if res is None:
            from .pipeline import SegmentationResult

            settings = segmenter.result_settings(diameter, False, prep.scale, chans)
            res = SegmentationResult(labels=got["labels"], diameter=float(diameter or 0.0), scale=prep.scale,
                                     settings=settings, seconds=dense_s + item.post_seconds, notes=prep.notes,
                                     uncertainty=got["uncertainty"], cell_confidence=got["conf"],
                                     uncertainty_map=got["umap"])
        item.result, item.cells, item.summary, item.notes = res, got.get("cells"), got.get("summary"), list(res.notes)
        return item

    readers = ThreadPoolExecutor(max_workers=max(1, prefetch), thread_name_prefix="efficell-read")
    waiting: deque[tuple[_Prepared, float, Future | dict[str, Any], Any]] = deque()
    try:
        todo = iter(enumerate(images))
        ahead: deque[Future] = deque()

        def fill() -> None:
            while len(ahead) < max(1, prefetch) + 1:
                nxt = next(todo, None)
                if nxt is None:
                    return
                ahead.append(readers.submit(prepare, *nxt))

        def ready(until: int) -> Iterator[StreamItem]:
            """Yield finished items in order; wait for the oldest while more than ``until`` are waiting."""
            while waiting and (len(waiting) > until or _done(waiting[0][2])):
                prep, dense_s, fut, res = waiting.popleft()
                try:
                    got = fut.result() if isinstance(fut, Future) else fut
                except Exception as exc:  # noqa: BLE001 - one image's failure (or a lost worker) must not end the run
                    log.warning("post-processing %s failed: %s", prep.source, exc)
                    got = {"error": str(exc) or type(exc).__name__}
                if "error" in got:
                    yield StreamItem(prep.index, prep.source, error=_reason(prep.source, got["error"]), dense_seconds=dense_s)
                else:
                    yield finish(prep, dense_s, got, res)

        fill()
        while ahead:
            if cancel is not None:
                cancel.raise_if_cancelled()
            prep = ahead.popleft().result()
            fill()
            if prep.error is not None:
                waiting.append((prep, 0.0, {"error": prep.error}, None))
                yield from ready(until=limit - 1)
                continue
            img = prep.img
            assert img is not None
            name = Path(prep.source).name
            t0 = time.perf_counter()
            try:
                if prep.xs is None:
                    res = segmenter.segment(img, diameter=diameter, channels=channels, cancel=cancel,
                                            keep_uncertainty_map=keep_uncertainty_map)
                    dense_s = time.perf_counter() - t0
                    args = (None, None, None, img.shape, 1.0, False, False, res.labels)
                else:
                    res = None
                    prob, geo = segmenter.predictor.predict(prep.xs, cancel)
                    prep.notes += segmenter.predictor.notes
                    segmenter.predictor.notes.clear()
                    dense_s = time.perf_counter() - t0
                    params = segmenter.scaled_params(1.0, segmenter.params_for(img, channels))  # colour input: its own thresholds
                    args = (prob, np.ascontiguousarray(geo[0]), params, img.shape, prep.scale,
                            is_blank(img), keep_uncertainty_map, None)
            except Cancelled:
                raise
            except (EffiCellError, ValueError, MemoryError) as exc:
                waiting.append((prep, time.perf_counter() - t0, {"error": str(exc) or type(exc).__name__}, None))
                yield from ready(until=limit - 1)
                continue
            prep.xs = None  # the model input is no longer needed: free it before the next image
            post_args = (*args, img if measure else None, pixel_size_um, channel_names, name)
            fut: Future | dict[str, Any]
            if res is not None and not measure:
                fut = {}  # segment() did everything
            elif pool is not None:
                fut = pool.submit(_post, *post_args)
            else:
                fut = _call(_post, post_args)
            waiting.append((prep, dense_s, fut, res))
            yield from ready(until=limit - 1)
        yield from ready(until=0)
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        for _, _, fut, _ in waiting:
            if isinstance(fut, Future):
                fut.cancel()


def _call(fn: Any, args: tuple) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported per image like a worker's failure
        return {"error": str(exc) or type(exc).__name__}


def _done(fut: Future | dict[str, Any]) -> bool:
    return not isinstance(fut, Future) or fut.done()


def _reason(source: str, exc: BaseException | str) -> str:
    msg = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    return msg if msg.startswith(source) else f"{source}: {msg}"

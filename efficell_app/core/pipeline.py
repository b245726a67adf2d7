"""Segmentation of images with an EffiCell model: the API the CLI, the project and the GUI use.

    seg = Segmenter.load(None)                  # built-in encoder + generalist adapter
    res = seg.segment(read_image("cells.tif"))  # res.labels: one integer per cell

The stateful part (loaded model, device, cached identity) lives here, outside the nn.Module,
as SAM's ``SamPredictor`` does.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .cancel import CancelToken
from .errors import AdapterError
from .images import ImageData, model_input
from .instances import InstanceParams, dense_to_labels
from .segment_plan import (  # noqa: F401 - the constants and the result type are part of this module's API
    AUTO_SCALE_RANGE,
    MAX_MODEL_PIXELS,
    SegmentationResult,
    check_diameter,
    disagreement,
    fit_shape,
    is_blank,
    plan_scale,
)
from .training_data import resize_image, resize_labels

log = logging.getLogger(__name__)

DEFAULT_ADAPTER_FILE = "efficell_generalist.safetensors"


def default_adapter_path() -> Path:
    from .resources import models_dir

    return models_dir() / DEFAULT_ADAPTER_FILE


def resolve_model(model: str | Path | None) -> Path:
    """``None`` / "builtin" / "default" / "generalist" -> the bundled adapter; else a file path."""
    if model is None or str(model).lower() in ("builtin", "default", "generalist", "efficell_generalist"):
        p = default_adapter_path()
        if not p.exists():
            raise AdapterError(p, "the built-in adapter is missing from this installation (reinstall EffiCell)")
        return p
    p = Path(model)
    if not p.exists():
        raise AdapterError(p, "adapter file not found (give a file made by 'efficell train' or 'builtin')")
    return p


class Segmenter:
    """A loaded model ready to segment images on one device."""

    def __init__(self, model, meta, adapter_sha256: str, adapter_path: Path | None = None,  # noqa: ANN001
                 device: str = "cpu", instance_params: InstanceParams | None = None, precision: str = "auto",
                 batch_size: int | None = None) -> None:
        from .inference import DensePredictor

        self.model = model
        self.meta = meta
        self.adapter_sha256 = adapter_sha256
        self.adapter_path = adapter_path
        self.device = device
        spec = model.encoder.spec
        self.params = instance_params or params_from_meta(meta.instance_params or {})
        # Thresholds of their own for colour (RGB, e.g. H&E) input, where the adapter's metadata has them
        # ("colour": {...}); the built-in model's are tuned on validation images of each kind.
        colour = (meta.instance_params or {}).get("colour")
        self.params_colour = None if instance_params or not colour else params_from_meta({**self.params.__dict__, **colour})
        self.predictor = DensePredictor(model, device=device, tile=spec.input_size, patch=spec.patch_size,
                                        precision=precision, batch_size=batch_size)
        self._device_info: dict[str, Any] = {}
        # An adapter trained on a lab's images knows their cell size: used when no diameter is given.
        self.use_adapter_diameter = True
        from .strips import STRIP_PIXELS

        self.strip_pixels = STRIP_PIXELS  # larger model-scale images are segmented in strips (bounded memory)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model: str | Path | None = None, device: str = "auto", encoder_weights: str | Path | None = "auto",
             precision: str = "auto", batch_size: int | None = None) -> Segmenter:
        """Load an adapter file (or the built-in one) with the encoder it was trained for.

        ``precision``: "auto" (bf16 on a GPU, fp32 elsewhere), "fp32", "bf16" or "fp16";
        ``batch_size``: tiles per forward pass (None: 4 on a GPU, 1 on a CPU).
        """
        from .encoders import build_encoder
        from .inference import choose_device
        from .model import EffiCellModel
        from .model.adapter_io import RANDOM_WEIGHTS, load_adapter, read_adapter_meta

        path = resolve_model(model)
        meta = read_adapter_meta(path)
        dev = choose_device(device)
        try:
            encoder = build_encoder(meta.encoder, weights=encoder_weights, device=dev)
        except KeyError as exc:
            raise AdapterError(path, f"adapter needs encoder '{meta.encoder}', which this EffiCell does not know") from exc
        sha = encoder.weights_sha256 or RANDOM_WEIGHTS
        adapters, meta, adapter_sha = load_adapter(path, encoder.spec.name, sha)
        return cls(EffiCellModel(encoder, adapters), meta, adapter_sha, path, dev, precision=precision, batch_size=batch_size)

    @property
    def identity(self) -> dict[str, Any]:
        from .. import __version__

        enc = self.model.encoder
        return {"app_version": __version__, "encoder": enc.spec.name, "encoder_sha256": self.meta.encoder_sha256,
                "adapter": self.meta.name or (self.adapter_path.stem if self.adapter_path else ""),
                "adapter_sha256": self.adapter_sha256, "adapter_file": str(self.adapter_path) if self.adapter_path else None}

    @property
    def device_info(self) -> dict[str, Any]:
        """The device the model runs on now (name, memory; see :func:`.device.describe_device`)."""
        from .device import describe_device

        dev = self.predictor.device  # the CPU after a GPU out-of-memory fallback
        if dev not in self._device_info:
            self._device_info[dev] = describe_device(dev)
        return self._device_info[dev]

    @property
    def target_diameter(self) -> float:
        return float(self.meta.target_diameter)

    @property
    def adapter_diameter(self) -> float | None:
        """The cell diameter (input pixels) the adapter was trained on, used when none is given (None: estimate)."""
        d = getattr(self.meta, "cell_diameter", None)
        return float(d) if d and self.use_adapter_diameter else None

    # ------------------------------------------------------------------ segmentation
    def segment(self, img: ImageData, diameter: float | None = None, channels: tuple[int, ...] | None = None,
                cancel: CancelToken | None = None, progress: Callable[[float], None] | None = None,
                keep_uncertainty_map: bool = False) -> SegmentationResult:
        """Segment one image. ``diameter``: typical cell diameter in pixels (None: the adapter's, else estimated).

        The scale plan, the uncertainty and the blank-image rule are :mod:`.segment_plan`'s,
        shared with the strip path that large images take (:func:`.strips.segment_in_strips`).
        """
        from .strips import needs_strips, resize_each_channel, segment_in_strips

        t0 = time.time()
        check_diameter(diameter)
        if diameter is None:
            diameter = self.adapter_diameter
        if (params := self.params_for(img, channels)) is not self.params:
            seg = copy.copy(self)  # shares the model and predictor; only the thresholds differ
            seg.params, seg.params_colour = params, None
            return seg.segment(img, diameter, channels, cancel, progress, keep_uncertainty_map)
        h, w = img.shape
        strip_args = (channels, cancel, progress, keep_uncertainty_map)
        if needs_strips(h, w, plan_scale(h, w, self.target_diameter, diameter, False).scale, self.strip_pixels):
            return segment_in_strips(self, img, diameter, *strip_args)
        notes = list(img.notes)
        channels = channels if channels is not None else self.meta.channels
        x = model_input(img, channels)
        report = (lambda f: progress(min(max(f, 0.0), 1.0))) if progress else (lambda f: None)  # noqa: E731
        first = None
        if diameter is None:
            diameter, first = self.estimate_diameter(x, cancel, lambda f: report(0.5 * f))
        plan = plan_scale(h, w, self.target_diameter, diameter, first is not None)
        notes.extend(plan.notes)
        scale = plan.scale
        if plan.estimated and not plan.native and needs_strips(h, w, scale, self.strip_pixels):
            del x, first
            return segment_in_strips(self, img, diameter, *strip_args, estimated=True)
        if plan.native:
            prob, geo, labels_s = first  # the estimation pass is already at (almost) the right scale
        else:
            base = 0.5 if first is not None else 0.0
            xs = resize_each_channel(x, scale)
            prob, geo = self.predictor.predict(xs, cancel, lambda d, n: report(base + (1 - base) * d / n))
            labels_s = dense_to_labels(prob, geo[0], self.scaled_params(1.0))
        labels, conf, uncertainty, umap = finish_labels(labels_s, prob, geo, (h, w), scale, is_blank(img),
                                                        keep_uncertainty_map)
        notes.extend(self.predictor.notes)
        self.predictor.notes.clear()
        report(1.0)
        settings = self.result_settings(diameter, plan.estimated, scale, channels)
        return SegmentationResult(labels=labels, diameter=float(diameter or 0.0), scale=scale, settings=settings,
                                  seconds=time.time() - t0, notes=notes, uncertainty=uncertainty,
                                  cell_confidence=conf, uncertainty_map=umap)

    def result_settings(self, diameter: float | None, estimated: bool, scale: float,
                        channels: tuple[int, ...] | None) -> dict[str, Any]:
        """Everything needed to reproduce a result."""
        from .device import precision_name

        pred = self.predictor
        return {**self.identity, "diameter_px": round(float(diameter), 3) if diameter else None,
                "diameter_estimated": estimated, "adapter_cell_diameter": self.adapter_diameter, "scale": round(scale, 5),
                "channels": list(channels) if channels else None, "device": pred.device,
                "device_info": self.device_info, "precision": precision_name(pred.device, pred.precision),
                "target_diameter": self.target_diameter, "instance_params": self.params.__dict__,
                "normalisation": self.meta.normalisation, "tile": pred.tile, "overlap": pred.overlap}

    def params_for(self, img: ImageData, channels: tuple[int, ...] | None) -> InstanceParams:
        """The thresholds for this input: the colour ones for a colour image where the adapter has them."""
        if self.params_colour is not None and is_colour_input(img, channels if channels is not None else self.meta.channels):
            return self.params_colour
        return self.params

    def scaled_params(self, scale: float, params: InstanceParams | None = None) -> InstanceParams:
        """The instance parameters (``params``, else :attr:`params`) for a model-scale image rescaled
        by ``scale`` (the minimum cell size scales)."""
        p = params or self.params
        return InstanceParams(p.fg_threshold, p.marker_threshold, max(1, int(round(p.min_size * scale * scale))), p.fill_holes)

    def estimate_diameter(self, x: np.ndarray, cancel: CancelToken | None,
                          report: Callable[[float], None]) -> tuple[float | None, Any]:
        """Typical cell diameter (input pixels) of the model input ``x``, or None: see :mod:`.size_estimate`.

        Probes a few scales on windows of the image and keeps the one where the model's instances
        agree best with its own geometric branch. Returns ``(diameter, native)``: ``native``
        unpacks to the native-scale ``(prob, geo, labels)``, computed only when unpacked (what
        :meth:`segment` does when the estimate implies a rescale within 15 % of 1).
        """
        from .size_estimate import estimate_diameter

        est = estimate_diameter(lambda xs, prog: self.predictor.predict(xs, cancel, prog), x,
                                self.scaled_params(1.0), cancel, report, target=self.target_diameter)
        return est.diameter, _NativePass(self, x, cancel, report, est.native)


class _NativePass:
    """The native-scale ``(prob, geo, labels)`` of a model input, computed on first unpacking (if the estimate did not).

    Progress goes to ``report`` as 1..2 (the estimate took 0..1 of it).
    """

    def __init__(self, seg: Segmenter, x: np.ndarray, cancel: CancelToken | None, report: Callable[[float], None],
                 done: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        self.seg, self.x, self.cancel, self.report = seg, x, cancel, report
        self._out = done  # already computed by the estimate (a probe at scale 1 on the whole image)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._out is None:
            prob, geo = self.seg.predictor.predict(self.x, self.cancel, lambda d, n: self.report(1.0 + d / n))
            self._out = (prob, geo, dense_to_labels(prob, geo[0], self.seg.scaled_params(1.0)))
        return iter(self._out)


def params_from_meta(d: dict[str, Any]) -> InstanceParams:
    """The instance parameters in an adapter's metadata (its top level: the grayscale ones; unknown keys ignored)."""
    return InstanceParams(**{k: v for k, v in d.items() if k in InstanceParams.__dataclass_fields__})


def is_colour_input(img: ImageData, channels: tuple[int, ...] | None) -> bool:
    """Whether the model sees a colour image (as ``model_input`` decides), not a replicated channel."""
    return bool(img.rgb and img.n_channels >= 3 and (channels is None or tuple(channels) == (0, 1, 2)))


def finish_labels(labels_s: np.ndarray, prob: np.ndarray, geo: np.ndarray, shape: tuple[int, int], scale: float,
                  blank: bool = False, keep_uncertainty_map: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
    """From model-scale labels and dense maps to what a result holds at the input's ``shape``:
    ``(labels, cell_confidence, uncertainty, uncertainty_map or None)``.

    Torch-free, so that CPU worker processes run it (:mod:`.pipelined`) as :meth:`Segmenter.segment` does.
    """
    h, w = shape
    labels = resize_labels(labels_s, (h, w))
    conf = _cell_confidence(labels_s, prob)
    if labels_s.shape != (h, w):  # cells may vanish when shrinking: renumber, keep their confidences aligned
        from skimage.segmentation import relabel_sequential

        kept = np.unique(labels)
        kept = kept[kept > 0]
        labels = relabel_sequential(labels)[0].astype(np.int32)
        conf = conf[kept - 1]
    _fg, dis, region = disagreement(prob[0], geo[0])
    uncertainty = float(dis[region].mean()) if region.any() else 0.0
    umap = None
    if keep_uncertainty_map:
        umap = resize_image(dis[None].astype(np.float32), 1.0 / scale)[0] if scale != 1.0 else dis
        umap = fit_shape(umap, (h, w)).astype(np.float16)
    if blank:
        labels[:] = 0
        conf = np.zeros(0, np.float32)
    return labels, conf, uncertainty, umap


def _cell_confidence(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    n = int(labels.max())
    if n == 0:
        return np.zeros(0, np.float32)
    fgp = (1.0 - prob[0]).ravel()
    lab = labels.ravel()
    s = np.bincount(lab, weights=fgp, minlength=n + 1)[1:]
    c = np.bincount(lab, minlength=n + 1)[1:]
    return (s / np.maximum(c, 1)).astype(np.float32)

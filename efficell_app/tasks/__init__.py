"""EffiCell's use cases, each one generator of typed events with a cancel token. No Qt here.

The window runs these generators in worker threads (``gui/workers.py``: each yielded event
reaches the window as a signal), the command line iterates them and prints, and a cluster
runner can drive :func:`segment_image` (one image, picklable in and out) on other machines.
Every generator takes ``cancel`` (a :class:`~efficell_app.core.cancel.CancelToken`) as a
keyword and raises :class:`~efficell_app.core.errors.Cancelled` once it is set.

==================  =====================================  ===========================================
use case            generator                              events
==================  =====================================  ===========================================
add images          :func:`add_images`, :func:`thumbnails`  ``Status``, ``ImagesAdded``, ``Thumbnail``
segment + measure   :func:`segment_images`                 ``Status``, ``RunStarted``, ``ImageStarted``,
                    (unit: :func:`segment_image`),         ``ImageSegmented``, ``ImageFailed``,
                    :func:`measure_images`                 ``MeasuredImage``
... on a cluster    :func:`segment_images_on_cluster`,     the same; ``core.batch.FileEvent`` for files
                    :func:`segment_files_on_cluster`
                    (:mod:`.cluster`: which cluster;
                    the resume check: ``core.batch``)
annotate            :func:`save_annotation`                ``AnnotationSaved``
                    (:func:`starting_labels`)
train               :func:`train_project_adapter`,         ``TrainingStarted``, ``TrainProgress``,
                    :func:`train`                          ``AdapterAdded``
export              :func:`export_images`,                 ``ExportProgress``, ``ExportFailed``
                    :func:`export_events`
evaluate            :func:`score_folders`,                 ``Scored``, ``NotScored``, ``ImageUncertainty``,
                    :func:`rank_uncertainty`,              ``CellUncertainty``, ``Compared``
                    :func:`cell_uncertainty`,
                    :func:`compare_models`
==================  =====================================  ===========================================

Importing this package is cheap (no torch, pandas or Qt): each generator imports what it needs.
"""

from __future__ import annotations

from .add_images import ImagesAdded, Thumbnail, add_images, set_name_for, thumbnails
from .annotate import AnnotationSaved, StartingLabels, mark_annotated, save_annotation, starting_labels
from .cluster import ClusterError, ClusterSpec, cluster_extra_missing, connect, parse_cluster
from .cluster_segment import segment_files_on_cluster, segment_images_on_cluster
from .evaluate import (
    CellUncertainty,
    Compared,
    NotScored,
    Scored,
    cell_uncertainty,
    compare_models,
    rank_uncertainty,
    score_folders,
)
from .events import ImageFailed, Status
from .export import (
    FILE_FORMATS,
    FORMATS,
    TABLE_FORMATS,
    ExportFailed,
    ExportOptions,
    ExportProgress,
    ExportReport,
    ExportWouldReplace,
    existing_exports,
    export_events,
    export_images,
    export_project,
)
from .measure import measure_images
from .runtime import (
    DeviceFound,
    describe_error,
    device_description,
    find_device,
    gpu_names,
    loading_heavy_libraries,
)
from .segment import (
    BatchEvent,
    ImageJob,
    ImageSegmented,
    ImageStarted,
    RunStarted,
    SegmentedImage,
    SegmentSettings,
    load_segmenter,
    segment_image,
    segment_images,
    segment_project,
)
from .train import (
    AdapterAdded,
    TrainingFailed,
    TrainingJob,
    TrainingRequest,
    TrainingStarted,
    train,
    train_project_adapter,
)

#: every use case by name: the generator the window and the CLI run (tests check each is reachable without Qt)
USE_CASES = {
    "add images": add_images,
    "segment + measure": segment_images,
    "annotate": save_annotation,
    "train": train_project_adapter,
    "export": export_images,
    "evaluate": score_folders,
}

__all__ = [
    "FILE_FORMATS",
    "FORMATS",
    "TABLE_FORMATS",
    "USE_CASES",
    "AdapterAdded",
    "AnnotationSaved",
    "BatchEvent",
    "ClusterError",
    "ClusterSpec",
    "CellUncertainty",
    "Compared",
    "DeviceFound",
    "ExportFailed",
    "ExportOptions",
    "ExportProgress",
    "ExportReport",
    "ExportWouldReplace",
    "ImageFailed",
    "ImageJob",
    "ImageSegmented",
    "ImageStarted",
    "ImagesAdded",
    "NotScored",
    "RunStarted",
    "Scored",
    "SegmentSettings",
    "SegmentedImage",
    "StartingLabels",
    "Status",
    "Thumbnail",
    "TrainingFailed",
    "TrainingJob",
    "TrainingRequest",
    "TrainingStarted",
    "add_images",
    "cell_uncertainty",
    "cluster_extra_missing",
    "compare_models",
    "connect",
    "describe_error",
    "find_device",
    "device_description",
    "existing_exports",
    "export_events",
    "export_images",
    "export_project",
    "gpu_names",
    "load_segmenter",
    "loading_heavy_libraries",
    "mark_annotated",
    "measure_images",
    "parse_cluster",
    "rank_uncertainty",
    "save_annotation",
    "score_folders",
    "segment_files_on_cluster",
    "segment_image",
    "segment_images",
    "segment_images_on_cluster",
    "segment_project",
    "set_name_for",
    "starting_labels",
    "thumbnails",
    "train",
    "train_project_adapter",
]

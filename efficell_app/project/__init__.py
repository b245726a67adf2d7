"""EffiCell projects: a lab's image sets, annotations, results and adapters kept safely on disk.

No Qt here; the GUI and the CLI both drive a :class:`Project`.

Layout on disk (a project is a folder; move or copy the whole folder and it still opens)::

    MyProject/
      project.efficell      the index: an SQLite database in WAL mode (schema in store.py)
      project.efficell.backup1..3   rolling copies of the index (newest first), see Safety
      project.lock          "pid host time" of the process that has the project open
      images/<set>/...      images copied in (``add_folder(..., copy=True)``); otherwise
                            images stay where they are and are referenced by path
      annotations/<id>/     label images the user drew/corrected: v000001.tif, v000002.tif ...
                            (the last ``ANNOTATION_HISTORY`` = 10 versions are kept)
      results/<id>/         model output: r000001.tif ... one label image per segmentation
      adapters/             trained adapters (safetensors files, opaque to this package)
      exports/              default folder for spreadsheets written from the project

Why SQLite (WAL) and not a versioned JSON file
    * Every change is a transaction: a crash or power cut leaves the last committed state,
      never half of a write; a versioned JSON file would be rewritten whole at each change
      (a 10,000-image index is megabytes of JSON re-serialised per status change).
    * Opening reads only what is asked: a 10,000-image project opens in ~8 ms and lists all
      10,000 image records in ~0.15 s (median, busy 2-core VM; ``benchmarks/project_open.py``,
      ``benchmarks/results/project.md``); JSON must be parsed whole before the first image shows.
    * Indexed queries (images of a set, latest result, annotation history) stay fast as
      projects grow; WAL makes commits cheap (one sequential append) and ``synchronous=FULL``
      makes them durable.
    * It is in the Python standard library and one file, so a project stays copyable.
    The database is opened with ``locking_mode=EXCLUSIVE``: SQLite then keeps the WAL index
    in process memory instead of a shared-memory file, which makes WAL safe on network
    shares (lab servers) where shared memory does not work. Only one process uses a project
    at a time anyway (see locking).

Locking
    ``project.lock`` is held with an OS lock (``fcntl.flock`` on POSIX, ``msvcrt.locking``
    on Windows) for as long as the project is open; it holds ``pid host time`` of the owner
    for the message. The OS drops the lock when the process dies, so a crash never leaves a
    stale lock. A second opener (another process or another ``Project`` in the same process)
    gets :class:`ProjectLockedError`: "<folder>: the project is open in another EffiCell
    (pid 123 on host lab-pc since ...); close it there first" (``err.holder`` has pid/host/time).

Safety (nothing a lab made is lost; docs/reliability.md lists the cases tested)
    * Paths are resolved once, where they enter the project (``..``, symlinks, relative
      spellings): one file is one record. The project deletes an image file only when it
      copied that file in itself, which it records in the ``copies`` table when copying
      (schema 2), when no other image uses it, and when its content is still that copy's;
      never by how a path is spelled (a user's own ``images/`` folder is safe). Projects of
      schema 1 have no such records: their images, copied or not, are never deleted.
    * The index is checked when opened (SQLite ``quick_check``): an empty (0-byte), unreadable
      or corrupt index is refused with :class:`ProjectDamagedError` naming the file, never
      opened as an empty project. SQLite errors during use become :class:`ProjectError`
      naming the index. ``close()`` keeps a rolling backup (``backup1..3``, SQLite's online
      backup API, checked before it replaces an older one) when the session changed anything.
    * Label and adapter files in flight are journaled in the index (``file_journal``): after
      a crash, :meth:`Project.tidy` removes exactly those (and temporary files); a file the
      index does not know is never deleted nor overwritten (a new version takes the next free
      number). Each label file carries its own index row and its image's row (TIFF description).
    * ``efficell project repair DIR`` (:func:`project.repair.repair_project`) rebuilds a damaged
      or lost index from the rows the damaged one still holds, the newest good backup, and the
      label and adapter files; the damaged index is kept aside (``project.efficell.damaged-<time>``).
    * Adapters are checked (tensors inside the file, finite values, the checksum recorded when
      saved) by ``add_adapter``/``import_adapter``: a truncated or NaN adapter is refused.

Versions
    The schema version is stored in the database (``PRAGMA user_version``) and in the meta
    table. Older projects are migrated forward on open (the database is backed up first as
    ``project.efficell.bak-v<N>``); a project written by a newer EffiCell is refused with
    :class:`ProjectVersionError` naming both versions.

Images
    Each image keeps: id, set, path, size, ``quick_hash`` (SHA-256 of the size plus the first
    and last MiB: cheap for any file size, used to check a relinked file is the same image),
    ``sha256`` of the whole file (computed when added for files up to 256 MiB, otherwise on
    first ``image_sha256()``), width, height, channels, channel names, pixel size (µm, from the
    file's metadata), the z/t plane chosen when adding, and a status.

Threads
    A ``Project`` holds ONE SQLite connection (``check_same_thread=False``) guarded by a
    re-entrant lock: every method is safe to call from any thread (GUI thread, worker
    threads). Calls are short (milliseconds); file writes (label images) happen outside
    the database lock and are atomic (temporary file then rename).

API (all paths returned are absolute ``pathlib.Path``; ids are ints)::

    from efficell_app.project import Project, ProjectLockedError

    p = Project.create(folder, name=None)        # folder is created if needed; an existing
                                                 # project there is refused
    p = Project.open(folder)                     # or open_project(folder). Raises
                                                 # ProjectLockedError / ProjectVersionError /
                                                 # NotAProjectError (ProjectDamagedError for an
                                                 # empty or corrupt index); after a crash of the
                                                 # last session its journaled unfinished files
                                                 # and temp files are removed
    with Project.open(folder) as p: ...          # close() on exit
    p.close()  ;  p.root  ;  p.name  ;  p.closed  ;  p.exports_dir
    Project.is_project(folder) -> bool ;  p.info() -> dict (project_id, created, versions)
    p.tidy() -> int                              remove temp files and the journaled files of interrupted writes
    p.unindexed_label_files() -> list[Path]      label files no index row refers to (kept; repair adds them)
    from efficell_app.project.repair import repair_project
    repair_project(folder) -> RepairReport       rebuild a damaged index (``efficell project repair``)

    # image sets and images
    p.create_set(name) -> SetInfo                p.list_sets() -> list[SetInfo]
    p.rename_set(old, new) ; p.delete_set(name)  (removes its images' annotations/results)
    p.add_folder(path, set_name, copy=False, planes=None, progress=None, cancel=None)
        -> AddReport(set_name, added: list[int], skipped: list[(Path, reason)], duplicates)
        adds images recursively (set created if needed); a file already in the set (under
        any spelling of its path) is a duplicate; copies never replace an existing file (a
        free name "x_2.tif" is taken); non-images, unreadable images and the project's own
        data (annotations/, results/, adapters/, exports/) are skipped with the reason;
        report.summary() is one line for the user; cancel keeps what was added
        (report.cancelled); progress(done, total) after each file.
    p.add_files(paths, set_name, ...) -> AddReport   (same, for explicit files)
    p.list_images(set_name=None, status=None) -> list[ImageRecord]
    p.get_image(image_id) -> ImageRecord         (NotFoundError, a KeyError, if no such image)
    p.read_image(image_id) -> core.images.ImageData
    p.set_status(image_id, status)               status in STATUSES =
                                                 ("new", "segmented", "annotated", "reviewed")
    p.remove_image(image_id)                     (its annotations/results, and its file only when the
                                                 project copied it in; never the user's file)
    p.image_sha256(image_id) -> str              full-file SHA-256 (computed once, stored)
    p.missing_images(set_name=None) -> list[ImageRecord]   files no longer where recorded
    p.relink(old_prefix, new_folder) -> RelinkReport(relinked, still_missing, mismatched)
    relink_prefixes(old_file, new_file) -> (old_prefix, new_folder)   # from one found file

    # model output (never touches annotations)
    p.start_run(settings, identity, set_name=None) -> run_id
    p.record_result(image_id, labels, settings, identity, run_id=None, seconds=None) -> Path
        (status new -> segmented; labels must match the image's size)
    p.latest_result(image_id) -> ResultRecord | None
    p.list_results(image_id) -> list[ResultRecord]      newest first
    p.load_labels(result_or_annotation_version_or_path) -> np.ndarray (H, W) int32
    p.list_runs() -> list[RunRecord]
    p.delete_results(image_id, keep_last=0) -> int       forget older results

    # annotations (ground truth edited by the user)
    p.save_annotation(image_id, labels, note="") -> AnnotationVersion
        (status new/segmented -> annotated; "reviewed" is only set by set_status)
    p.load_annotation(image_id, version=None) -> np.ndarray | None   (None: not annotated)
    p.annotation_history(image_id) -> list[AnnotationVersion]        newest first
    p.annotated_images(set_name=None) -> list[ImageRecord]           (training data)
    p.labels_for(image_id, source="auto") -> FoundLabels | None   THE rule: annotation if any, else
                                                 latest result (.labels, .kind, .origin, .identity)

    # measurements (computed on demand from stored labels + image, never stale)
    p.measure(image_id, source="auto") -> (DataFrame, origin) | None
        source "auto" = annotation when saved, else latest result; or "annotation" / "result"
    (the pixel-size / channel-name rule and the one measuring path: project/measuring.py;
     exporting a project is a use case: efficell_app.tasks.export_project)

    # adapters library (files are opaque safetensors; library metadata is stored here)
    p.add_adapter(file, name=None, encoder=None, training_images=None, metrics=None, metadata=None)
        -> AdapterInfo      (the file is copied into adapters/; fields left None come from the
                             file's own EffiCell metadata: name, encoder, metrics, training images)
    p.list_adapters() -> list[AdapterInfo]       p.get_adapter(name_or_id) -> AdapterInfo
    p.rename_adapter(name_or_id, new_name) ; p.delete_adapter(name_or_id)
    p.export_adapter(name_or_id, dest) -> Path   one .safetensors file carrying the library
                                                 entry (byte-identical copy when the file's own
                                                 metadata already says it all; dest may be a folder)
    p.import_adapter(file, name=None) -> AdapterInfo   reads that header back

    # segmenting a project's images is a use case: efficell_app.tasks.segment_images /
    # segment_project (they record results with start_run / record_result above)

Errors: :class:`ProjectError` (an ``EffiCellError``) and its subclasses
:class:`ProjectLockedError`, :class:`ProjectVersionError`, :class:`NotAProjectError`
(and its :class:`ProjectDamagedError`),
:class:`NotFoundError` (no such set/image/result/adapter; also a ``KeyError``);
bad image files are reported per file (``AddReport.skipped``), never raised mid-batch.
"""

from __future__ import annotations

from .adapters import AdapterInfo
from .annotations import ANNOTATION_HISTORY, AnnotationVersion
from .errors import (NotAProjectError, NotFoundError, ProjectDamagedError, ProjectError, ProjectLockedError,
                     ProjectVersionError)
from .images import STATUSES, AddReport, ImageRecord, RelinkReport, SetInfo, relink_prefixes
from .measuring import FoundLabels, MeasuredImage, MeasureSettings
from .project import Project, open_project
from .results import ResultRecord, RunRecord
from .store import SCHEMA_VERSION

__all__ = [
    "ANNOTATION_HISTORY",
    "SCHEMA_VERSION",
    "STATUSES",
    "AdapterInfo",
    "AddReport",
    "AnnotationVersion",
    "FoundLabels",
    "ImageRecord",
    "MeasureSettings",
    "MeasuredImage",
    "NotAProjectError",
    "NotFoundError",
    "Project",
    "ProjectDamagedError",
    "ProjectError",
    "ProjectLockedError",
    "ProjectVersionError",
    "RelinkReport",
    "ResultRecord",
    "RunRecord",
    "SetInfo",
    "relink_prefixes",
    "open_project",
]

"""``efficell segment``: label every cell of images (files or folders) or of a project."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO

from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError
from ..core.progress import EtaTracker
from .interrupt import ctrl_c_cancels
from .options import pixel_size_um
from .progress import progress_line


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images into label masks (<stem>_masks.tif)",
                       description="Segment every cell. Writes DIR/<stem>_masks.tif (uint16; uint32 above 65,535 cells; "
                                   "DIR/<stem>_s<k>_masks.tif for scene k, from 0, of a file with several scenes) "
                                   "and DIR/measurements.xlsx.")
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument("--model", default=None, help="'builtin' (default) or an adapter file made by 'efficell train'")
    p.add_argument("--diameter", type=float, default=None,
                   help="typical cell diameter in pixels (default: the one a trained adapter stores, else estimated)")
    p.add_argument("--channels", default=None, help="channels to segment: '0', 'cyto,nucleus' as '1,0', or 'rgb' (default: auto)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--z", default=None, help="for z-stacks: plane index, counted from 0 (the window's 'z 1' is 0), or 'max' (maximum projection)")
    p.add_argument("--t", default=None, help="for time series: time point index, counted from 0 (the window's 't 1' is 0)")
    p.add_argument("--pixel-size", type=pixel_size_um, default=None, help="pixel size in µm (default: from the file's metadata)")
    p.add_argument("--channel-names", default=None, help="comma-separated channel names for the measurements")
    p.add_argument("--no-measure", action="store_true", help="do not write measurements.xlsx")
    p.add_argument("--overwrite", action="store_true",
                   help="segment every image again, replacing existing masks (by default a re-run keeps the masks an "
                        "earlier run with the same settings completed, and refuses to replace any other file)")
    p.add_argument("--project", type=Path, default=None, help="segment the images of an EffiCell project instead")
    p.add_argument("--set", dest="set_name", default=None, help="with --project: only this image set")
    p.add_argument("--only-new", action="store_true",
                   help="with --project: only images not segmented or annotated yet (as the window's "
                        "'Skip images already segmented'); a run stopped midway is finished this way")
    p.add_argument("--cluster", default=None, metavar="SPEC",
                   help="run on a Dask cluster: local[:N] (N worker processes here), tcp://host:port (a running "
                        "scheduler), or slurm|pbs|sge|lsf[:JOBS] (dask-jobqueue, configured in the Dask config); "
                        "needs pip install 'efficell[cluster]' and folders every worker sees (docs/cluster.md)")
    p.set_defaults(func=run)


def _report(ev, err) -> None:  # noqa: ANN001
    """The progress line of one image (one scene of a file), then its error or warning."""
    status = ("kept from an earlier run" if ev.kept else f"{ev.n_cells} cells, {ev.seconds:.1f} s") if ev.ok else "failed"
    progress_line(err, ev.index, ev.total, ev.name, status)
    where = f"{ev.path} [{ev.scene}]" if ev.scene is not None else str(ev.path)
    if not ev.ok:
        print(f"error: {where}: {ev.message}", file=err)
    elif ev.message and not ev.kept:
        print(f"warning: {where}: {ev.message}", file=err)


def run(args: argparse.Namespace) -> int:
    from ..core.batch import BatchOptions, earlier_outputs, segment_files
    from ..core.fileio import is_inside
    from ..core.images import PlaneChoice, find_images, parse_channels
    from ..tasks.segment import load_segmenter

    err = sys.stderr
    try:
        channels = parse_channels(args.channels)
        planes = PlaneChoice.parse(args.z, args.t)
    except ValueError as exc:
        print(f"efficell segment: error: {exc}", file=err)
        return 2
    if args.diameter is not None and args.diameter <= 0:
        print("efficell segment: error: --diameter must be a positive number of pixels", file=err)
        return 2
    names = [s.strip() for s in args.channel_names.split(",")] if args.channel_names else None
    if args.only_new and args.project is None:
        print("efficell segment: error: --only-new is for --project (a folder batch keeps the masks an earlier run "
              "made by itself)", file=err)
        return 2
    if args.project is not None and (args.paths or args.out is not None):
        print("efficell segment: error: give PATH... --out DIR, or --project DIR (its images, results kept in it); "
              "not both", file=err)
        return 2
    if args.cluster is not None:
        from ..tasks.cluster import parse_cluster

        try:
            parse_cluster(args.cluster)
        except ValueError as exc:
            print(f"efficell segment: error: {exc}", file=err)
            return 2
        if args.project is not None:
            return _project_on_cluster(args, channels)
    if args.project is not None:
        return _run_project(args, channels)
    if not args.paths or args.out is None:
        print("efficell segment: error: give PATH... and --out DIR (or --project DIR)", file=err)
        return 2
    images, skipped = find_images(args.paths)
    skipped = [p for p, _ in skipped if not is_inside(p, args.out)]  # the table and record of an earlier run
    if skipped:
        listed = ", ".join(p.name for p in skipped[:3]) + (", …" if len(skipped) > 3 else "")
        print(f"note: skipped {len(skipped)} non-image file(s) in the given folders ({listed})", file=err)
    outputs = set(earlier_outputs(images, args.out))
    if outputs:
        images = [p for p in images if p not in outputs]
        print(f"note: skipped {len(outputs)} mask(s) of an earlier run in {args.out} (not images to segment)", file=err)
    if not images:
        print("efficell segment: error: no image files found in " + ", ".join(map(str, args.paths)), file=err)
        return 1
    if args.cluster is not None:
        return _files_on_cluster(args, images, channels, planes, names)
    try:
        segmenter = load_segmenter(args.model, args.device)
    except (EffiCellError, ValueError) as exc:
        from .hints import with_options

        print(f"error: {with_options(exc)}", file=err)
        return 1
    opts = BatchOptions(diameter=args.diameter, channels=channels, planes=planes, overwrite=args.overwrite,
                        measure=not args.no_measure, pixel_size_um=args.pixel_size, channel_names=names)
    tally = _Tally(len(images), err)
    try:
        with ctrl_c_cancels(CancelToken(), err, "stopping after the current step of the image at work…") as cancel:
            written = tally.run(segment_files(images, args.out, segmenter, opts, cancel, tally.within))
    except EffiCellError as exc:  # e.g. measurements.xlsx cannot be written
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("\ncancelled at once (the masks written are complete; run the same command again to finish)", file=err)
        return 130
    return tally.cancelled(args.out, written) if cancel.cancelled else tally.summary(args.out, written)


class _Within:
    """Prints the progress within one image (a large slide takes minutes) and the image's time left:
    at most every 5 s, after its first 5 s."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self._said = time.monotonic()  # when it was last printed
        self._image, self._eta = 0, EtaTracker(1)

    def __call__(self, index: int, total: int, name: str, fraction: float) -> None:
        now = time.monotonic()
        if index != self._image:  # a new image: its clock starts
            self._image, self._eta, self._said = index, EtaTracker(1), now
        if fraction <= 0.0:
            self._said = now
            return
        if now - self._said < 5.0 or fraction >= 1.0:
            return
        self._said = now
        self._eta.update(fraction)
        left = self._eta.text()
        print(f"  {index}/{total} {name}: {fraction:.0%} of the image" + (f", {left} for it" if left else ""),
              file=self.err, flush=True)


class _Tally:
    """Counts a batch's events as they are reported, then says what was done and where it went."""

    def __init__(self, total: int, err: TextIO) -> None:
        self.total, self.failed, self.kept, self.seen, self.err = total, 0, 0, 0, err
        self.within = _Within(err)

    def run(self, events):  # noqa: ANN001, ANN201
        """Report each event; returns the batch's (table, run record)."""
        while True:
            try:
                ev = next(events)
            except StopIteration as stop:
                return stop.value
            _report(ev, self.err)
            self.total = ev.total  # one per scene of a multi-scene file
            self.kept += ev.kept
            self.failed += not ev.ok
            self.seen += 1

    def cancelled(self, out: Path, written) -> int:  # noqa: ANN001
        """The last lines of a run stopped by Ctrl-C: what it finished, and where that is recorded (exit 130)."""
        table, run = written if written else (None, None)
        recorded = " and ".join(p.name for p in (table, run) if p is not None)
        print(f"cancelled: {self.seen - self.failed} of {self.total} image(s) done into {out}"
              + (f", recorded in {recorded}" if recorded else "")
              + "; the masks written are complete: run the same command again to finish", file=self.err)
        return 130

    def summary(self, out: Path, written) -> int:  # noqa: ANN001
        """The last line (and the exit status): images done, kept, and a table or record that went beside another run's."""
        from ..core.batch import RUN_FILE, TABLE_FILE

        print(f"{self.total - self.failed} of {self.total} image(s) segmented into {out}"
              + (f" ({self.kept} kept from an earlier run with the same settings; --overwrite redoes them)"
                 if self.kept else ""), file=self.err)
        table, run = written if written else (None, None)
        if run is not None and run.name != RUN_FILE:
            kept = " and ".join(n for n in (TABLE_FILE, RUN_FILE) if (run.parent / n).exists())
            ours = " and ".join(p.name for p in (table, run) if p is not None)
            print(f"note: {kept} there {'hold' if ' and ' in kept else 'holds'} another run (other images or "
                  f"settings) and {'were' if ' and ' in kept else 'was'} kept; this run wrote {ours}", file=self.err)
        return 1 if self.failed else 0


def _run_project(args: argparse.Namespace, channels) -> int:  # noqa: ANN001
    """The window's segment use case (``tasks.segment_images``) on a project, printing its events."""
    from ..project import open_project
    from ..tasks import SegmentSettings, load_segmenter, segment_images

    err = sys.stderr
    settings = SegmentSettings(model=args.model, diameter=args.diameter, channels=channels, device=args.device,
                               measure=None)
    segmenter = load_segmenter(args.model, args.device)
    tally = _ProjectTally(err)
    try:
        with ctrl_c_cancels(CancelToken(), err, "stopping after the current step of the image at work…") as cancel, \
                open_project(args.project) as project:
            tally.run(project, segment_images(project, None, settings, set_name=args.set_name, segmenter=segmenter,
                                              only_new=args.only_new, cancel=cancel, progress=_Within(err)))
    except (Cancelled, KeyboardInterrupt):
        print(f"cancelled after {tally.n} image(s) (the results recorded stay in the project; "
              "--only-new finishes the run)", file=err)
        return 130
    return tally.summary(args.project)


class _ProjectTally:
    """Prints a project run's events (a line per image) and its last line."""

    def __init__(self, err: TextIO) -> None:
        self.err, self.n, self.failed = err, 0, 0

    def run(self, project, events) -> None:  # noqa: ANN001
        from ..tasks import ImageFailed, ImageSegmented, Status

        for ev in events:
            if isinstance(ev, ImageFailed):
                self.n += 1
                self.failed += 1
                print(f"error: {ev.message}", file=self.err)
            elif isinstance(ev, ImageSegmented):
                self.n += 1
                print(f"[{ev.index}/{ev.total}] {_project_name(project, ev)}: {ev.n_cells} cells, {ev.seconds:.1f} s",
                      file=self.err)
            elif isinstance(ev, Status):  # on a cluster: connecting, the dashboard's address, loading the model
                print(ev.message, file=self.err, flush=True)

    def summary(self, project_dir: Path) -> int:
        print(f"{self.n - self.failed} of {self.n} image(s) segmented in project {project_dir}", file=self.err)
        return 1 if self.failed else 0


def _project_name(project, ev) -> str:  # noqa: ANN001
    """The image's path, with its scene for one scene of a multi-scene file (``plate.czi [D6]``)."""
    try:
        rec = project.get_image(ev.image_id)
    except KeyError:
        return str(ev.path)
    return f"{ev.path} [{rec.scene_name}]" if rec.scene is not None and rec.scene_name else str(ev.path)


def _files_on_cluster(args: argparse.Namespace, images: list[Path], channels, planes, names) -> int:  # noqa: ANN001
    """``efficell segment IMAGES --out DIR --cluster SPEC``: the same lines as a local run, plus
    the cluster and its dashboard; Ctrl-C stops every worker's image and leaves complete masks only."""
    from ..core.batch import BatchOptions
    from ..tasks.cluster import connect
    from ..tasks.cluster_segment import segment_files_on_cluster

    err = sys.stderr
    opts = BatchOptions(diameter=args.diameter, channels=channels, planes=planes, overwrite=args.overwrite,
                        measure=not args.no_measure, pixel_size_um=args.pixel_size, channel_names=names)
    tally = _Tally(len(images), err)
    try:
        with ctrl_c_cancels(CancelToken(), err, "stopping the images in flight…") as cancel:
            with connect(args.cluster) as conn:
                _announce(conn, err)
                events = segment_files_on_cluster(images, args.out, conn, opts, model=args.model, device=args.device,
                                                  cancel=cancel)
                try:
                    written = tally.run(events)
                except KeyboardInterrupt:
                    events.close()  # cancels every future, waits for the workers, removes half-written files
                    raise
    except Cancelled:  # before the first image was sent (connecting, loading the model)
        print("cancelled before any image was segmented", file=err)
        return 130
    except EffiCellError as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("cancelled at once (the masks written are complete; run the same command again to finish)", file=err)
        return 130
    return tally.cancelled(args.out, written) if cancel.cancelled else tally.summary(args.out, written)


def _announce(conn, err) -> None:  # noqa: ANN001
    print(f"cluster: {conn.description}", file=err)
    if conn.dashboard:
        print(f"dashboard: {conn.dashboard}", file=err, flush=True)
    print("loading the model on the workers (a job queue may take a while to start them)…", file=err, flush=True)


def _project_on_cluster(args: argparse.Namespace, channels) -> int:  # noqa: ANN001
    """``efficell segment --project DIR --cluster SPEC``: the window's use case on a cluster, printing its events."""
    from ..project import open_project
    from ..tasks import SegmentSettings
    from ..tasks.cluster_segment import segment_images_on_cluster

    err = sys.stderr
    settings = SegmentSettings(model=args.model, diameter=args.diameter, channels=channels, device=args.device,
                               measure=None)
    tally = _ProjectTally(err)
    try:
        with ctrl_c_cancels(CancelToken(), err, "stopping the images in flight…") as cancel, \
                open_project(args.project) as project:
            events = segment_images_on_cluster(project, None, settings, cluster=args.cluster, set_name=args.set_name,
                                               only_new=args.only_new, cancel=cancel)
            try:
                tally.run(project, events)
            except KeyboardInterrupt:
                events.close()
                raise
    except (Cancelled, KeyboardInterrupt):
        print(f"cancelled after {tally.n} image(s) (the results recorded stay in the project; "
              "--only-new finishes the run)", file=err)
        return 130
    except EffiCellError as exc:
        print(f"error: {exc}", file=err)
        return 1
    return tally.summary(args.project)

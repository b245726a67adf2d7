"""Issue 18: a property test. Whatever images and sets are added (by reference or copied),
removed and deleted, through whatever spelling of their paths ('..', symlinks, absolute or
relative, a user's own folder named ``images/`` inside the project, the project's own folders),
no file the project did not copy in itself is ever removed or changed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efficell_app.core.errors import EffiCellError
from efficell_app.project import Project

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symlinks")

SETS = ("a", "b", "day1")


def _tif(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.random.default_rng(seed).integers(0, 255, (16, 20), dtype=np.uint8))


@contextlib.contextmanager
def _world() -> Iterator[tuple[Path, Path]]:
    """A temporary folder with the user's files, links to them, and a project folder that holds
    the user's own ``images/day1`` (made before the project)."""
    with tempfile.TemporaryDirectory(prefix="efficell-prop-") as tmp:
        base = Path(tmp).resolve()
        for k, rel in enumerate(("user/a.tif", "user/sub/b.tif", "user/sub/c.tif", "P/images/day1/d.tif",
                                 "P/images/day1/deep/e.tif")):
            _tif(base / rel, k)
        os.symlink(base / "user", base / "link")  # another way to the user's folder
        os.symlink(base / "user" / "a.tif", base / "user" / "alias.tif")  # a file link
        (base / "P" / "images").mkdir(exist_ok=True)
        os.symlink(base / "user" / "sub", base / "P" / "images" / "linked")  # a link inside the project
        yield base, base / "P"


def _spellings(base: Path, root: Path, target: Path) -> list[str]:
    """Ways to write ``target`` (absolute, relative to the working folder, through '..' and links)."""
    t = str(target)
    out = [t, os.path.relpath(t, base), os.path.relpath(t, base / "user" / "sub")]
    out.append(str(target.parent / "." / ".." / target.parent.name / target.name))
    out.append(str(root / "images" / ".." / ".." / target.relative_to(base)))
    out.append(str(root / "images" / "day1" / ".." / ".." / ".." / target.relative_to(base)))
    if target.is_relative_to(base / "user"):
        rest = target.relative_to(base / "user")
        out.append(str(base / "link" / rest))
        if rest.parts[:1] == ("sub",):
            out.append(str(root / "images" / "linked" / Path(*rest.parts[1:])))
    return out


def _targets(base: Path, root: Path) -> list[Path]:
    return [base / "user" / "a.tif", base / "user" / "alias.tif", base / "user" / "sub" / "b.tif",
            base / "user" / "sub", base / "user", root / "images" / "day1", root / "images" / "day1" / "d.tif",
            root / "images" / "linked", root / "images", root / "results", root / "annotations", root]


def _snapshot(base: Path, root: Path) -> dict[Path, bytes]:
    """Every file that is the user's: all outside the project, and what was in it before it existed."""
    files = {f: f.read_bytes() for f in base.rglob("*") if f.is_file() and not f.is_relative_to(root)}
    files.update({f: f.read_bytes() for f in (root / "images" / "day1").rglob("*") if f.is_file()})
    return files


OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 11), st.integers(0, 7), st.sampled_from(SETS), st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 50)),
    st.tuples(st.just("delete"), st.sampled_from(SETS)),
    st.tuples(st.just("label"), st.integers(0, 50)),
)


# 40 sequences in the suite; EFFICELL_PROPERTY_EXAMPLES=500 for a longer search (docs/reliability.md)
@settings(max_examples=int(os.environ.get("EFFICELL_PROPERTY_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=1, max_size=10))
def test_no_file_outside_the_projects_own_copies_is_ever_removed(ops: list[tuple]) -> None:
    cwd = os.getcwd()
    with _world() as (base, root):
        before = _snapshot(base, root)
        os.chdir(base)  # relative spellings are relative to here
        try:
            with Project.create(root) as p:
                for op in ops:
                    _apply(p, base, root, op)
                    for f, data in before.items():
                        assert f.is_file(), f"{op}: the user's file {f} was removed"
                        assert f.read_bytes() == data, f"{op}: the user's file {f} was changed"
                    copies = {Path(p._store.from_stored(r["path"])) for r in p._store.query("SELECT path FROM copies")}
                    for rec in p.list_images():
                        assert ".." not in Path(rec.stored_path).parts
                        assert rec.copied == (rec.path in copies)
                        if rec.copied:  # a copy lives in the project's images/ and is not a user's file
                            assert rec.path.is_relative_to(root / "images") and rec.path not in before
                for s in p.list_sets():
                    p.delete_set(s.name)
        finally:
            os.chdir(cwd)
        for f, data in before.items():
            assert f.is_file() and f.read_bytes() == data, f"the user's file {f} was removed or changed"


def _apply(p: Project, base: Path, root: Path, op: tuple) -> None:
    kind = op[0]
    if kind == "add":
        _, ti, si, set_name, copy = op
        target = _targets(base, root)[ti]
        spelled = _spellings(base, root, target)
        path = spelled[si % len(spelled)]
        with contextlib.suppress(EffiCellError):  # e.g. a folder that does not exist (yet)
            if Path(path).is_dir():
                p.add_folder(path, set_name, copy=copy)
            else:
                p.add_files([path], set_name, copy=copy)
    elif kind == "remove":
        images = p.list_images()
        if images:
            p.remove_image(images[op[1] % len(images)].id)
    elif kind == "delete":
        if any(s.name == op[1] for s in p.list_sets()):
            p.delete_set(op[1])
    elif kind == "label":  # the project's own files: results and annotations
        images = p.list_images()
        if images:
            rec = images[op[1] % len(images)]
            lab = np.zeros((rec.height, rec.width), np.int32)
            lab[2:6, 2:6] = 1
            p.record_result(rec.id, lab, {}, {})
            p.save_annotation(rec.id, lab)

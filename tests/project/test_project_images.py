"""Image sets: adding folders (recursively, with skip reasons), records, status, relinking."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.core.cancel import CancelToken
from efficell_app.core.errors import ImageReadError, InputError
from efficell_app.core.images import PlaneChoice, read_image
from efficell_app.project import Project, ProjectError, relink_prefixes
from efficell_app.project.images import quick_hash, sha256_file


def test_add_folder_recursively_with_skip_reasons(project: Project, image_folder: Path) -> None:
    report = project.add_folder(image_folder, "exp 1")
    assert report.n_added == 4
    reasons = dict(report.skipped)
    assert set(map(Path, reasons)) == {image_folder / "notes.txt", image_folder / "plate1" / "analysis.csv",
                                       image_folder / "plate2" / "broken.tif"}
    assert "not an image file (.txt)" == reasons[image_folder / "notes.txt"]
    assert reasons[image_folder / "plate2" / "broken.tif"]  # the reader's reason (damaged TIFF)
    assert report.reasons()["not an image file"] == 2 and sum(report.reasons().values()) == 3
    assert "4 image(s) added to 'exp 1'" in report.summary() and "3 skipped" in report.summary()
    sets = project.list_sets()
    assert [(s.name, s.n_images) for s in sets] == [("exp 1", 4)]


def test_image_record_fields(project: Project, image_folder: Path) -> None:
    project.add_folder(image_folder, "exp")
    rec = next(r for r in project.list_images("exp") if r.name.startswith("set"))
    img = read_image(rec.path)
    assert (rec.height, rec.width) == img.shape and rec.channels == img.n_channels
    assert rec.channel_names == img.channel_names
    assert rec.status == "new" and not rec.inside_project
    assert rec.size == rec.path.stat().st_size
    assert rec.sha256 == sha256_file(rec.path) and rec.quick_hash == quick_hash(rec.path)
    assert Path(rec.stored_path).is_absolute()
    assert project.get_image(rec.id) == rec
    assert project.image_sha256(rec.id) == rec.sha256


def test_pixel_size_and_channel_names_are_recorded(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "ome"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 4000, (2, 64, 80), dtype=np.uint16)
    tifffile.imwrite(folder / "two.ome.tif", data, metadata={"axes": "CYX", "PhysicalSizeX": 0.325,
                                                              "PhysicalSizeY": 0.325, "Channel": {"Name": ["DAPI", "GFP"]}})
    report = project.add_folder(folder, "ome")
    rec = project.get_image(report.added[0])
    assert rec.channels == 2 and rec.channel_names == ("DAPI", "GFP")
    assert rec.pixel_size_um == pytest.approx(0.325)
    assert (rec.height, rec.width) == (64, 80)


def test_stack_needs_a_plane_choice(project: Project, tmp_path: Path) -> None:
    folder = tmp_path / "zs"
    folder.mkdir()
    stack = np.random.default_rng(1).integers(0, 255, (5, 32, 32), dtype=np.uint8)
    tifffile.imwrite(folder / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    skipped = project.add_folder(folder, "a").skipped
    assert len(skipped) == 1 and "z-planes" in skipped[0][1]
    report = project.add_folder(folder, "b", planes=PlaneChoice(z="max"))
    assert report.n_added == 1
    img = project.read_image(report.added[0])
    assert np.array_equal(img.data[0], stack.max(axis=0))


def test_duplicates_and_copy_in(project: Project, image_folder: Path) -> None:
    project.add_folder(image_folder, "exp")
    again = project.add_folder(image_folder, "exp")
    assert again.n_added == 0 and again.duplicates == 4
    copied = project.add_folder(image_folder, "copied", copy=True)
    assert copied.n_added == 4
    recs = project.list_images("copied")
    assert all(r.inside_project and r.path.is_file() for r in recs)
    assert all(r.stored_path.startswith("images/copied/experiment/") for r in recs)
    # a broken file that was copied is removed again
    assert not (project.root / "images" / "copied" / "experiment" / "plate2" / "broken.tif").exists()
    assert len(project.list_images()) == 8


def test_add_files_and_bad_inputs(project: Project, image_folder: Path, tmp_path: Path) -> None:
    files = sorted((image_folder / "plate1").glob("*.tif"))
    report = project.add_files([files[0], image_folder / "notes.txt", tmp_path / "gone.tif"], "s")
    assert report.n_added == 1 and report.n_skipped == 2
    assert any(p.name == "gone.tif" for p, _ in report.skipped)
    with pytest.raises(InputError, match="folder not found"):
        project.add_folder(tmp_path / "missing", "s")
    with pytest.raises(ProjectError, match="needs a name"):
        project.add_folder(image_folder, "  ")


def test_project_own_folders_are_not_added(project: Project, image_folder: Path) -> None:
    rec_id = project.add_folder(image_folder, "exp").added[0]
    rec = project.get_image(rec_id)
    project.save_annotation(rec_id, np.zeros((rec.height, rec.width), np.int32))
    report = project.add_folder(project.root, "self")
    assert report.n_added == 0
    assert any("project's own data" in why for _, why in report.skipped)


def test_progress_and_cancel(project: Project, image_folder: Path) -> None:
    seen: list[tuple[int, int]] = []
    token = CancelToken()

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 2:
            token.cancel()

    report = project.add_folder(image_folder, "exp", progress=progress, cancel=token)
    assert report.cancelled and report.n_added == 2
    assert seen[:2] == [(1, 5), (2, 5)]
    assert len(project.list_images("exp")) == 2  # what was added before cancelling is kept


def test_status(project: Project, image_folder: Path) -> None:
    ids = project.add_folder(image_folder, "exp").added
    project.set_status(ids[0], "reviewed")
    assert [r.id for r in project.list_images(status="reviewed")] == [ids[0]]
    with pytest.raises(ValueError, match="unknown status"):
        project.set_status(ids[0], "done")
    with pytest.raises(KeyError):
        project.set_status(10_000, "new")


def test_sets_rename_delete(project: Project, image_folder: Path) -> None:
    ids = project.add_folder(image_folder, "a", copy=True).added
    project.add_folder(image_folder, "b")
    rec = project.get_image(ids[0])
    ann = project.save_annotation(ids[0], np.ones((rec.height, rec.width), np.int32))
    project.rename_set("a", "plate A")
    assert [s.name for s in project.list_sets()] == ["plate A", "b"]
    with pytest.raises(ProjectError, match="already exists"):
        project.rename_set("plate A", "b")
    project.delete_set("plate A")
    assert [s.name for s in project.list_sets()] == ["b"]
    assert not ann.path.exists() and not rec.path.exists()
    assert len(project.list_images()) == 4
    with pytest.raises(KeyError):
        project.list_images("plate A")


def test_remove_image(project: Project, image_folder: Path) -> None:
    ids = project.add_folder(image_folder, "exp").added
    rec = project.get_image(ids[0])
    res = project.record_result(ids[0], np.ones((rec.height, rec.width), np.int32), {}, {})
    project.remove_image(ids[0])
    assert not res.exists() and rec.path.exists()  # the user's image file is never deleted
    with pytest.raises(KeyError):
        project.get_image(ids[0])


def test_relink_moved_folder(project: Project, image_folder: Path, tmp_path: Path) -> None:
    ids = project.add_folder(image_folder, "exp").added
    moved = tmp_path / "archive" / "2024" / "experiment"
    moved.parent.mkdir(parents=True)
    shutil.move(image_folder, moved)
    missing = project.missing_images()
    assert {r.id for r in missing} == set(ids)
    with pytest.raises(ImageReadError, match="relink"):
        project.read_image(ids[0])
    # The user points at one moved file; the folders to relink follow from it.
    first = missing[0]
    old_prefix, new_folder = relink_prefixes(first.path, moved / first.path.relative_to(image_folder))
    assert Path(old_prefix) == image_folder.parent and new_folder == moved.parent
    report = project.relink(old_prefix, new_folder)
    assert sorted(report.relinked) == sorted(ids) and not report.still_missing and not report.mismatched
    assert not project.missing_images()
    assert project.read_image(ids[0]).shape == (first.height, first.width)


def test_relink_refuses_a_different_file(project: Project, image_folder: Path, tmp_path: Path) -> None:
    ids = project.add_folder(image_folder, "exp").added
    new = tmp_path / "new"
    shutil.copytree(image_folder, new)
    victim = project.get_image(ids[0])
    target = new / victim.path.relative_to(image_folder)
    other = project.get_image(ids[1])
    shutil.copy(other.path, target)  # same name, other content
    (new / project.get_image(ids[2]).path.relative_to(image_folder)).unlink()
    report = project.relink(image_folder, new)
    assert [i for i, _, _ in report.mismatched] == [ids[0]]
    assert [i for i, _ in report.still_missing] == [ids[2]]
    assert sorted(report.relinked) == sorted([ids[1], ids[3]])
    assert project.get_image(ids[0]).path == victim.path  # unchanged


def test_relink_windows_paths(project: Project, image_folder: Path, tmp_path: Path) -> None:
    """A project made on Windows and opened elsewhere: backslash paths relink too."""
    ids = project.add_folder(image_folder, "exp").added
    with project._store.tx() as conn:
        for i in ids:
            rel = project.get_image(i).path.relative_to(image_folder)
            conn.execute("UPDATE images SET path = ? WHERE id = ?", ("C:\\Users\\lab\\Data\\" + "\\".join(rel.parts), i))
    assert len(project.missing_images()) == 4
    old_prefix, new_folder = relink_prefixes("C:\\Users\\lab\\Data\\plate1\\x.tif", image_folder / "plate1" / "x.tif")
    assert old_prefix == "C:\\Users\\lab\\Data" and new_folder == image_folder
    report = project.relink("c:\\users\\LAB\\data\\", image_folder)
    assert len(report.relinked) == 4 and not project.missing_images()


def test_project_inside_the_image_folder(tmp_path: Path, image_folder: Path) -> None:
    """A project made in the user's own image folder: images are relative (the whole folder can
    move) and removing one from the project never deletes the user's file."""
    with Project.create(image_folder) as p:
        ids = p.add_folder(image_folder, "all").added
        rec = p.get_image(ids[0])
        assert rec.inside_project and not rec.stored_path.startswith("images/")
        p.remove_image(ids[0])
        assert rec.path.is_file()
    moved = tmp_path / "moved"
    shutil.move(image_folder, moved)
    with Project.open(moved) as p:
        assert len(p.list_images()) == 3 and not p.missing_images()


def test_copy_in_keeps_different_files_of_the_same_name(project: Project, image_folder: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "plate1", tmp_path / "b" / "plate1"
    src = sorted((image_folder / "plate1").glob("*.tif"))
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    shutil.copy(src[0], a / "img.tif")
    shutil.copy(src[1], b / "img.tif")
    assert project.add_folder(a, "s", copy=True).n_added == 1
    second = project.add_folder(b, "s", copy=True)
    assert second.n_added == 1 and second.duplicates == 0
    assert project.get_image(second.added[0]).path.name == "img_2.tif"
    again = project.add_folder(b, "s", copy=True)  # the very same file again: a duplicate
    assert again.n_added == 0 and again.duplicates == 1
    shas = {r.sha256 for r in project.list_images("s")}
    assert len(shas) == 2

"""Multi-scene files in a project: one image per scene, named ``file [scene]``; an older project
(format 1) is migrated without losing its annotations."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from efficell_app.core.images import PlaneChoice, read_image
from efficell_app.project import Project
from efficell_app.project.store import DB_NAME, MIGRATIONS


def test_multi_scene_files_become_one_image_per_scene(project: Project, formats_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "acquisitions"
    folder.mkdir()
    # The Micro-Manager file keeps its name: its OME-XML refers to it (../shared/formats/README.md).
    for name in ("czi/S3_1Pos_2Mosaic_T1_Z1_CH1.czi", "ome-tiff/181003_multi_pos_time_course_1_MMStack.ome.tif",
                 "nd2/example-cerevisiae.nd2", "lif/testdata_2channel_xz.lif"):
        shutil.copy(formats_dir / name, folder / Path(name).name)
    report = project.add_folder(folder, "plate", planes=PlaneChoice(t=0))
    recs = project.list_images("plate")
    by_name = {r.name: r for r in recs}
    assert sorted(by_name) == sorted([
        "S3_1Pos_2Mosaic_T1_Z1_CH1.czi [TR1]", "S3_1Pos_2Mosaic_T1_Z1_CH1.czi [P1]", "S3_1Pos_2Mosaic_T1_Z1_CH1.czi [TR2]",
        "181003_multi_pos_time_course_1_MMStack.ome.tif [scene 0]",
        "181003_multi_pos_time_course_1_MMStack.ome.tif [scene 1]", "example-cerevisiae.nd2"])
    assert report.n_added == 6
    # each XZ scan of the LIF is skipped with the reason, named by its scene
    skipped = {str(p): why for p, why in report.skipped}
    assert sorted(skipped) == sorted(f"{folder / 'testdata_2channel_xz.lif'} [{s}]" for s in ("xzt", "xzy", "xz"))
    assert all("XZ scan" in why and "not supported" in why for why in skipped.values())
    tr2 = by_name["S3_1Pos_2Mosaic_T1_Z1_CH1.czi [TR2]"]
    assert (tr2.scene, tr2.scene_name, tr2.height, tr2.width, tr2.pixel_size_um) == (2, "TR2", 237, 352, 1.6)
    assert by_name["example-cerevisiae.nd2"].scene is None
    for rec in recs:  # reading an image reads its own scene
        img = project.read_image(rec.id)
        assert img.shape == (rec.height, rec.width)
        np.testing.assert_array_equal(img.data, read_image(rec.path, PlaneChoice(t=0), scene=rec.scene).data)
    pos = [by_name[f"181003_multi_pos_time_course_1_MMStack.ome.tif [scene {k}]"] for k in (0, 1)]
    assert not np.array_equal(project.read_image(pos[0].id).data, project.read_image(pos[1].id).data)
    # adding the folder again adds nothing: every scene is already there
    again = project.add_folder(folder, "plate", planes=PlaneChoice(t=0))
    assert again.n_added == 0 and again.duplicates == 6


def test_stacks_without_a_plane_choice_are_reported_per_file_with_every_scene(project: Project,
                                                                             formats_dir: Path) -> None:
    """Added without a plane choice, a multi-scene time course and an ND2 z-stack time series are
    listed in ``report.stacks`` once per file with all their axes; they are no problems yet."""
    mm = formats_dir / "ome-tiff/181003_multi_pos_time_course_1_MMStack.ome.tif"  # 2 positions of T10
    cluster = formats_dir / "nd2/cluster.nd2"  # T3 Z10
    report = project.add_files([mm, cluster], "stacks")
    assert report.n_added == 0 and report.stacks == {mm: {"T": 10}, cluster: {"Z": 10, "T": 3}}
    assert report.n_skipped == 3 and report.problems() == []  # both scenes of the time course, and the ND2
    again = project.add_files(sorted(report.stacks), "stacks", planes=PlaneChoice(z="max", t=0))
    assert again.n_added == 3 and again.stacks == {} and again.skipped == []


def test_format_1_project_is_migrated_and_keeps_its_annotations(tmp_path: Path, dsb_pairs) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(dsb_pairs[0][0], folder / "a.tif")
    root = tmp_path / "old"
    with Project.create(root) as p:
        image_id = p.add_folder(folder, "s").added[0]
        rec = p.get_image(image_id)
        labels = np.zeros((rec.height, rec.width), np.int32)
        labels[2:9, 3:8] = 1
        p.save_annotation(image_id, labels)
    # Turn the index back into format 1, as an EffiCell before scenes wrote it.
    conn = sqlite3.connect(root / DB_NAME)
    conn.execute("PRAGMA foreign_keys=OFF")
    cols = ("id, set_id, path, size, mtime, quick_hash, sha256, width, height, channels, channel_names, "
            "pixel_size_um, rgb, planes, status, added")
    conn.execute(f"CREATE TABLE old AS SELECT {cols} FROM images")
    conn.execute("DROP TABLE images")
    conn.executescript("""CREATE TABLE images (
            id INTEGER PRIMARY KEY, set_id INTEGER NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
            path TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL, quick_hash TEXT NOT NULL, sha256 TEXT,
            width INTEGER NOT NULL, height INTEGER NOT NULL, channels INTEGER NOT NULL,
            channel_names TEXT NOT NULL DEFAULT '[]', pixel_size_um REAL, rgb INTEGER NOT NULL DEFAULT 0,
            planes TEXT, status TEXT NOT NULL DEFAULT 'new', added TEXT NOT NULL, UNIQUE (set_id, path));""")
    conn.execute(f"INSERT INTO images({cols}) SELECT {cols} FROM old")
    conn.execute("DROP TABLE old")
    conn.execute("DROP TABLE copies")  # and the tables of later formats (schema 3)
    conn.execute("DROP TABLE file_journal")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Project.open(root) as p:
        assert int(p._store.conn.execute("PRAGMA user_version").fetchone()[0]) == len(MIGRATIONS)
        rec = p.get_image(image_id)
        assert rec.scene is None and rec.name == "a.tif"
        np.testing.assert_array_equal(p.load_annotation(image_id), labels)  # not cascade-deleted by the rebuild
        assert p.add_folder(folder, "s").duplicates == 1
    assert (root / f"{DB_NAME}.bak-v1").is_file()


@pytest.mark.parametrize("scene", [None, 0])
def test_single_scene_file_is_one_image(project: Project, dsb_pairs, tmp_path: Path, scene) -> None:  # noqa: ANN001
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(dsb_pairs[0][0], folder / "x.tif")
    (rid,) = project.add_folder(folder, "s").added
    assert project.get_image(rid).scene is None
    assert read_image(folder / "x.tif", scene=scene).scene is None


def test_export_file_names_keep_scenes_apart() -> None:
    from efficell_app.tasks.export import file_stem

    assert file_stem("plate.czi [TR1]") == "plate_TR1"
    assert file_stem("run.ome.tif [scene 0]") == "run_scene 0"
    assert file_stem("a b.ome.tif") == "a b"

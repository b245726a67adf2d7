"""Settings > Run on: this computer, a local Dask cluster, a scheduler or a job queue; with a
cluster chosen, a dropped folder is segmented there and shown as a local run's."""

from __future__ import annotations

from pathlib import Path

import pytest
from gui_helpers import drop, wait_run_done

pytestmark = pytest.mark.gui


@pytest.mark.parametrize(("spec", "kind", "detail"), [("", "", ""), ("local", "local", ""), ("local:3", "local", "3"),
                                                      ("tcp://10.0.0.5:8786", "scheduler", "tcp://10.0.0.5:8786"),
                                                      ("slurm:4", "queue", "slurm:4")])
def test_run_on_shows_and_returns_the_spec(qtbot, spec: str, kind: str, detail: str) -> None:
    from efficell_app.gui.dialogs.settings_dialog import SettingsDialog
    from efficell_app.gui.settings import Preferences

    dlg = SettingsDialog(Preferences(run_on=spec))
    qtbot.addWidget(dlg)
    assert (dlg.run_on.currentData(), dlg.run_on_detail.text()) == (kind, detail)
    assert dlg.preferences().run_on == spec
    assert dlg._ok.isEnabled() and dlg.run_on_detail.isEnabled() == bool(kind)


def test_run_on_refuses_what_is_not_a_cluster(qtbot) -> None:
    from efficell_app.gui.dialogs.settings_dialog import SettingsDialog
    from efficell_app.gui.settings import Preferences

    dlg = SettingsDialog(Preferences())
    qtbot.addWidget(dlg)
    dlg.run_on.setCurrentIndex(dlg.run_on.findData("queue"))
    dlg.run_on_detail.setText("condor")
    assert dlg.run_on_spec() is None and not dlg._ok.isEnabled() and "Not understood" in dlg.run_on_hint.text()
    dlg.run_on.setCurrentIndex(dlg.run_on.findData("local"))
    dlg.run_on_detail.setText("two")
    assert not dlg._ok.isEnabled()
    dlg.run_on_detail.setText("2")
    assert dlg._ok.isEnabled() and dlg.preferences().run_on == "local:2"
    dlg.run_on.setCurrentIndex(dlg.run_on.findData(""))
    assert dlg._ok.isEnabled() and dlg.preferences().run_on == ""


@pytest.mark.slow
def test_a_dropped_folder_is_segmented_on_the_cluster(qtbot, window, image_folder: Path, dask_client) -> None:
    window.prefs.run_on = dask_client.scheduler.address
    drop(window, image_folder)
    qtbot.waitUntil(lambda: window.session.project is not None, timeout=10_000)
    project = window.session.project
    qtbot.waitUntil(lambda: len(project.list_images()) == 2, timeout=20_000)
    wait_run_done(qtbot, window, timeout=180_000)
    recs = project.list_images()
    assert all(r.status == "segmented" for r in recs)
    assert all(window.project_panel.status_of(r.id) == "segmented" for r in recs)
    run = project.list_runs()[-1]
    assert run.settings["cluster"].startswith(dask_client.scheduler.address) and run.n_results == 2
    labels = window.viewer.labels()
    assert labels is not None and labels.shape == (recs[0].height, recs[0].width)
    assert window.problems.count() == 0

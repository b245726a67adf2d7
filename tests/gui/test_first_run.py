"""First run: the welcome dialog (first start only) and Help → Open sample project."""

from __future__ import annotations

from pathlib import Path

import pytest
from gui_helpers import wait_run_done

from efficell_app.gui.dialogs import welcome_dialog
from efficell_app.gui.settings import (
    Preferences,
    add_recent_project,
    set_welcome_wanted,
    welcome_wanted,
)
from efficell_app.project import Project
from efficell_app.samples import (
    create_sample_project,
    default_sample_project_dir,
    sample_images,
)

pytestmark = pytest.mark.gui
SAMPLE_NAMES = sorted(img.name for img, _, _ in sample_images())


@pytest.fixture()
def first_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first start: the welcome is allowed again (the GUI conftest turns it off)."""
    monkeypatch.delenv("EFFICELL_NO_WELCOME", raising=False)


@pytest.fixture()
def new_window(qtbot):
    """Make main windows as the app does at start (CPU, no auto-segment); closed after the test."""
    from efficell_app.gui.main_window import MainWindow

    made = []

    def make() -> MainWindow:
        win = MainWindow(Preferences(device="cpu", threads=1, auto_segment=False), restore_state=False)
        qtbot.addWidget(win)
        win.show()
        made.append(win)
        return win

    yield make
    for win in made:
        win.session.close_project(emit=False)
        win.stop_background_work()


def _listed(window) -> list[str]:
    project = window.session.project
    return sorted(project.get_image(i).path.name for i in window.project_panel.image_ids())


def test_welcome_on_first_start_only(qtbot, first_start, new_window, tmp_path: Path) -> None:
    win = new_window()
    qtbot.waitUntil(lambda: win.welcome_dialog is not None and win.welcome_dialog.isVisible(), timeout=5_000)
    dlg = win.welcome_dialog
    assert not dlg.isModal()  # the window behind it stays usable
    texts = [b.text() for b in (dlg.sample_button, dlg.open_button, dlg.new_button, dlg.dont_show_button)]
    assert texts == ["Open sample project", "Open project…", "New project…", "Don't show again"]
    dlg.dont_show_button.click()
    assert not dlg.isVisible() and not welcome_wanted()
    again = new_window()
    qtbot.wait(100)  # the start-up timers have run
    assert again.welcome_dialog is None
    # shown again only when asked for; never once a project has been opened
    set_welcome_wanted(True)
    assert again.show_welcome_if_first_run() is not None
    again.welcome_dialog.close()
    add_recent_project(tmp_path)
    assert not welcome_wanted() and new_window().show_welcome_if_first_run() is None


def test_welcome_off_in_tests_and_scripts(qtbot, new_window) -> None:
    win = new_window()  # EFFICELL_NO_WELCOME is set (conftest)
    qtbot.wait(100)
    assert win.welcome_dialog is None and win.show_welcome_if_first_run() is None


@pytest.mark.slow
def test_open_sample_project_from_the_welcome(qtbot, first_start, window) -> None:
    dlg = window.show_welcome_if_first_run()
    assert dlg is not None
    dlg.sample_button.click()
    assert not dlg.isVisible()
    qtbot.waitUntil(lambda: window.session.project is not None, timeout=30_000)
    project = window.session.project
    assert project.root == default_sample_project_dir() and project.name == "EffiCell sample project"
    assert _listed(window) == SAMPLE_NAMES
    assert window.current_image is not None  # the first image is shown, with its annotation
    assert window.viewer.labels() is not None and window.viewer.labels().max() > 0
    # auto-segment is on in this window: the model segments the sample images
    wait_run_done(qtbot, window, timeout=120_000)
    assert all(project.latest_result(i) is not None for i in window.project_panel.image_ids())
    assert not welcome_wanted()  # a project was opened: no welcome at the next start


def test_existing_sample_project_is_not_overwritten(qtbot, new_window, monkeypatch: pytest.MonkeyPatch) -> None:
    default = default_sample_project_dir()
    create_sample_project(default)
    with Project.open(default) as p:  # the user's own changes to it
        p.remove_image(p.list_images()[0].id)
    (default / "my notes.txt").write_text("mine", encoding="utf-8")
    win = new_window()
    answers = iter(["cancel", "open", "copy"])
    monkeypatch.setattr(welcome_dialog, "ask_existing", lambda _parent, folder: next(answers))
    monkeypatch.setattr(welcome_dialog, "pick_folder", lambda _parent: str(default.parent))

    assert win.open_sample_project() is None and win.session.project is None  # cancelled
    assert win.open_sample_project() is None  # "open it": the user's project, as they left it
    assert win.session.project.root == default
    assert len(_listed(win)) == len(SAMPLE_NAMES) - 1

    handle = win.open_sample_project()  # "fresh copy" in the folder that holds the existing one
    assert handle is not None
    qtbot.waitUntil(lambda: win.session.project is not None and win.session.project.root != default, timeout=30_000)
    assert win.session.project.root == default.parent / f"{default.name} (2)"
    assert _listed(win) == SAMPLE_NAMES
    win.session.close_project()
    with Project.open(default) as p:
        assert len(p.list_images()) == len(SAMPLE_NAMES) - 1
    assert (default / "my notes.txt").read_text(encoding="utf-8") == "mine"


def test_sample_goes_beside_a_folder_that_is_not_a_project(qtbot, new_window) -> None:
    default = default_sample_project_dir()
    default.mkdir(parents=True)
    (default / "notes.txt").write_text("mine", encoding="utf-8")
    win = new_window()
    assert win.open_sample_project() is not None
    qtbot.waitUntil(lambda: win.session.project is not None, timeout=30_000)
    assert win.session.project.root == default.parent / f"{default.name} (2)"
    assert sorted(p.name for p in default.iterdir()) == ["notes.txt"]
    assert _listed(win) == SAMPLE_NAMES


def test_a_failure_is_reported_in_words(qtbot, new_window, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    win = new_window()
    handle = win.open_sample_project(blocker / "Sample project")  # a file where a folder must go
    assert handle is not None
    qtbot.waitUntil(lambda: win.samples.worker is None, timeout=30_000)
    assert win.session.project is None
    problems = [win.problems.item(i).text() for i in range(win.problems.count())]
    assert len(problems) == 1 and "Traceback" not in problems[0]
    assert problems[0].startswith(f"sample project: {blocker / 'Sample project'}: cannot create the folder (")

"""Annotation in the main window: tools dock, Annotate menu and shortcuts, adapters library.

    controller = install_annotation(main_window)

adds the "Annotate" dock and menu (brush B, eraser E, fill F, polygon P, outline O, delete X,
merge M, split S, navigate V; brush size [ and ] or Ctrl+wheel; undo Ctrl+Z, redo
Ctrl+Shift+Z), the "Adapters" dock, and the training / annotate-next dialogs.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QActionGroup, QKeySequence
from PySide6.QtWidgets import QDockWidget

from .canvas import TOOLS
from .controller import AnnotationController
from .panel import TOOL_INFO, AnnotationPanel

__all__ = ["AnnotationController", "install_annotation"]


def install_annotation(window: Any) -> AnnotationController:
    """Add annotation tools, the adapters library and training to an existing main window.

    Idempotent: a window that already has them returns its controller.
    """
    from ..adapters_panel import AdaptersPanel

    existing = getattr(window, "annotation", None)
    if isinstance(existing, AnnotationController):
        return existing

    panel = AnnotationPanel()
    ctl = AnnotationController(window, panel)
    dock = QDockWidget("Annotate", window)
    dock.setObjectName("dock_annotate")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    adapters = AdaptersPanel(lambda: window.session.project, window)
    adock = QDockWidget("Adapters", window)
    adock.setObjectName("dock_adapters")
    adock.setWidget(adapters)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, adock)
    docks = getattr(window, "docks", {})
    if "Segmentation" in docks:
        # Tabified once the window is up: tabifying before show() leaves a stray tab bar (Qt 6.11 offscreen).
        def tabify() -> None:
            window.tabifyDockWidget(docks["Segmentation"], dock)
            docks["Segmentation"].raise_()
            if "Project" in docks:
                window.resizeDocks([docks["Project"], adock], [3, 1], Qt.Orientation.Vertical)

        QTimer.singleShot(0, tabify)
    if "Project" in docks:
        window.splitDockWidget(docks["Project"], adock, Qt.Orientation.Vertical)
    if hasattr(window, "docks"):
        window.docks["Annotate"] = dock
        window.docks["Adapters"] = adock
    ctl.dock, ctl.adapters_dock, ctl.adapters_panel = dock, adock, adapters
    window.annotation = ctl

    def adapters_changed() -> None:
        project = window.session.project
        if project is not None and hasattr(window, "seg_panel"):
            window.seg_panel.set_adapters(project.list_adapters())

    adapters.changed.connect(adapters_changed)
    window.session.project_changed.connect(lambda _p: adapters.refresh())

    bar = window.menuBar()
    menu = bar.addMenu("&Annotate")
    help_action = next((a for a in bar.actions() if a.text().replace("&", "") == "Help"), None)
    if help_action is not None:  # Help stays the last menu
        bar.insertMenu(help_action, menu)
    ctl.menu = menu
    for key, text in (("saved", "&Annotate this image"), ("prediction", "Start from the &prediction"),
                      ("empty", "Start &empty"), ("import", "&Import masks…")):
        window.add_menu_action(menu, text, lambda _=False, k=key: (dock.show(), dock.raise_(), ctl.start(k)))
    menu.addSeparator()
    group = QActionGroup(window)
    ctl.tool_actions = {}
    for tool in TOOLS:
        text, key, tip = TOOL_INFO[tool]
        act = window.add_menu_action(menu, text, lambda _=False, t=tool: ctl.set_tool(t), key, tip)
        act.setCheckable(True)
        group.addAction(act)
        ctl.tool_actions[tool] = act
    ctl.tool_actions["navigate"].setChecked(True)
    panel.tool_chosen.connect(lambda t: ctl.tool_actions[t].setChecked(True))
    menu.addSeparator()
    window.add_menu_action(menu, "Bigger brush", lambda: ctl.change_size(1), "]")
    window.add_menu_action(menu, "Smaller brush", lambda: ctl.change_size(-1), "[")
    window.add_menu_action(menu, "Remove last polygon corner", ctl.polygon_back, "Backspace")
    ctl.undo_action = window.add_menu_action(menu, "&Undo", ctl.undo, QKeySequence.StandardKey.Undo)
    ctl.redo_action = window.add_menu_action(menu, "&Redo", ctl.redo, "Ctrl+Shift+Z")
    menu.addSeparator()
    window.add_menu_action(menu, "&Mark annotated (use for training)", ctl.mark_annotated, "Ctrl+M")
    window.add_menu_action(menu, "&Stop annotating", ctl.stop)
    menu.addSeparator()
    window.add_menu_action(menu, "Annotate &next: suggest images…", lambda: open_suggestions(window, ctl))
    window.add_menu_action(menu, "&Train an adapter…", lambda: open_training(window, ctl), "Ctrl+T")
    menu.addAction(dock.toggleViewAction())
    menu.addAction(adock.toggleViewAction())
    panel.train_button.clicked.connect(lambda: open_training(window, ctl))
    panel.next_button.clicked.connect(lambda: open_suggestions(window, ctl))
    panel.uncertainty_box.toggled.connect(lambda on: _toggle_uncertainty(window, ctl, on))

    # Save before the project is closed (open another project, quit) and when the window closes.
    window.session.about_to_close.connect(lambda _project: ctl.save(wait=True))
    window.installEventFilter(ctl)
    return ctl


def open_training(window: Any, ctl: AnnotationController) -> Any:
    from ..training import TrainingDialog

    if window.session.project is None:
        window.statusBar().showMessage("Open a project with annotated images first", 5000)
        return None
    ctl.save(wait=True)
    dlg = TrainingDialog(window.session.project, parent=window, encoder_weights=window.session.encoder_weights,
                         device=window.prefs.device, current_image=window.current_image)
    dlg.segment_requested.connect(lambda path: _segment_with(window, ctl, path))
    ctl.training_dialog = dlg
    dlg.show()
    return dlg


def _segment_with(window: Any, ctl: AnnotationController, path: str) -> None:
    ctl.stop()
    ctl.adapters_panel.refresh()
    if window.session.project is not None:
        window.seg_panel.set_adapters(window.session.project.list_adapters())
    box = window.seg_panel.model_box
    idx = box.findData(str(path))
    if idx >= 0:
        box.setCurrentIndex(idx)
    window.segment_scope("image")


def open_suggestions(window: Any, ctl: AnnotationController) -> Any:
    from .suggest import SuggestDialog

    if window.session.project is None:
        window.statusBar().showMessage("Open a project first", 5000)
        return None
    dlg = SuggestDialog(window, parent=window)
    ctl.suggest_dialog = dlg
    dlg.show()
    dlg.start()
    return dlg


def _toggle_uncertainty(window: Any, ctl: AnnotationController, on: bool) -> None:
    from .suggest import UncertaintyOverlay

    ov = getattr(ctl, "uncertainty_overlay", None)
    if ov is None:
        ov = ctl.uncertainty_overlay = UncertaintyOverlay(window)
    ov.set_enabled(on)

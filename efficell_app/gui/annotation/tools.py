"""The annotation widgets a window composes: the tools panel, the adapters library, the Annotate menu,
the training and "annotate next" dialogs and the per-cell uncertainty layer.

:class:`AnnotationTools` is built from what it needs (the viewer, the session, a way to ask for
the current image) and tells the window what to do through signals; it sets nothing on the
window and asks it nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu, QWidget

from ..adapters_panel import AdaptersPanel
from .canvas import TOOLS
from .controller import AnnotationController
from .panel import TOOL_INFO, AnnotationPanel

if TYPE_CHECKING:
    from ..session import Session
    from ..viewer import ImageViewer


class AnnotationTools(QObject):
    """Annotation, adapters and training for one window.

    Widgets to place: ``panel`` (the Annotate dock) and ``adapters_panel`` (the Adapters dock).
    Signals: ``message(text)`` for the status bar; ``panel_wanted()`` to show the tools panel;
    ``segment_with(adapter path)`` when the user asks to segment the current image with a new
    adapter; ``image_requested(image id)`` to show an image. A change to the project's adapter
    library (training, import, rename, delete) goes through ``session.reload_adapters()``, so
    every list of adapters in the window shows it at once.
    """

    message = Signal(str)
    panel_wanted = Signal()  # the user started annotating from the menu: show the tools panel
    segment_with = Signal(str)
    image_requested = Signal(int)

    def __init__(self, viewer: ImageViewer, session: Session, current_image: Callable[[], int | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._parent = parent
        self.viewer, self.session, self._current_image = viewer, session, current_image
        self.panel = AnnotationPanel()
        self.controller = AnnotationController(viewer, session, current_image, self.panel, self)
        self.adapters_panel = AdaptersPanel(lambda: session.project, parent)
        self.tool_actions: dict[str, QAction] = {}
        self.training_dialog: Any = None
        self.suggest_dialog: Any = None
        self.uncertainty_overlay: Any = None
        self.controller.message.connect(self.message)
        self.adapters_panel.changed.connect(session.reload_adapters)
        session.adapters_changed.connect(lambda _adapters: self.adapters_panel.refresh())
        self.panel.train_button.clicked.connect(self.open_training)
        self.panel.next_button.clicked.connect(self.open_suggestions)
        self.panel.uncertainty_box.toggled.connect(self.show_uncertainty)

    # ------------------------------------------------------------------ menu
    def fill_menu(self, menu: QMenu) -> None:
        """The Annotate menu: how to start, the tools with their shortcuts, undo/redo, training."""
        ctl = self.controller

        def add(text: str, slot: Callable[[], Any], shortcut: Any = None, tip: str = "") -> QAction:
            act = QAction(text, menu)
            if shortcut is not None:
                act.setShortcut(QKeySequence(shortcut))
            if tip:
                act.setStatusTip(tip)
            act.triggered.connect(lambda _=False: slot())
            menu.addAction(act)
            return act

        for key, text in (("saved", "&Annotate this image"), ("prediction", "Start from the &prediction"),
                          ("empty", "Start &empty"), ("import", "&Import masks…")):
            add(text, lambda k=key: self.start(k))
        menu.addSeparator()
        group = QActionGroup(menu)
        for tool in TOOLS:
            text, key, tip = TOOL_INFO[tool]
            act = add(text, lambda t=tool: ctl.set_tool(t), key, tip)
            act.setCheckable(True)
            group.addAction(act)
            self.tool_actions[tool] = act
        self.tool_actions["navigate"].setChecked(True)
        self.panel.tool_chosen.connect(lambda t: self.tool_actions[t].setChecked(True))
        menu.addSeparator()
        add("Bigger brush", lambda: ctl.change_size(1), "]")
        add("Smaller brush", lambda: ctl.change_size(-1), "[")
        add("Remove last polygon corner", ctl.polygon_back, "Backspace")
        add("&Undo", ctl.undo, QKeySequence.StandardKey.Undo)
        add("&Redo", ctl.redo, "Ctrl+Shift+Z")
        menu.addSeparator()
        add("&Mark annotated (use for training)", ctl.mark_annotated, "Ctrl+M")
        add("&Stop annotating", ctl.stop)
        menu.addSeparator()
        add("Annotate &next: suggest images…", self.open_suggestions)
        add("&Train an adapter…", self.open_training, "Ctrl+T")

    def start(self, source: str) -> bool:
        """Start annotating the current image from ``source`` (see ``AnnotationController.start``)."""
        self.panel_wanted.emit()
        return self.controller.start(source)

    def shutdown(self) -> None:
        """Save and wait for the write (the window is closing)."""
        self.controller.shutdown()

    # ------------------------------------------------------------------ dialogs
    def open_training(self) -> Any:
        from ..training import TrainingDialog

        if self.session.project is None:
            self.message.emit("Open a project with annotated images first")
            return None
        self.controller.save(wait=True)
        dlg = TrainingDialog(self.session.project, parent=self._parent, encoder_weights=self.session.encoder_weights,
                             device=self.session.prefs.device, current_image=self._current_image)
        dlg.adapter_added.connect(self._adapter_trained)
        dlg.segment_requested.connect(self._segment_with)
        self.training_dialog = dlg
        dlg.show()
        return dlg

    def _adapter_trained(self, info: Any) -> None:
        """A run of the training dialog put a new adapter in the project: list it everywhere now."""
        self.session.reload_adapters()
        self.adapters_panel.select(info.id)
        self.message.emit(f"Adapter '{info.name}' added to the project: choose it under Segmentation > Model, "
                          "or click \"Segment with it now\"")

    def _segment_with(self, path: str) -> None:
        self.controller.stop()
        self.segment_with.emit(str(path))

    def open_suggestions(self) -> Any:
        from .suggest import SuggestDialog

        if self.session.project is None:
            self.message.emit("Open a project first")
            return None
        dlg = SuggestDialog(self.session, parent=self._parent)
        dlg.open_requested.connect(self.image_requested)
        self.suggest_dialog = dlg
        dlg.show()
        dlg.start()
        return dlg

    def show_uncertainty(self, on: bool) -> None:
        from .suggest import UncertaintyOverlay

        if self.uncertainty_overlay is None:
            self.uncertainty_overlay = UncertaintyOverlay(self.viewer, self.session, self._current_image, self)
        self.uncertainty_overlay.set_enabled(on)

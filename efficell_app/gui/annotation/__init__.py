"""Annotation in the window: tools panel, Annotate menu and shortcuts, adapters library, training.

The main window composes one :class:`AnnotationTools`::

    self.annotation = AnnotationTools(self.viewer, self.session, lambda: self.current_image, parent=self)
    dock(self.annotation.panel) ; dock(self.annotation.adapters_panel) ; self.annotation.fill_menu(menu)

and connects its signals (``message``, ``segment_with``, ``image_requested``). Tools: brush B,
eraser E, fill F, polygon P, outline O, delete X, merge M, split S, navigate V (the default:
no tool edits until the user picks one); brush size [ and ] or Ctrl+wheel; undo Ctrl+Z, redo Ctrl+Shift+Z.
"""

from __future__ import annotations

from .controller import AnnotationController
from .tools import AnnotationTools

__all__ = ["AnnotationController", "AnnotationTools"]

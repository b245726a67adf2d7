"""The desktop window (PySide6 + pyqtgraph): the only Qt code in EffiCell.

``app.main`` starts it; ``main_window`` wires the panels, the viewer, the dialogs and the
background workers together. Long work runs in the core's generators inside
:mod:`efficell_app.gui.workers`; no slot calls a model directly.
"""

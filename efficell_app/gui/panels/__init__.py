"""Dockable panels of the main window: project, segmentation settings, measurements."""

"""Dialogs: export, models (encoder weights), application settings."""

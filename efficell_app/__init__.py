"""EffiCell: segment, measure and few-shot train cell segmentation on a frozen encoder."""

__version__ = "0.1.0"

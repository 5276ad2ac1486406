"""Converting the authors' TensorFlow checkpoint into thead weights, without TensorFlow."""

from thead.convert.bundle import TensorBundle, find_checkpoint_prefix
from thead.convert.lsr import ConversionReport, convert_checkpoint, thead_name

__all__ = ["ConversionReport", "TensorBundle", "convert_checkpoint", "find_checkpoint_prefix", "thead_name"]

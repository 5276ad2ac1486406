"""thead: few-shot talking-head synthesis and personal avatars.

A PyTorch implementation of LSR, "Learned Spatial Representations for Few-shot Talking-Head
Synthesis" (Meshry, Suri, Davis, Shrivastava; ICCV 2021).
"""

__version__ = "0.1.0"

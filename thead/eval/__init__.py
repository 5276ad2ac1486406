"""``thead eval``: the paper's evaluation protocol (ref §7) and its metrics.

- ``metrics``: PSNR, SSIM as scikit-image computes them (batched torch);
- ``lpips``: LPIPS v0.1 AlexNet; ``fid``: Inception-v3 pool3 + Fréchet distance;
- ``idsim``: VGG-Face fc8 (the paper's) or dlib embeddings; ``nmke``: landmark error (Bi-layer/LPD);
- ``protocol``: ``evaluate``, one loop: test set -> frames -> scores, from
  ``testset`` (FSTH layout, K shots, input checks), ``frames`` (``FrameSource``: ``LSRFrames``
  rendered with a frame cache, or ``OutputFrames`` read from an ``--outputs`` folder) and
  ``scoring`` (``Scorer``, result rows);
- ``report``: Table 1 layout, JSON, CSV, Figure-6 plots.

Submodules import their networks lazily; ``from thead.eval import evaluate`` is cheap.
"""

from thead.eval.protocol import EvalOptions, EvalResult, RunKey, evaluate, load_testset, shot_indices
from thead.eval.report import write_report

__all__ = ["EvalOptions", "EvalResult", "RunKey", "evaluate", "load_testset", "shot_indices", "write_report"]

"""``thead eval``'s run-time options and names, importable without torch (the CLI reads its
defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from thead.errors import UsageError

MetricName = Literal["psnr", "ssim", "lpips", "idsim", "nmke", "fid"]
METRICS: tuple[MetricName, ...] = ("psnr", "ssim", "lpips", "idsim", "nmke", "fid")
METRIC_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "idsim": "ID-SIM", "nmke": "NMKE", "fid": "FID"}
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "idsim": True, "nmke": False, "fid": False}

IdModel = Literal["vggface", "dlib"]
DlibAlignment = Literal[68, 5]
NMKENormalization = Literal["eye_centers", "outer_eye_corners"]
DetectorKind = Literal["auto", "fan", "dlib"]

@dataclass(frozen=True)
class EvalOptions:
    """How ``thead eval`` runs; the only source of its defaults."""

    shots: tuple[int, ...] = (1, 4, 8, 32)
    finetune: bool = False
    id_model: IdModel = "vggface"
    id_alignment: DlibAlignment = 68  # dlib ID-SIM only
    nmke_normalization: NMKENormalization = "eye_centers"
    detector: DetectorKind = "auto"  # landmark detector (thead.faces.make_detector)
    metrics: tuple[MetricName, ...] = METRICS
    people: tuple[str, ...] = ()  # empty: everyone in the test set
    max_frames: int | None = None  # per person (smoke runs, benchmarks); None: all test frames
    dataset_contours: bool = True  # use the set's 000NN_contour.png when present
    batch_size: int = 8
    device: str = "cpu"
    allow_download: bool = True  # fetch missing metric weights from their publishers
    output_dir: Path = Path("thead-eval")

    def __post_init__(self) -> None:
        if not self.shots or any(k < 1 for k in self.shots):
            raise UsageError(f"shots must be positive integers, got {self.shots}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise UsageError(f"unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError("max_frames must be at least 1")
        if self.batch_size < 1:
            raise UsageError("batch_size must be at least 1")

"""ID-SIM: cosine similarity between face-recognition embeddings of the real and generated frame.

Two embedders:
- ``VGGFaceEmbedder`` (the paper's, ref §7): the flattened VGG-Face fc8 logits (2622-d,
  pre-softmax) of the **full 224x224 frame** — no crop, no alignment — with the Keras "caffe"
  preprocessing (BGR, ImageNet means) that ``thead.nn.backbones.vgg.VGGFace`` applies.
- ``DlibEmbedder``: dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1``,
  128-d, from ``face_recognition_models``; works offline) on a 150x150 chip aligned by
  ``dlib.get_face_chip`` from 68 (or 5) landmarks. As in Bi-layer's CSIM, both frames are aligned
  with the **ground-truth** frame's landmarks: the generated frame was driven by them, so its face
  is in the same place, and a garbled result cannot dodge the metric by failing detection.

Raw dlib descriptors are not centred, so different people still score ~0.85 (same person ~0.96
on VoxCeleb frames); compare methods, not absolute values, across embedders.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from thead.errors import WeightsError
from thead.eval.options import DlibAlignment, IdModel
from thead.eval.weights import WeightsUnavailable


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of [N, D] arrays, float64 [N]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class IdentityEmbedder(Protocol):
    name: str

    def embed(self, images: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        """uint8 HxWx3 frames + the reference (ground-truth) 68x2 landmarks -> [N, D]."""
        ...


class VGGFaceEmbedder:
    """VGG-Face fc8 logits of the full frame (the landmarks are not used)."""

    name = "VGG-Face fc8 (full frame)"

    def __init__(self, model, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)

    @classmethod
    def pretrained(cls, *, device="cpu", allow_download: bool = True) -> VGGFaceEmbedder:
        from thead.assets import load_vgg_face

        try:
            return cls(load_vgg_face(allow_download=allow_download), device)
        except WeightsError as e:
            raise WeightsUnavailable(f"VGG-Face weights unavailable: {e}") from None

    def embed(self, images: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
        with torch.inference_mode():
            return self.model.logits(x).double().cpu().numpy()


class DlibEmbedder:
    """dlib ResNet descriptor (128-d) on chips aligned with the reference landmarks."""

    def __init__(self, alignment: DlibAlignment = 68, chip_size: int = 150, padding: float = 0.25):
        import dlib

        from thead.faces.landmarks import dlib_models_dir

        models = dlib_models_dir()
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(_need(models / "dlib_face_recognition_resnet_model_v1.dat")))
        self._sp5 = dlib.shape_predictor(str(_need(models / "shape_predictor_5_face_landmarks.dat"))) if alignment == 5 else None
        self.alignment = alignment
        self.chip_size = chip_size
        self.padding = padding
        self.name = f"dlib ResNet ({alignment}-point alignment)"

    def _shape(self, image: np.ndarray, landmarks: np.ndarray):
        dlib = self._dlib
        x0, y0 = np.floor(landmarks.min(axis=0)).astype(int)
        x1, y1 = np.ceil(landmarks.max(axis=0)).astype(int)
        rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
        if self._sp5 is not None:
            return self._sp5(image, rect)
        return dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])

    def chips(self, images: list[np.ndarray], landmarks: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for image, lms in zip(images, landmarks):
            image = np.ascontiguousarray(image)
            out.append(self._dlib.get_face_chip(image, self._shape(image, lms), self.chip_size, self.padding))
        return out

    def embed(self, images: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        chips = self.chips(images, landmarks)
        return np.array([np.asarray(self._net.compute_face_descriptor(c)) for c in chips], np.float64)


def _need(path):
    if not path.is_file():
        raise WeightsError(f"dlib model {path} is missing (reinstall face-recognition-models)")
    return path


def make_embedder(kind: IdModel, *, alignment: DlibAlignment = 68, device="cpu", allow_download: bool = True):
    """``vggface`` (``WeightsUnavailable`` offline) or ``dlib`` (always available)."""
    if kind == "dlib":
        return DlibEmbedder(alignment=alignment)
    if kind == "vggface":
        return VGGFaceEmbedder.pretrained(device=device, allow_download=allow_download)
    raise ValueError(f"unknown ID-SIM model {kind!r}")

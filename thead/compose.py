"""Compositing the rendered 224 px crops into output frames: paste-back into the avatar's photo
(``PasteBack``), the driver beside the result (``side_by_side``), even sides for H.264
(``even_size``)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from thead.errors import AvatarError


def _affine_data(out_to_in: np.ndarray, x0: int = 0, y0: int = 0) -> tuple[float, ...]:
    """PIL ``AFFINE`` data for a map from output pixel centres (offset by x0, y0) to input
    pixel centres; PIL works in corner coordinates (centre + 0.5)."""
    a, t = out_to_in[:2, :2], out_to_in[:2, 2]
    c = a @ np.array([x0 - 0.5, y0 - 0.5]) + t + 0.5
    return (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1])


class PasteBack:
    """Composite 224 crops into the avatar's photo with a feathered square mask.

    The rendered crop is warped into the photo by the crop's inverse affine (bilinear) and
    blended with a mask that is 1 inside the crop and falls smoothly to 0 over ``feather`` of
    the crop side at its edges, so the rendered background melts into the photo. Only the
    photo region under the crop is touched.
    """

    def __init__(self, photo: np.ndarray, photo_to_crop: np.ndarray, crop_size: int = 224, feather: float = 0.08):
        self.photo = np.ascontiguousarray(photo)
        self.photo_to_crop = photo_to_crop
        h, w = photo.shape[:2]
        corners = np.array([[-0.5, -0.5], [crop_size - 0.5, -0.5], [-0.5, crop_size - 0.5], [crop_size - 0.5, crop_size - 0.5]])
        to_photo = np.linalg.inv(photo_to_crop)
        pts = corners @ to_photo[:2, :2].T + to_photo[:2, 2]
        x0, y0 = max(int(np.floor(pts[:, 0].min())), 0), max(int(np.floor(pts[:, 1].min())), 0)
        x1, y1 = min(int(np.ceil(pts[:, 0].max())) + 1, w), min(int(np.ceil(pts[:, 1].max())) + 1, h)
        if x1 <= x0 or y1 <= y0:
            raise AvatarError("the avatar's crop lies outside its photo; paste-back is not possible")
        self.region = (x0, y0, x1, y1)
        self._data = _affine_data(photo_to_crop, x0, y0)
        # The mask, evaluated at each region pixel's position in the crop.
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        u = photo_to_crop[0, 0] * xs + photo_to_crop[0, 1] * ys + photo_to_crop[0, 2]
        v = photo_to_crop[1, 0] * xs + photo_to_crop[1, 1] * ys + photo_to_crop[1, 2]
        edge = np.minimum.reduce([u + 0.5, v + 0.5, crop_size - 0.5 - u, crop_size - 0.5 - v])
        ramp = np.clip(edge / max(feather * crop_size, 1e-6), 0.0, 1.0)
        self.mask = (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)[..., None]  # smoothstep
        self._base = self.photo[y0:y1, x0:x1].astype(np.float32)

    @property
    def size(self) -> tuple[int, int]:
        return self.photo.shape[1], self.photo.shape[0]

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.region
        warped = Image.fromarray(crop).transform((x1 - x0, y1 - y0), Image.Transform.AFFINE, self._data, Image.Resampling.BILINEAR)
        blended = self._base + self.mask * (np.asarray(warped, np.float32) - self._base)
        out = self.photo.copy()
        out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return out


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left`` scaled to ``right``'s height (keeping its aspect), then both side by side."""
    h = right.shape[0]
    if left.shape[0] != h:
        w = max(1, round(left.shape[1] * h / left.shape[0]))
        left = np.asarray(Image.fromarray(left).resize((w, h), Image.Resampling.BILINEAR))
    return np.concatenate([left, right], axis=1)


def even_size(image: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: repeat the last row/column where one is odd."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")

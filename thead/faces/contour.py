"""The landmark ``contour`` drawing the networks see, bit-exact to the authors' matplotlib code.

ref §1.3 (preprocessing/landmarks/release_landmark.py): a figure of W/100 x H/100 inches at
dpi 100 with one axes filling it, ``imshow`` of an all-zero frame (black; pixel centres at
integer coordinates), axis off, then nine open polylines in a fixed order and colour, line
width 2 pt (2.78 px), matplotlib's default anti-aliasing, caps and joins; the RGB canvas is the
drawing. The pretrained G^l and encoders consume exactly these pixels, so thead draws with
matplotlib's own Agg rasteriser rather than an approximation.

Speed: a new figure per drawing costs ~15 ms; ``ContourRenderer`` builds the figure once and
only moves its nine ``Line2D`` objects, so a drawing costs a few ms and is the same bytes. When
every point lies inside the frame (almost always) it skips the autoscaling, whose answer is then
the frame itself, and redraws only the nine lines onto a saved black canvas (blitting): ~1 ms.
One quirk is kept on purpose: ``imshow`` leaves autoscaling on, so when landmarks fall outside
the frame the authors' axes zoom out to include them (the face shrinks and the margins turn
white). The renderer re-runs the same autoscaling, so such frames match too.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

# (first, last+1) landmark index, matplotlib colour name; drawn in this order (ref §1.3 table).
CONTOUR_PARTS: tuple[tuple[int, int, str], ...] = (
    (0, 17, "green"),  # jaw line
    (17, 22, "orange"),  # brow 1
    (22, 27, "orange"),  # brow 2
    (27, 31, "blue"),  # nose bridge
    (31, 36, "blue"),  # lower nose
    (36, 42, "red"),  # eye 1
    (42, 48, "red"),  # eye 2
    (48, 60, "purple"),  # outer lip
    (60, 68, "pink"),  # inner lip
)
LINE_WIDTH_PT = 2
DPI = 100


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"a contour needs landmarks of shape (68, 2), got {pts.shape}")
    return pts


# rcParams that Agg reads while drawing (found by tracing RcParams reads during draw()); the
# rest are read when the artists are created, under the full defaults.
_DRAW_TIME_RC = (
    "agg.path.chunksize",
    "axes.autolimit_mode",
    "hatch.linewidth",
    "path.simplify",
    "path.simplify_threshold",
    "path.snap",
)


def _default_style(keys: tuple[str, ...] | None = None):
    """matplotlib's built-in defaults (the authors' rc), whatever the user's matplotlibrc says;
    only ``keys`` when given (setting all ~330 costs ~0.5 ms; keys already at their defaults
    are left alone)."""
    import matplotlib as mpl

    names = [k for k in mpl.rcParamsDefault if k != "backend"] if keys is None else keys
    if keys is not None and all(mpl.rcParams[k] == mpl.rcParamsDefault[k] for k in names):
        return contextlib.nullcontext()
    return mpl.rc_context(rc={k: mpl.rcParamsDefault[k] for k in names})


class ContourRenderer:
    """Draws 68 landmarks as the authors' contour image, reusing one Agg canvas.

    ``draw(landmarks float[68, 2] (x, y) pixels) -> uint8 [H, W, 3]`` RGB, black background.
    ``size`` is an int (square) or ``(width, height)``. Not thread-safe across threads sharing
    one renderer (a lock serialises ``draw``); make one per worker process.
    """

    def __init__(self, size: int | tuple[int, int] = 224):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.width, self.height = (size, size) if isinstance(size, int) else size
        self._lock = threading.Lock()
        with _default_style():
            self._fig = Figure(figsize=(self.width / DPI, self.height / DPI), dpi=DPI)
            self._canvas = FigureCanvasAgg(self._fig)
            self._ax = self._fig.add_subplot(1, 1, 1)
            self._ax.imshow(np.zeros((self.height, self.width, 3)))
            self._fig.subplots_adjust(left=0, right=1, top=1, bottom=0)
            self._ax.axis("off")
            self._lines = [
                self._ax.plot([0.0], [0.0], color=colour, linewidth=LINE_WIDTH_PT)[0]
                for _, _, colour in CONTOUR_PARTS
            ]
        self._image = self._ax.get_images()[0]
        # imshow's extent: the view whenever every point lies inside the frame (sticky edges
        # stop the autoscale margins). The zero image then covers the whole canvas with opaque
        # black, the same pixels as a black figure background, and resampling it is 80% of the
        # cost of a drawing, so in that case it is hidden and the figure painted black.
        self._extent_view = ((-0.5, self.width - 0.5), (self.height - 0.5, -0.5))
        self._background = None  # the black canvas of an inside view, for blitting the lines
        self._inside = False  # the last drawing's view was the extent

    def _within_extent(self, pts: np.ndarray) -> bool:
        """All points inside the image's extent: the data limits are then the extent's, and the
        autoscaled view is the extent (the image's sticky edges stop the margins)."""
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return bool(lo[0] >= -0.5 and lo[1] >= -0.5 and hi[0] <= self.width - 0.5 and hi[1] <= self.height - 0.5)

    def draw(self, landmarks: np.ndarray) -> np.ndarray:
        pts = _check_landmarks(landmarks)
        with self._lock, _default_style(_DRAW_TIME_RC):
            for line, (a, b, _) in zip(self._lines, CONTOUR_PARTS):
                line.set_data(pts[a:b, 0], pts[a:b, 1])
            if self._inside and self._background is not None and self._within_extent(pts):
                # The view is the extent already: only the lines change, drawn onto the black
                # canvas as the full drawing draws them (same renderer, clip and order).
                self._canvas.restore_region(self._background)
                for line in self._lines:
                    self._ax.draw_artist(line)
            else:
                # Same autoscaling as a fresh figure: data limits from the image and the lines.
                self._ax.relim()
                self._ax.autoscale_view()
                inside = (tuple(self._ax.get_xlim()), tuple(self._ax.get_ylim())) == self._extent_view
                self._image.set_visible(not inside)
                self._fig.patch.set_facecolor("black" if inside else "white")
                if inside and self._background is None:
                    for line in self._lines:
                        line.set_visible(False)
                    self._canvas.draw()
                    self._background = self._canvas.copy_from_bbox(self._fig.bbox)
                    for line in self._lines:
                        line.set_visible(True)
                self._canvas.draw()
                self._inside = inside
            rgba = np.asarray(self._canvas.buffer_rgba())
            return np.array(rgba[:, :, :3])


_renderers: dict[tuple[int, int], ContourRenderer] = {}
_renderers_lock = threading.Lock()


def draw_contour(landmarks: np.ndarray, size: int | tuple[int, int] = 224) -> np.ndarray:
    """One contour drawing, uint8 [H, W, 3] (a shared ``ContourRenderer`` per size)."""
    key = (size, size) if isinstance(size, int) else tuple(size)
    with _renderers_lock:
        renderer = _renderers.get(key)
        if renderer is None:
            renderer = _renderers[key] = ContourRenderer(key)
    return renderer.draw(landmarks)

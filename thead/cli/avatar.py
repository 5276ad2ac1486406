"""``thead enroll``, ``thead animate``, ``thead demo``, ``thead avatars list|show|rm`` and
``thead motion extract``: thin wrappers over ``thead.enroll``, ``thead.animate``,
``thead.demo``, ``thead.avatar`` and ``thead.motion``."""

from __future__ import annotations

import contextlib
import enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from thead.cli._app import app, avatars_app, err_console, motion_app, out_console
from thead.cli._defaults import option_defaults
from thead.cli._options import (
    CropScale,
    Device,
    DType,
    DTypeChoice,
    Duration,
    Face,
    LandmarkChoice,
    Landmarks,
    MaxFrames,
    Motion,
    MotionChoice,
    Overwrite,
    OverwriteAvatar,
    Quiet,
    Reference,
    Start,
    Weights,
)
from thead.cli._progress import Bar
from thead.validate import check_input_file, check_new_output

# The library's defaults, shown by --help (read without importing torch: see _defaults).
_E = option_defaults("thead.enroll", "EnrollOptions")
_A = option_defaults("thead.animate", "AnimateOptions")
_D = option_defaults("thead.demo", "DemoOptions")
_C = option_defaults("thead.faces.crop", "CropOptions")
_M = option_defaults("thead.motion", "DriverOptions")


class PickChoice(str, enum.Enum):
    best = "best"
    even = "even"


def _fps(fps) -> str:
    return "" if fps is None else f"{float(fps):.4g} fps"


@app.command()
def enroll(
    source: Annotated[Path, typer.Argument(help="A photo, a folder of photos, or a video of one person.")],
    name: Annotated[str, typer.Option("--name", help="The avatar's name (letters, digits, '-', '_').")],
    shots: Annotated[int, typer.Option("--shots", min=1, max=1024, help="K: photos or video frames to encode (at most those available).")] = _E.num_shots,
    weights: Weights = None,
    landmarks: Landmarks = LandmarkChoice(_E.landmarks),
    face: Face = _C.face_index,
    crop_scale: CropScale = _C.scale,
    device: Device = _E.device,
    overwrite: OverwriteAvatar = _E.overwrite,
    one_person: Annotated[bool, typer.Option("--one-person", help="Refuse shots that show different people (by default a note says so).")] = _E.one_person,
    pick: Annotated[PickChoice, typer.Option("--pick", help="best: each shot the best of its part of the video/folder (open eyes, frontal, sharp, inside the picture); even: the authors' evenly spaced frames.")] = PickChoice(_E.pick),
    quiet: Quiet = False,
) -> None:
    """Enroll a person once: crops, landmarks and both encoders; saved in the avatar store."""
    check_input_file(source, "source")
    from thead.enroll import EnrollOptions, enroll as run
    from thead.faces import CropOptions

    options = EnrollOptions(shots, landmarks.value, CropOptions(scale=crop_scale, face_index=face), device, overwrite,
                            one_person=one_person, pick=pick.value)
    bar = Bar("enroll", quiet=quiet)  # notes only: enrolment has no count, a spinner shows it runs
    with err_console.status(f"enrolling {name}...") if bar.shown else contextlib.nullcontext():
        avatar = run(source, name, options, weights=weights, progress=bar)
    if not quiet:
        err_console.print(f"enrolled '{avatar.name}' from {avatar.num_shots} shot(s) ({avatar.info.landmarks} landmarks)", highlight=False, markup=False)


@app.command()
def animate(
    name: Annotated[str, typer.Argument(help="The avatar to animate (see thead avatars list).")],
    driver: Annotated[Path, typer.Option("--driver", help="A video, a photo, or a motion template (.npz).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output video (.mp4) or, for a photo driver, image (.png/.jpg).")],
    motion: Motion = MotionChoice(_A.motion),
    paste_back: Annotated[bool, typer.Option("--paste-back", help="Composite into the avatar's photo at its resolution.")] = _A.paste_back,
    compare: Annotated[bool, typer.Option("--compare", help="Left: the driver's 224 crop as the landmarks saw it (a motion template: its own landmarks drawn); right: the result.")] = _A.compare,
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", help="Smooth the driver's landmarks over time (One-Euro, looking ahead in files: no lag).")] = _M.smooth,
    smooth_strength: Annotated[float, typer.Option("--smooth-strength", min=0.0, max=100.0, help="0 = off, 1 = default, higher = smoother.")] = _M.smooth_strength,
    device: Device = _A.device,
    dtype: DType = DTypeChoice(_A.dtype),
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, max=256, help="Frames per render call (default: 2 on CPU, 8 on CUDA).")] = _A.batch,
    weights: Weights = None,
    landmarks: Landmarks = LandmarkChoice(_M.landmarks),
    face: Face = _C.face_index,
    crop_scale: CropScale = _C.scale,
    max_frames: MaxFrames = _M.max_frames,
    start: Start = _M.start_s,
    duration: Duration = _M.duration_s,
    reference: Reference = str(_M.reference),
    audio: Annotated[Optional[Path], typer.Option("--audio", help="Sound for the output: a motion template's, or a photo driver's (which then gives a video of the sound's length); replaces a video driver's.")] = _A.audio,
    finetuned: Annotated[bool, typer.Option("--finetuned/--no-finetuned", help="Use the avatar's fine-tuned weights when it has some.")] = _A.finetuned,
    compile: Annotated[bool, typer.Option("--compile", help="Render through torch.compile instead of the packed oneDNN path (that one is faster on the CPU; for GPUs). The first run of a batch size and dtype compiles for minutes (then cached).")] = _A.compile,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Animate an avatar with a driver; streams, keeps the driver's fps and audio."""
    check_input_file(driver, "driver")
    check_new_output(output, [driver, audio], overwrite=overwrite)
    from thead.animate import AnimateOptions, animate as run

    driver_options = _driver_options(landmarks, face, crop_scale, smooth, smooth_strength, reference, start, duration, max_frames)
    options = AnimateOptions(
        driver=driver_options, motion=motion.value, paste_back=paste_back, compare=compare, device=device,
        dtype=dtype.value, batch=batch, finetuned=finetuned, audio=audio, compile=compile,
    )
    with Bar(name, quiet=quiet, rate="fps") as bar:
        result = run(name, driver, output, options, weights=weights, progress=bar)
    _summary(result, quiet)


def _driver_options(landmarks, face, crop_scale, smooth, smooth_strength, reference, start, duration, max_frames):
    """The driver options ``animate`` and ``motion extract`` share, as one DriverOptions."""
    from thead.faces import CropOptions
    from thead.motion import DriverOptions, parse_reference

    return DriverOptions(landmarks.value, CropOptions(scale=crop_scale, face_index=face), smooth, smooth_strength,
                         reference=parse_reference(reference), start_s=start, duration_s=duration, max_frames=max_frames)


def _summary(result, quiet: bool) -> None:
    if quiet:
        return
    w, h = result.size
    parts = [f"{result.num_frames} frame(s)", f"{w}x{h}"]
    if result.fps is not None:
        parts += [_fps(result.fps), "with audio" if result.audio else "no audio"]
    if result.finetuned:
        parts.append("fine-tuned weights")
    err_console.print(f"wrote {result.output}: {', '.join(parts)} in {result.seconds:.1f} s", highlight=False, markup=False)
    if result.missing_faces:
        err_console.print(
            f"note: {result.missing_faces} driver frame(s) had no face and reused the last good landmarks", highlight=False
        )


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output video.")] = _D.output,
    weights: Weights = None,
    seconds: Annotated[float, typer.Option("--seconds", min=0.1, max=600.0, help="Length of the synthetic motion.")] = _D.seconds,
    paste_back: Annotated[bool, typer.Option("--paste-back", help="Composite into the full portrait.")] = _D.paste_back,
    device: Device = _D.device,
    dtype: DType = DTypeChoice(_D.dtype),
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Enroll scikit-image's astronaut portrait and animate it (nod, turn, blinks, speech)."""
    check_new_output(output, overwrite=overwrite)
    from thead.demo import DemoOptions, demo as run

    options = DemoOptions(output=output, seconds=seconds, paste_back=paste_back, device=device, dtype=dtype.value)
    with Bar("demo", quiet=quiet, rate="fps") as bar:
        result = run(options, weights=weights, progress=bar)
    _summary(result, quiet)


@avatars_app.command("list")
def list_avatars() -> None:
    """The enrolled avatars."""
    from thead.avatar import AvatarStore

    store = AvatarStore()
    infos = store.list()
    skipped = sorted(set(store.names()) - {i.name for i in infos})
    if skipped:
        err_console.print(f"note: skipped {len(skipped)} unreadable avatar file(s): {', '.join(skipped)} "
                          f"(thead avatars show NAME says why)", highlight=False, markup=False, soft_wrap=True)
    if not infos:
        err_console.print(f"no avatars in {store.root} (thead enroll PHOTO --name NAME)", highlight=False, markup=False)
        return
    table = Table("name", "shots", "created", "landmarks", "weights", "fine-tuned", box=None)
    for info in infos:
        cells = (info.name, str(info.num_shots), info.created, info.landmarks, info.weights_sha256[:12] or "-",
                 "yes" if store.finetuned_path(info.name).is_file() else "no")
        table.add_row(*(Text(c) for c in cells))  # Text: names and paths are not rich markup
    out_console.print(table)


@avatars_app.command("show")
def show_avatar(
    name: Annotated[str, typer.Argument(help="The avatar.")],
    image: Annotated[Optional[Path], typer.Option("--image", help="Also write a sheet (.png): each shot's crop, contour and both overlaid, and the photo with the crop window.")] = None,
) -> None:
    """One avatar's details (and, with --image, a picture of its shots)."""
    from thead.avatar import AvatarStore

    store = AvatarStore()
    info = store.info(name)
    if image is not None:
        from thead.validate import check_output
        from thead.enroll import avatar_sheet
        from thead.video import write_image

        check_output(image, "photo")
        write_image(image, avatar_sheet(store.load(name)))
        err_console.print(f"wrote {image}", highlight=False, markup=False)
    rows = {
        "name": info.name, "file": str(store.path(name)), "created": info.created, "source": info.source,
        "shots (K)": str(info.num_shots), "landmarks": info.landmarks, "crop scale": f"{info.crop_scale:g}",
        "photo": f"{info.photo_size[0]}x{info.photo_size[1]}", "latent size": str(info.z_dim),
        "weights": info.weights or "-", "weights sha256": info.weights_sha256 or "-",
        "fine-tuned": str(store.finetuned_path(name)) if store.finetuned_path(name).is_file() else "no",
    }
    for k, v in rows.items():
        out_console.print(f"{k:>15}: {v}", highlight=False, markup=False, soft_wrap=True)


@avatars_app.command("rm")
def remove_avatar(name: Annotated[str, typer.Argument(help="The avatar to delete.")]) -> None:
    """Delete an avatar (and its fine-tuned weights)."""
    from thead.avatar import AvatarStore

    for path in AvatarStore().remove(name):
        err_console.print(f"removed {path}", highlight=False, markup=False)


@motion_app.command("extract")
def extract(
    video: Annotated[Path, typer.Argument(help="The driving video.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The motion template (.npz).")],
    landmarks: Landmarks = LandmarkChoice(_M.landmarks),
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", help="Smooth the landmarks over time.")] = _M.smooth,
    smooth_strength: Annotated[float, typer.Option("--smooth-strength", min=0.0, max=100.0, help="0 = off, 1 = default.")] = _M.smooth_strength,
    face: Face = _C.face_index,
    crop_scale: CropScale = _C.scale,
    max_frames: MaxFrames = _M.max_frames,
    overwrite: Overwrite = False,
    start: Start = _M.start_s,
    duration: Duration = _M.duration_s,
    onto: Annotated[Optional[str], typer.Option("--onto", help="An avatar: save the landmarks exactly as animate would draw them for it (drives animate as they are).")] = None,
    motion: Annotated[MotionChoice, typer.Option("--motion", help="With --onto: relative or absolute, as animate's --motion.")] = MotionChoice(_A.motion),
    reference: Reference = str(_M.reference),
    quiet: Quiet = False,
) -> None:
    """Save a video's motion (landmarks, fps; no pixels) to drive avatars later."""
    check_input_file(video, "video")
    check_new_output(output, [video], overwrite=overwrite)
    from thead.enroll import notes_from_warnings
    from thead.motion import extract_motion

    options = _driver_options(landmarks, face, crop_scale, smooth, smooth_strength, reference, start, duration, max_frames)
    target = None
    if onto is not None:
        from thead.avatar import AvatarStore

        target = (onto, AvatarStore().load(onto).reference_landmarks)
    with Bar("motion", quiet=quiet, rate="fps") as bar, notes_from_warnings(bar.note):  # notes, not Python warnings (-q: none)
        template, missing = extract_motion(video, output, options, progress=bar, onto=target, motion=motion.value)
    if not quiet:
        err_console.print(f"wrote {output}: {template.num_frames} frames, {_fps(template.fps)}", highlight=False, markup=False)
        if missing:
            err_console.print(f"note: {missing} frame(s) had no face and reuse the last good landmarks", highlight=False, markup=False)

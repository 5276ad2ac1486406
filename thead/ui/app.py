"""The page: four tabs over the same typed API as the command line.

    Enroll    -> thead.enroll.enroll(save=False), shown, then AvatarStore.save
    Avatars   -> AvatarStore.list / info / load / remove
    Animate   -> thead.animate.animate (progress, cancel), the result served as a file
    Fine-tune -> thead.train.finetune_avatar (progress, cancel)

Every handler returns a status line: the result, or one sentence for a failure (never a
traceback). Enroll, animate and fine-tune share one Gradio concurrency group of size 1 and
``Jobs``' lock, so one runs at a time and the queue shows the others their place.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import numpy as np

from thead.animate import AnimateOptions, animate
from thead.avatar import AvatarStore, thead_home
from thead.enroll import EnrollOptions, enroll, source_kind
from thead.errors import UsageError
from thead.faces import ContourRenderer
from thead.motion import TEMPLATE_SUFFIX, DriverOptions, driver_kind
from thead.train.finetune import FinetuneOptions, finetune_avatar, finetune_steps
from thead.ui import UIOptions
from thead.ui.jobs import Jobs, format_seconds, one_sentence, weights_line

HEAVY = "thead-render"  # the concurrency group of enroll, animate and fine-tune: one at a time
DRIVER_UPLOAD, DRIVER_TEMPLATE, DRIVER_WEBCAM = "Upload a video or photo", "Saved motion template", "Webcam clip"


def motions_dir() -> Path:
    """Where the page looks for saved motion templates: ``$THEAD_HOME/motions``."""
    return thead_home() / "motions"


def _ok(text: str) -> str:
    return f"<span class='thead-ok'>{text}</span>"


def _error(error: BaseException, uploads: list[str] = ()) -> str:
    """One sentence; uploaded files named by their own names, not Gradio's temporary paths."""
    text = one_sentence(error)
    for path in sorted(uploads, key=len, reverse=True):
        text = text.replace(str(Path(path).parent) + os.sep, "")
    return f"<span class='thead-error'>Error: {text}</span>"


class Page:
    """The handlers, bound to one process's options, avatar store and job lock."""

    def __init__(self, options: UIOptions):
        self.options = options
        self.jobs = Jobs()
        self.out_dir = Path(tempfile.mkdtemp(prefix="thead-ui-"))  # rendered results, served
        self._weights_line: str | None = None

    def close(self) -> None:
        shutil.rmtree(self.out_dir, ignore_errors=True)

    # -- the weights line ----------------------------------------------------------------
    def weights(self) -> str:
        if self._weights_line is None:
            try:
                self._weights_line = weights_line(self.options.weights)
            except Exception as e:  # e.g. the Hub unreachable and nothing cached: the page says so
                return f"<span class='thead-error'>Weights not available: {one_sentence(e)}</span>"
        return self._weights_line

    # -- avatars -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return AvatarStore().names()

    def gallery(self) -> list[tuple[np.ndarray, str]]:
        store, items = AvatarStore(), []
        for name in store.names():
            try:
                items.append((store.load(name).shots[0], name))
            except Exception:  # a damaged file still shows, by name
                items.append((np.full((224, 224, 3), 200, np.uint8), f"{name} (unreadable)"))
        return items

    def refresh(self, keep: str | None = None):
        """The gallery and the three avatar pickers, after a change to the store."""
        names = self.names()
        value = keep if keep in names else (names[0] if names else None)
        pick = gr.update(choices=names, value=value)
        return self.gallery(), pick, pick, pick

    def picker(self, current: str | None):
        """One avatar picker brought up to date with the store (another page or the command
        line may have changed it), keeping its choice while that avatar exists."""
        names = self.names()
        return gr.update(choices=names, value=current if current in names else (names[0] if names else None))

    def details(self, name: str | None) -> str:
        if not name:
            return "No avatar chosen. Enroll one in the Enroll tab."
        store = AvatarStore()
        try:
            info = store.info(name)
        except Exception as e:  # one sentence in the page, whatever failed
            return _error(e)
        finetuned = "yes" if store.finetuned_path(name).is_file() else "no"
        rows = [("shots (K)", info.num_shots), ("created", info.created), ("landmarks", info.landmarks),
                ("photo", f"{info.photo_size[0]}x{info.photo_size[1]}"), ("weights", info.weights or "-"),
                ("weights sha256", info.weights_sha256[:12] or "-"), ("fine-tuned", finetuned),
                ("file", store.path(name))]
        return f"**{name}**\n\n" + "\n".join(f"- {k}: `{v}`" for k, v in rows)

    def remove(self, name: str | None):
        try:
            if not name:
                raise UsageError("choose an avatar to delete")
            AvatarStore().remove(name)
            status = _ok(f"Deleted '{name}'.")
        except Exception as e:  # one sentence in the page, whatever failed
            status = _error(e)
        return (status, gr.update(visible=False), *self.refresh())

    # -- enroll --------------------------------------------------------------------------
    def find_shots(self, files, name, shots, request: gr.Request, progress=gr.Progress()):
        """Shots, crops, contour drawings and notes of the uploads, encoded but not saved."""
        uploads = [str(f) for f in (files or [])]
        try:
            if not uploads:
                raise UsageError("drop one or more photos, or one short video")
            with self.jobs.run(request.session_hash, lambda f, s: progress(f, desc=s)) as job, \
                    tempfile.TemporaryDirectory(prefix="thead-ui-enroll-") as tmp:
                job.report(None, "finding faces, then encoding the shots")
                avatar = enroll(self._source(uploads, Path(tmp)), name or "", EnrollOptions(int(shots), device=self.options.device),
                                weights=self.options.weights, save=False, progress=job)
            notes = job.notes
        except Exception as e:  # thead's errors, Cancelled, and bugs: one sentence (a bug's traceback: the log)
            return [], _error(e, uploads), None, gr.update(interactive=False)
        renderer = ContourRenderer(avatar.shots.shape[1])
        shown = [(np.concatenate([crop, renderer.draw(lm)], axis=1), f"shot {i + 1}")
                 for i, (crop, lm) in enumerate(zip(avatar.shots, avatar.landmarks))]
        lines = [f"Found {avatar.num_shots} shot(s) for '{avatar.name}' (crop and contour drawing each). Save to keep it."]
        lines += [f"- warning: {n}" for n in notes]
        status = _ok(lines[0]) + ("\n\n" + "\n".join(lines[1:]) if notes else "")
        for path in uploads:
            status = status.replace(str(Path(path).parent) + os.sep, "")
        return shown, status, avatar, gr.update(interactive=True)

    @staticmethod
    def _source(uploads: list[str], tmp: Path) -> Path:
        """One upload as it is; several photos as a folder of them (what ``thead enroll`` takes)."""
        if len(uploads) == 1:
            return Path(uploads[0])
        for path in map(Path, uploads):
            if source_kind(path) != "photo":
                raise UsageError(f"{path.name}: give several photos, or one video on its own")
            (tmp / path.name).symlink_to(path)
        return tmp

    def save(self, avatar, overwrite: bool):
        try:
            if avatar is None:
                raise UsageError("find the shots first")
            AvatarStore().save(avatar, overwrite=bool(overwrite))
            status = _ok(f"Saved '{avatar.name}' ({avatar.num_shots} shot(s)); it is in the Avatars tab.")
        except Exception as e:  # one sentence in the page, whatever failed
            return _error(e), avatar, *self.refresh()
        return status, None, *self.refresh(avatar.name)

    # -- animate -------------------------------------------------------------------------
    def templates(self) -> list[str]:
        folder = motions_dir()
        return sorted(p.name for p in folder.glob(f"*{TEMPLATE_SUFFIX}")) if folder.is_dir() else []

    def animate(self, name, source, upload, template, webcam, motion, paste_back, compare, smoothing, dtype, start, duration,
                request: gr.Request, progress=gr.Progress()):
        uploads = [str(p) for p in (upload, webcam) if p]
        try:
            if not name:
                raise UsageError("choose an avatar (enroll one first)")
            driver = self._driver(source, upload, template, webcam)
            photo = driver_kind(driver) == "photo"
            output = self.out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}{'.png' if photo else '.mp4'}"
            options = AnimateOptions(
                driver=DriverOptions(smooth=float(smoothing) > 0, smooth_strength=float(smoothing) or 1.0,
                                     start_s=float(start or 0), duration_s=float(duration) if duration else None),
                motion=motion, paste_back=bool(paste_back), compare=bool(compare), device=self.options.device, dtype=dtype,
            )
            with self.jobs.run(request.session_hash, lambda f, s: progress(f, desc=s), unit="frames") as job:
                job.report(None, "loading the avatar and the weights")
                result = animate(name, driver, output, options, weights=self.options.weights, progress=job)
            notes = job.notes
        except Exception as e:  # thead's errors, Cancelled, and bugs: one sentence (a bug's traceback: the log)
            return None, None, _error(e, uploads)
        parts = [f"{result.num_frames} frame(s)", f"{result.size[0]}x{result.size[1]}"]
        if result.fps is not None:
            parts += [f"{float(result.fps):.4g} fps", "with audio" if result.audio else "no audio"]
        if result.finetuned:
            parts.append("fine-tuned weights")
        status = _ok(f"Done: {', '.join(parts)} in {result.seconds:.1f} s.")
        if result.missing_faces:
            notes.append(f"{result.missing_faces} driver frame(s) had no face and reused the last good landmarks")
        status += "".join(f"\n\n- note: {n}" for n in notes)
        for path in uploads:
            status = status.replace(str(Path(path).parent) + os.sep, "")
        video = gr.update(value=None if photo else str(result.output), visible=not photo)
        image = gr.update(value=str(result.output) if photo else None, visible=photo)
        return video, image, status

    def _driver(self, source, upload, template, webcam) -> Path:
        if source == DRIVER_TEMPLATE:
            if not template:
                raise UsageError(f"no motion template chosen (save them in {motions_dir()} with thead motion extract)")
            return motions_dir() / template
        if source == DRIVER_WEBCAM:
            if not webcam:
                raise UsageError("record a clip with the webcam first")
            return Path(webcam)
        if not upload:
            raise UsageError("upload a driver: a video, a photo or a motion template (.npz)")
        return Path(upload)

    def cancel(self, request: gr.Request) -> str:
        if self.jobs.cancel(request.session_hash):
            return _ok("Cancelling: the job stops after the current frame or step, and nothing it was writing is kept.")
        return _ok("Nothing of yours was running.")

    # -- fine-tune -----------------------------------------------------------------------
    def estimate(self, name: str | None, steps) -> str:
        if not name:
            return "Choose an avatar."
        try:
            k = AvatarStore().info(name).num_shots
        except Exception as e:  # one sentence in the page, whatever failed
            return _error(e)
        n = int(steps) if steps else finetune_steps(k)
        return (f"{n} steps on the avatar's {k} shot(s) (the release's schedule for K = {k} is {finetune_steps(k)}). "
                "The time left is estimated from the first steps while it runs, as `thead finetune` does.")

    def finetune(self, name, steps, request: gr.Request, progress=gr.Progress()):
        try:
            if not name:
                raise UsageError("choose an avatar to fine-tune")
            k = AvatarStore().info(name).num_shots
            options = FinetuneOptions(num_shots=k, steps=int(steps) if steps else None, device=self.options.device)
            with self.jobs.run(request.session_hash, lambda f, s: progress(f, desc=s), unit="steps") as job:
                job.report(None, "loading the weights and the loss networks")
                started = time.perf_counter()
                path = finetune_avatar(name, options, weights=self.options.weights, progress=job)
        except Exception as e:  # thead's errors, Cancelled, and bugs: one sentence (a bug's traceback: the log)
            return _error(e), self.details(name)
        took = format_seconds(time.perf_counter() - started)
        return _ok(f"Fine-tuned '{name}' ({options.total_steps} steps, {took}); animate uses it from now on ({path.name})."), self.details(name)


def _picked(event: gr.SelectData):
    """A click on a gallery thumbnail picks that avatar."""
    return gr.update(value=(event.value or {}).get("caption"))


CSS = """
.thead-error { color: #b00020; font-weight: 600; }
.thead-ok { color: #1b5e20; }
"""


def build(options: UIOptions) -> tuple[gr.Blocks, Page]:
    """The page's layout and its wiring to ``Page``'s handlers."""
    page = Page(options)
    with gr.Blocks(title="thead") as demo:
        gr.Markdown("# thead: talking heads from a few photos")
        weights_md = gr.Markdown("Weights: resolving...", elem_id="weights-line")

        with gr.Tab("Enroll", id="enroll"):
            gr.Markdown("Drop a few photos of one person (or one short video), name the avatar, look at the shots, then save.")
            with gr.Row():
                with gr.Column():
                    e_files = gr.File(label="Photos or a short video", file_count="multiple", elem_id="enroll-files")
                    e_name = gr.Textbox(label="Name (letters, digits, '-', '_')", elem_id="enroll-name")
                    e_shots = gr.Slider(1, 32, value=EnrollOptions().num_shots, step=1, label="Shots (K): more is a better likeness")
                    e_overwrite = gr.Checkbox(label="Replace an avatar of the same name")
                    with gr.Row():
                        e_find = gr.Button("Find shots", variant="primary", elem_id="enroll-find")
                        e_save = gr.Button("Save avatar", interactive=False, elem_id="enroll-save")
                with gr.Column():
                    e_gallery = gr.Gallery(label="Chosen shots: crop and contour drawing", columns=2, height=420, fit_columns=False,
                                           object_fit="contain", elem_id="enroll-shots")
                    e_status = gr.Markdown(elem_id="enroll-status")
            e_pending = gr.State(None)

        with gr.Tab("Avatars", id="avatars") as avatars_tab:
            with gr.Row():
                with gr.Column(scale=2):
                    a_gallery = gr.Gallery(label="Avatars", columns=5, height=360, allow_preview=False, fit_columns=False,
                                           object_fit="cover", elem_id="avatar-gallery")
                with gr.Column(scale=1):
                    a_pick = gr.Dropdown(label="Avatar", choices=[], elem_id="avatar-pick")
                    a_details = gr.Markdown(elem_id="avatar-details")
                    a_delete = gr.Button("Delete...", variant="stop", elem_id="avatar-delete")
                    with gr.Row(visible=False) as a_confirm:
                        a_yes = gr.Button("Yes, delete it and its fine-tuned weights", variant="stop", elem_id="avatar-delete-yes")
                        a_no = gr.Button("Keep it", elem_id="avatar-delete-no")
                    a_status = gr.Markdown(elem_id="avatar-status")

        with gr.Tab("Animate", id="animate") as animate_tab:
            with gr.Row():
                with gr.Column():
                    m_pick = gr.Dropdown(label="Avatar", choices=[], elem_id="animate-pick")
                    m_source = gr.Radio([DRIVER_UPLOAD, DRIVER_TEMPLATE, DRIVER_WEBCAM], value=DRIVER_UPLOAD, label="Driver")
                    m_upload = gr.File(label="Driver: a video, a photo or a motion template (.npz)", elem_id="animate-driver")
                    m_template = gr.Dropdown(label="Saved motion template ($THEAD_HOME/motions)", choices=page.templates(), visible=False)
                    m_webcam = gr.Video(label="Webcam clip", sources=["webcam"], include_audio=True, visible=False, elem_id="animate-webcam",
                                        webcam_options=gr.WebcamOptions(mirror=False))  # kept as recorded (mirroring needs ffmpeg)
                    with gr.Accordion("Options", open=True):
                        m_motion = gr.Radio(["relative", "absolute"], value=AnimateOptions().motion, label="Motion",
                                            info="relative: the avatar keeps its face shape (any driver); absolute: self-reenactment")
                        with gr.Row():
                            m_paste = gr.Checkbox(label="Paste back into the photo")
                            m_compare = gr.Checkbox(label="Compare: driver beside the result")
                        m_smooth = gr.Slider(0, 3, value=DriverOptions().smooth_strength, step=0.25, label="Smoothing (0 = off)")
                        m_dtype = gr.Radio(["fp32", "bf16"], value=AnimateOptions().dtype, label="Precision",
                                           info="bf16: about 2x faster on CPUs with AVX512-BF16 and on GPUs")
                        with gr.Row():
                            m_start = gr.Number(value=0, minimum=0, label="Start (seconds into the driver)", elem_id="animate-start")
                            m_duration = gr.Number(value=0, minimum=0, label="Duration (seconds, 0 = to the end)", elem_id="animate-duration")
                    with gr.Row():
                        m_go = gr.Button("Animate", variant="primary", elem_id="animate-go")
                        m_cancel = gr.Button("Cancel", elem_id="animate-cancel")
                with gr.Column():
                    m_video = gr.Video(label="Result", interactive=False, elem_id="animate-result", buttons=["download"])
                    m_image = gr.Image(label="Result (photo driver)", interactive=False, visible=False, elem_id="animate-image")
                    m_status = gr.Markdown(elem_id="animate-status")

        with gr.Tab("Fine-tune", id="finetune") as finetune_tab:
            gr.Markdown("Personal weights for one avatar (G^l, G^s, D trained on its shots); animate uses them from then on.")
            with gr.Row():
                with gr.Column():
                    f_pick = gr.Dropdown(label="Avatar", choices=[], elem_id="finetune-pick")
                    f_steps = gr.Number(value=0, precision=0, minimum=0, label="Steps (0 = the release's schedule for K)", elem_id="finetune-steps")
                    f_estimate = gr.Markdown(elem_id="finetune-estimate")
                    with gr.Row():
                        f_go = gr.Button("Fine-tune", variant="primary", elem_id="finetune-go")
                        f_cancel = gr.Button("Cancel", elem_id="finetune-cancel")
                with gr.Column():
                    f_status = gr.Markdown(elem_id="finetune-status")

        pickers = [a_gallery, a_pick, m_pick, f_pick]
        demo.load(page.weights, outputs=weights_md, queue=False)
        demo.load(page.refresh, outputs=pickers, queue=False)
        avatars_tab.select(lambda current: (page.gallery(), page.picker(current)), a_pick, [a_gallery, a_pick], queue=False)
        animate_tab.select(page.picker, m_pick, m_pick, queue=False)
        finetune_tab.select(page.picker, f_pick, f_pick, queue=False)

        # Enroll: find (heavy, queued) then save.
        heavy = dict(concurrency_limit=1, concurrency_id=HEAVY)
        e_find.click(page.find_shots, [e_files, e_name, e_shots], [e_gallery, e_status, e_pending, e_save], **heavy)
        e_save.click(page.save, [e_pending, e_overwrite], [e_status, e_pending, *pickers])

        # Avatars: details, delete with a confirmation.
        a_pick.change(page.details, a_pick, a_details, queue=False)
        a_gallery.select(_picked, None, a_pick, queue=False)
        a_delete.click(lambda: gr.update(visible=True), None, a_confirm, queue=False)
        a_no.click(lambda: gr.update(visible=False), None, a_confirm, queue=False)
        a_yes.click(page.remove, a_pick, [a_status, a_confirm, *pickers])

        # Animate: the chosen driver's input shown; run (heavy, queued) and cancel (not queued).
        m_source.change(lambda source: (gr.update(visible=source == DRIVER_UPLOAD), gr.update(visible=source == DRIVER_TEMPLATE, choices=page.templates()),
                                        gr.update(visible=source == DRIVER_WEBCAM)), m_source, [m_upload, m_template, m_webcam], queue=False)
        run = m_go.click(page.animate, [m_pick, m_source, m_upload, m_template, m_webcam, m_motion, m_paste, m_compare,
                                        m_smooth, m_dtype, m_start, m_duration], [m_video, m_image, m_status], **heavy)
        m_cancel.click(page.cancel, None, m_status, cancels=[run], queue=False)

        # Fine-tune (heavy, queued) and cancel.
        f_pick.change(page.estimate, [f_pick, f_steps], f_estimate, queue=False)
        f_steps.change(page.estimate, [f_pick, f_steps], f_estimate, queue=False)
        tune = f_go.click(page.finetune, [f_pick, f_steps], [f_status, a_details], **heavy)
        f_cancel.click(page.cancel, None, f_status, cancels=[tune], queue=False)
    return demo, page


def serve(options: UIOptions, on_note=lambda s: None) -> None:
    """Build the page and serve it until interrupted (Ctrl-C or SIGTERM); the results go with it."""
    demo, page = build(options)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline

    def stop(signum, frame):  # a service manager's SIGTERM: stop as Ctrl-C does, removing the results
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        try:
            _, local_url, share_url = demo.queue(default_concurrency_limit=1).launch(
                server_name=options.host, server_port=options.port, share=options.share,
                max_file_size=f"{options.max_upload_mb}mb", allowed_paths=[str(page.out_dir)],
                show_error=False, footer_links=[], theme=theme, css=CSS, quiet=True, ssr_mode=False,
                prevent_thread_lock=True,
            )
        except OSError as e:  # Gradio: "Cannot find empty port in range: ..."
            raise UsageError(f"cannot serve on {options.host}:{options.port}: the port is taken or the address is not this "
                             "machine's; choose another --port or --host") from None
        on_note(f"serving thead on http://{options.host}:{options.port}" + (f" and {share_url}" if share_url else "") + " (Ctrl-C to stop)")
        while demo.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        page.close()

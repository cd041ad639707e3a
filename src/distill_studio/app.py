"""build_app(): the Studio's layout and event wiring. The work is in opening.py, pictures.py, editing.py,
exchange.py, regenerate.py, training.py and api.py (common.py: what they share)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import gradio as gr

from distill import (
    DEFAULT_CANDIDATES,
    DEFAULT_DETAIL,
    DEFAULT_TEMPERATURE,
    BundleError,
    Codec,
    keep_freed_memory,
)

from . import api, editing, exchange, opening, pictures, regenerate, training
from .common import MAX_LEVELS, View
from .heatmap import HEATMAP_CSS, HEATMAP_JS, empty_html
from .state import Limits, Session
from .viewport import OVERVIEW_CSS, OVERVIEW_JS

log = logging.getLogger("distill.studio")

INTRO = ("# Distill Studio\nTrain a small residual-VQ codec on your own sounds, see every clip as three code grids "
         "(**Structure**, **Timbre**, **Detail**), edit regions of codes and listen.")
EDIT_HELP = ("Pick clip **A** (and a partner **B**). Drag on a heatmap to select a region (shift-drag on another level "
             "adds it), then edit: every edit is decoded at once with the clip's own phase. Click a single cell to hear "
             "its code. Ctrl+Z / Ctrl+Shift+Z undo and redo.")
TRAIN_HELP = ("Upload a folder (or files) of 5-500 clips; check the report, adjust the settings if you like, press "
              "**Train**. Stop keeps the best model so far. A `.distill` file skips training. If clip A has edits, "
              "a new model waits for **Use the new model** (top of the page) so no edit is lost.")
DEFAULT_A, DEFAULT_B = "arp_dm7", "beat_rock"

# Ctrl+Z / Ctrl+Shift+Z (and Ctrl+Y) press the Undo / Redo buttons, except while typing in a field.
KEYS_JS = r"""
if (!window.__distillKeys) {
  window.__distillKeys = true;
  document.addEventListener('keydown', (ev) => {
    if (!(ev.ctrlKey || ev.metaKey)) return;
    const t = ev.target, tag = t && t.tagName ? t.tagName.toLowerCase() : '';
    if (tag === 'input' || tag === 'textarea' || (t && t.isContentEditable)) return;
    const key = ev.key.toLowerCase();
    const id = (key === 'z' && ev.shiftKey) || key === 'y' ? 'redo-btn' : key === 'z' ? 'undo-btn' : null;
    if (!id) return;
    const btn = document.getElementById(id);
    if (btn) { ev.preventDefault(); btn.click(); }
  });
}
"""
EXTRA_CSS = """
.health td { padding: 2px 8px; font-size: 13px; }
"""


def launch_kwargs(limits: Limits) -> dict:
    """Arguments for demo.launch() that enforce the Space limits (the size in bytes: Gradio reads "0.5mb" as a bad unit)."""
    return dict(max_file_size=max(1, int(limits.max_file_mb * 2**20)))


def explain_queue_full(demo: gr.Blocks, limits: Limits) -> None:
    """A full queue answers with limits.queue_full() (the limit and DISTILL_QUEUE_SIZE), also logged for the host,
    instead of Gradio's bare "Queue is full". Browsers and gradio_client show their own fixed text for it (HTTP 503);
    plain HTTP clients get this one. Leaves Gradio as it is when its queue has no `push` to wrap."""
    queue = getattr(demo, "_queue", None)
    push = getattr(queue, "push", None)
    if push is None:
        return

    async def push_with_reason(*args, **kwargs):
        ok, detail, state = await push(*args, **kwargs)
        if state == "queue_full":
            detail = limits.queue_full()
            log.warning(detail)
        return ok, detail, state

    queue.push = push_with_reason


def load_demo(limits: Limits) -> tuple[Codec | None, str]:
    """The bundled model, or (None, reason) when it is missing or unreadable (the app still opens)."""
    try:
        return Codec.load(limits.demo_model), "demo model (bundled)"
    except (BundleError, OSError) as exc:
        return None, f"no demo model ({exc})"


def _public_copy(path: str) -> str:
    """Copy a file into the temp dir so gradio may serve it whatever the working directory."""
    dst = Path(tempfile.mkdtemp(prefix="distill-")) / Path(path).name
    shutil.copyfile(path, dst)
    return str(dst)


def build_app(limits: Limits | None = None, demo_codec: Codec | None = None, demo_label: str = "") -> gr.Blocks:
    """The whole studio. Per-user data lives only in gr.State; `demo_codec` is shared read-only (Codec is stateless)."""
    limits = limits or Limits.from_env()
    if demo_codec is None:
        demo_codec, demo_label = load_demo(limits)
    demo_label = demo_label or "demo model (bundled)"
    clips = opening.demo_clips(limits.demo_clips) if demo_codec is not None else {}
    demo_model_file = _public_copy(limits.demo_model) if demo_codec is not None else None

    with gr.Blocks(title="Distill Studio", delete_cache=(3600, 24 * 3600)) as demo:
        session = gr.State(None, time_to_live=6 * 3600)  # a forgotten tab's clips and model are freed
        gr.Markdown(INTRO)
        model_md = gr.Markdown(elem_id="model-summary")
        with gr.Row(equal_height=True):  # shown while a new model waits because clip A has edits
            pending_md = gr.Markdown(visible=False, elem_id="pending-model")
            use_model_btn = gr.Button("Use the new model", variant="primary", visible=False, scale=0, min_width=200,
                                      elem_id="use-model-btn")
        with gr.Tabs():
            # ---------------------------------------------------------------- Edit & Listen
            with gr.Tab("Edit & Listen", id="edit"):
                gr.Markdown(EDIT_HELP)
                with gr.Row():
                    clip_a = gr.Dropdown(label="Clip A (the one you edit)", choices=[], elem_id="clip-a", scale=2)
                    upload_a = gr.File(label="…or upload A", type="filepath", height=80, scale=1, elem_id="upload-a")
                    clip_b = gr.Dropdown(label="Clip B (partner for swap / copy / blend)", choices=[], elem_id="clip-b", scale=2)
                    upload_b = gr.File(label="…or upload B", type="filepath", height=80, scale=1, elem_id="upload-b")
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    with gr.Column(scale=3):
                        overview_a = gr.HTML("", css_template=OVERVIEW_CSS, js_on_load=OVERVIEW_JS, visible=False,
                                             elem_id="overview-A")
                        with gr.Row(equal_height=True):
                            earlier_btn = gr.Button("◀ Earlier", size="sm", min_width=60, elem_id="view-earlier")
                            later_btn = gr.Button("Later ▶", size="sm", min_width=60, elem_id="view-later")
                            zoom_in_btn = gr.Button("Zoom in", size="sm", min_width=60, elem_id="zoom-in")
                            zoom_out_btn = gr.Button("Zoom out", size="sm", min_width=60, elem_id="zoom-out")
                            whole_btn = gr.Button("Play whole edited clip", size="sm", min_width=60,
                                                  elem_id="play-whole")
                        mel = gr.HTML(empty_html("Loading…"), css_template=HEATMAP_CSS, js_on_load=KEYS_JS, elem_id="mel")
                        heat_a = [gr.HTML(None, css_template=HEATMAP_CSS, js_on_load=HEATMAP_JS, elem_id=f"hm-A-{q}")
                                  for q in range(MAX_LEVELS)]
                        selection = gr.Markdown(elem_id="selection")
                        with gr.Row():
                            levels = gr.CheckboxGroup(label="Levels in the selection", choices=[], elem_id="levels", scale=3)
                            sel_all = gr.Button("Select whole clip", size="sm", scale=1)
                            sel_clear = gr.Button("Clear selection", size="sm", scale=1)
                            colour_mode = gr.Radio(list(pictures.COLOUR_MODES), value="sound-alike", scale=2,
                                                   label="Heatmap colours", elem_id="colour-mode",
                                                   info="sound-alike: similar codes look alike (repeats show); "
                                                        "code index: a distinct hue per number")
                        overview_b = gr.HTML("", css_template=OVERVIEW_CSS, js_on_load=OVERVIEW_JS, visible=False,
                                             elem_id="overview-B")
                        heat_b = [gr.HTML(None, css_template=HEATMAP_CSS, js_on_load=HEATMAP_JS, elem_id=f"hm-B-{q}")
                                  for q in range(MAX_LEVELS)]
                    with gr.Column(scale=2):
                        original = gr.Audio(label="Original", interactive=False, elem_id="audio-original")
                        recon = gr.Audio(label="Plain reconstruction", interactive=False, elem_id="audio-recon")
                        edited = gr.Audio(label="Edited", interactive=False, elem_id="audio-edited")
                        render_mode = gr.Radio(["surgical", "plain"], value="surgical", show_label=False, container=False,
                                               info="surgical: the recording stays exact outside the edited cells · "
                                                    "plain (faster): the model decodes everything, with the clip's phase",
                                               elem_id="render-mode")
                        detail = gr.Slider(0.0, 1.0, value=DEFAULT_DETAIL, step=0.05, elem_id="detail",
                                           label="Keep original detail inside edits (surgical)",
                                           info="0 = the model's sound only; 1 = all of the clip's own fine texture")
                        preview = gr.Audio(label="Code preview (click a cell)", interactive=False, autoplay=True,
                                           elem_id="audio-preview")
                        gr.Markdown("**Edit the selection** (A's region; B's region or the same cells on B)")
                        with gr.Group():
                            with gr.Row():
                                undo_btn = gr.Button("↶ Undo", elem_id="undo-btn", size="sm", min_width=60)
                                redo_btn = gr.Button("↷ Redo", elem_id="redo-btn", size="sm", min_width=60)
                                reset_btn = gr.Button("Reset", elem_id="reset-btn", size="sm", variant="stop", min_width=60)
                            with gr.Row():
                                swap_btn = gr.Button("Swap with B", elem_id="swap-btn", size="sm", variant="primary", min_width=60)
                                copy_btn = gr.Button("Copy", elem_id="copy-btn", size="sm", min_width=60)
                                copy_b_btn = gr.Button("Copy from B", elem_id="copy-b-btn", size="sm", min_width=60)
                                paste_btn = gr.Button("Paste", elem_id="paste-btn", size="sm", min_width=60)
                                reverse_btn = gr.Button("Reverse", elem_id="reverse-btn", size="sm", min_width=60)
                            with gr.Row(equal_height=True):
                                code_in = gr.Number(value=0, precision=0, minimum=0, label="Code", min_width=60,
                                                    elem_id="code-in")
                                set_btn = gr.Button("Set to code", elem_id="set-btn", size="sm", min_width=60)
                                shift_in = gr.Number(value=1, precision=0, label="Columns (±)", min_width=60,
                                                     elem_id="shift-in")
                                shift_btn = gr.Button("Shift by columns", elem_id="shift-btn", size="sm", min_width=60)
                            with gr.Row(equal_height=True):
                                repeat_in = gr.Number(value=2, precision=0, minimum=1, label="Times", min_width=60,
                                                      elem_id="repeat-in")
                                repeat_btn = gr.Button("Repeat × times", size="sm", min_width=60)
                                seed_in = gr.Number(value=0, precision=0, label="Randomize seed", min_width=60,
                                                    elem_id="seed-in")
                                rand_btn = gr.Button("Randomize (seed)", elem_id="randomize-btn", size="sm", min_width=60)
                            with gr.Row(equal_height=True):
                                blend_amt = gr.Slider(0, 1, value=0.5, step=0.05, label="Blend amount toward B", scale=3,
                                                      elem_id="blend-amount")
                                blend_btn = gr.Button("Blend with B", elem_id="blend-btn", size="sm", scale=1, min_width=60)
                            with gr.Row(equal_height=True):
                                op_in = gr.Textbox(show_label=False, container=False, scale=3, elem_id="op-in",
                                                   placeholder="or type an operation: swap Timbre@0.0-1.0 B:Timbre@1.0-2.0")
                                op_btn = gr.Button("Run", size="sm", scale=1, min_width=60)
                        with gr.Accordion("Regenerate the selection (learned from your sounds)", open=True,
                                          elem_id="regen-panel"):
                            gr.Markdown("New material for the selected cells that fits what is around them. With "
                                        "every level selected, each version is a passage of your own training "
                                        "files (its player says which); with a level kept, the model's prior "
                                        "draws the rest to fit it. Everything outside the selection stays exactly.")
                            with gr.Row():
                                rg_strength = gr.Slider(0, 1, value=1.0, step=0.05, label="Strength",
                                                        info="share of the selected cells redrawn", elem_id="rg-strength")
                                rg_temp = gr.Slider(0.3, 2.0, value=DEFAULT_TEMPERATURE, step=0.05, label="Temperature",
                                                    info="lower = safer, higher = wilder", elem_id="rg-temperature")
                            with gr.Row(equal_height=True):
                                rg_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", min_width=60,
                                                    elem_id="rg-seed")
                                rg_count = gr.Number(value=DEFAULT_CANDIDATES, precision=0, minimum=1,
                                                     maximum=regenerate.SLOTS, label="Versions", min_width=60,
                                                     elem_id="rg-count")
                            with gr.Row():
                                rg_btn = gr.Button("Regenerate selection", variant="primary", size="sm",
                                                   elem_id="regen-btn")
                                rg_again = gr.Button("Again (next seed)", size="sm", elem_id="regen-again")
                                rg_whole = gr.Button("Vary whole clip", size="sm", elem_id="regen-whole")
                            rg_now = gr.Audio(label="Now (same span)", interactive=False, elem_id="rg-now")
                            rg_players, rg_keeps = [], []
                            for i in range(regenerate.SLOTS):
                                with gr.Row(equal_height=True):
                                    rg_players.append(gr.Audio(label=f"Version {i + 1}", interactive=False,
                                                               visible=False, elem_id=f"rg-audio-{i}", scale=4))
                                    rg_keeps.append(gr.Button(f"Keep {i + 1}", size="sm", visible=False, scale=1,
                                                              min_width=60, elem_id=f"rg-keep-{i}"))
                        gr.Markdown("**History**")
                        history = gr.Markdown(label="History", elem_id="history")
                        with gr.Accordion("Save / load", open=False):
                            export_btn = gr.Button("Export edited WAV + codes + history", size="sm", elem_id="export-btn")
                            export_files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="export-files")
                            import_file = gr.File(label="Import codes or history JSON", type="filepath", elem_id="import-file")
                        with gr.Accordion("Codebook usage (training set)", open=False):
                            usage = gr.HTML(None, css_template=HEATMAP_CSS, elem_id="usage")

            # ---------------------------------------------------------------- Data & Train
            with gr.Tab("Data & Train", id="train"):
                gr.Markdown(TRAIN_HELP)
                with gr.Row():
                    folder_up = gr.File(label="Upload a folder", file_count="directory", height=220, elem_id="folder-upload")
                    files_up = gr.File(label="…or audio files", file_count="multiple", height=220, elem_id="files-upload")
                summary = gr.Markdown(elem_id="dataset-summary")
                table = gr.Dataframe(headers=training.REPORT_COLUMNS, interactive=False, max_height=260, elem_id="dataset-table")
                with gr.Row():
                    st_levels = gr.Slider(2, 4, value=3, step=1, label="Levels")
                    st_size = gr.Dropdown(["auto", "32", "64", "128", "256", "512"], value="auto", allow_custom_value=True,
                                          label="Codebook size")
                    st_dim = gr.Dropdown([32, 64, 128, 256], value=128, label="Codebook dim")
                    st_commit = gr.Number(value=0.25, label="Commitment weight", minimum=0)
                with gr.Row():
                    st_budget = gr.Radio(["minutes", "epochs"], value="minutes", label="Budget in")
                    st_amount = gr.Number(value=2, label="Amount", minimum=0, elem_id="budget-amount")
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        st_batch = gr.Number(value=16, precision=0, label="Batch size", minimum=1)
                        st_lr = gr.Number(value=1e-3, label="Learning rate")
                        st_seed = gr.Number(value=0, precision=0, label="Seed")
                        st_device = gr.Dropdown(["auto", "cpu", "cuda", "mps"], value="auto", label="Device")
                with gr.Row():
                    train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
                    stop_btn = gr.Button("Stop (keep best)", variant="stop", elem_id="stop-btn")
                stop_note = gr.Markdown(elem_id="stop-note")
                train_status = gr.Markdown(elem_id="train-status")
                with gr.Row():
                    loss_plot = gr.LinePlot(x="step", y="loss", color="curve", title="Loss (train / validation)",
                                            color_map=training.TOTAL_COLOURS,
                                            height=240)
                    parts_plot = gr.LinePlot(x="step", y="loss", color="curve", title="Loss terms (reconstruction, commitment)",
                                             color_map=training.TERM_COLOURS,
                                             height=240)
                    prior_plot = gr.LinePlot(x="step", y="loss", color="curve", color_map=training.PRIOR_COLOURS,
                                             title="Prior for Regenerate (bits per code; held-out = validation)",
                                             height=240)
                health = gr.HTML(training.health_html(()), css_template=EXTRA_CSS, elem_id="health")
                with gr.Row():
                    model_file = gr.File(label="Trained model (.distill)", interactive=False, elem_id="model-file")
                    model_up = gr.File(label="Upload a .distill to skip training", type="filepath", elem_id="model-upload")

        # ---------------------------------------------------------------- API-only endpoints
        with gr.Column(visible=False):
            api_files = gr.File(file_count="multiple")
            api_minutes = gr.Number(value=1.0)
            api_model_out = gr.File()
            api_summary = gr.Textbox()
            api_model = gr.File()
            api_audio = gr.File()
            api_codes = gr.File()
            api_other = gr.File()
            api_op = gr.Textbox()
            api_codes_out = gr.File()
            api_phase = gr.File()
            api_source = gr.File()
            api_detail = gr.Number(value=None)
            api_wave = gr.Audio()
            api_region = gr.Textbox()
            api_strength = gr.Number(value=1.0)
            api_temperature = gr.Number(value=DEFAULT_TEMPERATURE)
            api_seed = gr.Number(value=0, precision=0)
            api_candidates = gr.Number(value=1, precision=0)
            api_codes_list = gr.File(file_count="multiple")
            api_btns = [gr.Button(visible=False) for _ in range(5)]

        # ---------------------------------------------------------------- wiring
        rg_outputs = [rg_now, *[x for pair in zip(rg_players, rg_keeps, strict=True) for x in pair]]
        edit_outputs = [session, *heat_a, *heat_b, overview_a, overview_b, mel, selection, history, original, recon, edited, preview, status,
                        levels, clip_a, clip_b, usage, model_md, *rg_outputs]

        def to_updates(view: View) -> list:
            f = view.fields()
            out = []
            for key in ("heat_a", "heat_b"):
                if key in f:
                    out += [gr.update(value=h, visible=True) if h is not None else gr.update(visible=False) for h in f[key]]
                else:
                    out += [gr.skip()] * MAX_LEVELS
            for key in ("overview_a", "overview_b"):
                out.append(gr.update(value=f[key], visible=bool(f[key])) if key in f else gr.skip())
            for key in ("mel", "selection", "history", "original", "recon", "edited", "preview", "status"):
                out.append(f.get(key, gr.skip()))
            out.append(gr.update(choices=f["levels"][0], value=f["levels"][1]) if "levels" in f else gr.skip())
            for key in ("clip_a", "clip_b"):
                upd = {}
                if "clips" in f:
                    upd["choices"] = f["clips"]
                if key in f:
                    upd["value"] = f[key]
                out.append(gr.update(**upd) if upd else gr.skip())
            out += [f.get("usage", gr.skip()), f.get("model", gr.skip())]
            return out

        def emit(pair: tuple[Session, View], candidates: bool = False) -> list:
            """The session, the view's updates, then the Regenerate versions: re-sent when drawn or kept
            (`candidates`), cleared once an edit, undo or new clip made them stale, else left as they are."""
            s, view = pair
            rg = regenerate.version_updates(s, candidates)
            return [s, *to_updates(view), *(rg if rg is not None else [gr.skip()] * len(rg_outputs))]

        quiet = dict(show_progress="hidden", api_visibility="undocumented")

        def on_load():
            s, view = opening.start(demo_codec, demo_label, demo_model_file, clips, limits, DEFAULT_A, DEFAULT_B)
            return [*emit((s, view)), demo_model_file]

        demo.load(on_load, None, [*edit_outputs, model_file], api_visibility="undocumented")

        def opener(which: str, uploaded: bool) -> Callable:
            """An open event of A or B (picked by name or uploaded) that draws the encode's progress on the status line."""
            def fn(s: Session, value: str | None, progress=gr.Progress()):  # noqa: B008 (gradio injects its tracker here)
                name, upload = (None, value) if uploaded else (value, None)
                return emit(opening.open_clip(s, which, name, upload, limits, progress=progress))
            return fn

        show_encoding = dict(show_progress="full", show_progress_on=[status], api_visibility="undocumented")
        clip_a.input(opener("A", False), [session, clip_a], edit_outputs, **show_encoding)
        clip_b.input(opener("B", False), [session, clip_b], edit_outputs, **show_encoding)
        upload_a.upload(opener("A", True), [session, upload_a], edit_outputs, **show_encoding)
        upload_b.upload(opener("B", True), [session, upload_b], edit_outputs, **show_encoding)

        def on_select(s: Session, evt: gr.EventData):
            return emit(editing.select(s, evt))

        def on_cell(s: Session, evt: gr.EventData):
            return emit(editing.cell_preview(s, evt))

        for h in heat_a + heat_b:
            h.select(on_select, [session], edit_outputs, trigger_mode="always_last", **quiet)
            h.cell_click(on_cell, [session], edit_outputs, trigger_mode="always_last", **quiet)

        def on_move(s: Session, evt: gr.EventData):
            return emit(pictures.move_view(s, evt))

        for ov in (overview_a, overview_b):
            ov.select(on_move, [session], edit_outputs, trigger_mode="always_last", **quiet)

        levels.input(lambda s, n: emit(editing.set_levels(s, n)), [session, levels], edit_outputs, **quiet)
        sel_all.click(lambda s, n: emit(editing.select_all(s, n)), [session, levels], edit_outputs, **quiet)
        render_mode.input(lambda s, m: emit(editing.set_render_mode(s, m)), [session, render_mode], edit_outputs, **quiet)
        detail.release(lambda s, d: emit(editing.set_detail(s, d)), [session, detail], edit_outputs, **quiet)
        sel_clear.click(lambda s: emit(editing.clear_selection(s)), [session], edit_outputs, **quiet)
        colour_mode.input(lambda s, m: emit(pictures.set_colours(s, m)), [session, colour_mode], edit_outputs, **quiet)

        def bind(btn, fn, inputs=()):
            btn.click(lambda s, *a: emit(fn(s, *a)), [session, *inputs], edit_outputs, **quiet)

        bind(earlier_btn, lambda s: pictures.scroll(s, -1))
        bind(later_btn, lambda s: pictures.scroll(s, 1))
        bind(zoom_in_btn, lambda s: pictures.zoom(s, 0.5))
        bind(zoom_out_btn, lambda s: pictures.zoom(s, 2.0))
        bind(whole_btn, pictures.play_whole)
        bind(undo_btn, editing.undo)
        bind(redo_btn, editing.redo)
        bind(reset_btn, editing.reset)
        bind(copy_btn, partial(editing.copy, source="A"))
        bind(copy_b_btn, partial(editing.copy, source="B"))
        bind(paste_btn, lambda s: editing.edit(s, "paste"))
        bind(swap_btn, lambda s: editing.edit(s, "swap"))
        bind(reverse_btn, lambda s: editing.edit(s, "reverse"))
        bind(blend_btn, lambda s, t: editing.edit(s, "blend", amount=t), [blend_amt])
        bind(set_btn, lambda s, c: editing.edit(s, "set", code=c), [code_in])
        bind(shift_btn, lambda s, n: editing.edit(s, "shift", columns=n), [shift_in])
        bind(repeat_btn, lambda s, n: editing.edit(s, "repeat", times=n), [repeat_in])
        bind(rand_btn, lambda s, n: editing.edit(s, "randomize", seed=n), [seed_in])
        bind(op_btn, editing.run_operation, [op_in])
        op_in.submit(lambda s, t: emit(editing.run_operation(s, t)), [session, op_in], edit_outputs, **quiet)

        # regenerate: candidates are drawn and auditioned, then one is kept as an undoable step
        rg_inputs = [rg_strength, rg_temp, rg_seed, rg_count]

        def with_candidates(pair: tuple[Session, View]) -> list:
            return emit(pair, candidates=True)

        rg_btn.click(lambda s, *a: with_candidates(regenerate.draw(s, *a)), [session, *rg_inputs], edit_outputs, **quiet)
        rg_whole.click(lambda s, *a: with_candidates(regenerate.draw(s, *a, whole=True)), [session, *rg_inputs],
                       edit_outputs, **quiet)

        def on_again(s, strength, temperature, seed, count):
            seed = int(seed or 0) + 1
            return [*with_candidates(regenerate.draw(s, strength, temperature, seed, count)), seed]

        rg_again.click(on_again, [session, *rg_inputs], [*edit_outputs, rg_seed], **quiet)
        for i, btn in enumerate(rg_keeps):
            btn.click(lambda s, i=i: with_candidates(regenerate.keep(s, i)), [session], edit_outputs,
                      **quiet)

        def on_export(s):
            s, files, view = exchange.export(s)
            return [*emit((s, view)), files]

        export_btn.click(on_export, [session], [*edit_outputs, export_files], **quiet)
        import_file.upload(lambda s, p: emit(exchange.import_codes(s, p, limits)), [session, import_file], edit_outputs, **quiet)

        # training
        settings_in = [st_levels, st_size, st_dim, st_commit, st_budget, st_amount, st_batch, st_lr, st_seed, st_device]

        def on_scan(s, folder, files):
            s, df, text, st = training.scan(s, folder, files, limits)
            return s, df, text, st.levels, st.codebook_dim, st.commitment_weight, st.batch_size

        for up in (folder_up, files_up):
            up.upload(on_scan, [session, folder_up, files_up], [session, table, summary, st_levels, st_dim, st_commit, st_batch],
                      api_visibility="undocumented")

        def on_train(s, *values):
            st = training.Settings(int(values[0]), str(values[1]), int(values[2]), float(values[3]), str(values[4]),
                                   float(values[5] or 0), int(values[6] or 1), float(values[7] or 1e-3),
                                   int(values[8] or 0), str(values[9]))
            for p in training.train_stream(s, st, limits):
                yield (s, gr.skip() if p.totals is None else p.totals, gr.skip() if p.parts is None else p.parts,
                       p.health, p.status, p.model_file or gr.skip(), gr.skip() if p.prior is None else p.prior)

        pending_outputs = [pending_md, use_model_btn]

        def pending_updates(s) -> list:
            note = training.pending_note(s)
            return [gr.update(value=note, visible=bool(note)), gr.update(visible=bool(note))]

        def after_model(s):
            if s is not None and s.pending_model is not None:  # A has edits: leave the Edit tab as it is
                return [s, *[gr.skip()] * (len(edit_outputs) - 1), *pending_updates(s)]
            return [*emit(opening.model_changed(s, limits)), *pending_updates(s)]

        train_evt = train_btn.click(on_train, [session, *settings_in],
                                    [session, loss_plot, parts_plot, health, train_status, model_file, prior_plot],
                                    concurrency_limit=limits.train_concurrency, concurrency_id="train",
                                    api_visibility="undocumented")
        train_evt.success(after_model, [session], [*edit_outputs, *pending_outputs], **quiet)
        # its own output: a reply landing after training's last update must not overwrite "Model ready"
        stop_btn.click(training.stop, [session], [stop_note], api_visibility="undocumented", queue=False)

        def on_model_upload(s, path):
            s = training.load_model_file(s, path)
            return [*after_model(s), path]

        model_up.upload(on_model_upload, [session, model_up], [*edit_outputs, *pending_outputs, model_file], **quiet)

        def on_use_model(s):
            s, note = training.use_pending_model(s)
            s = opening.open_defaults(s, limits)
            view = dataclasses.replace(pictures.full_view(s), status=note)
            return [*emit((s, view)), *pending_updates(s)]

        use_model_btn.click(on_use_model, [session], [*edit_outputs, *pending_outputs], **quiet)

        # API endpoints: files in, files out, for gradio_client
        api_btns[0].click(lambda f, m: api.api_train(f, m, limits), [api_files, api_minutes], [api_model_out, api_summary],
                          api_name="train", concurrency_limit=limits.train_concurrency, concurrency_id="train")
        # partial keeps each endpoint's parameter names (gradio_client's keywords) and adds the Space's limits
        api_btns[1].click(partial(api.api_encode, limits=limits), [api_model, api_audio], [api_codes_out],
                          api_name="encode")
        api_btns[2].click(partial(api.api_edit, limits=limits), [api_model, api_codes, api_op, api_other],
                          [api_codes_out], api_name="edit")
        api_btns[3].click(partial(api.api_decode, limits=limits), [api_model, api_codes, api_phase], [api_wave],
                          inputs_kwargs={"source_audio": api_source, "detail": api_detail}, api_name="decode")
        api_btns[4].click(partial(api.api_regenerate, limits=limits), [api_model, api_codes, api_region, api_strength,
                                                                      api_temperature, api_seed, api_candidates],
                          [api_codes_list], api_name="regenerate")

    demo.queue(max_size=limits.queue_size, default_concurrency_limit=4)
    explain_queue_full(demo, limits)
    return demo


def main() -> None:
    # A process of its own: glibc keeps the memory an encode's search frees for the next piece instead of
    # faulting it in again (a 10-minute clip opens in ~20 s instead of ~29 s on two cores; benchmarks/README.md).
    keep_freed_memory()
    limits = Limits.from_env()
    codec, label = load_demo(limits)
    demo = build_app(limits, codec, label)
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME"), **launch_kwargs(limits))

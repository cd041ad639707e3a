"""The Edit & Listen tab's event functions under their old address: a re-export, nothing defined here.

Each job has its own module (Session in, (Session, View) out; every event runs under its session's lock through
common.guarded); import from those in new code:

- common.py: View / SKIP, fail, guarded, safe_filename, to_int16, the need_* checks, A's audio over its viewport
- opening.py: start (page load), open_clip, read_clip / encode_source / encode_clip, set_model, model_changed,
  open_defaults, demo_clips, new_session
- pictures.py: render, full_view, the heatmaps, overview, mel and status texts, set_colours, move_view / scroll /
  zoom / play_whole
- editing.py: select / set_levels / select_all / clear_selection / cell_preview, edit, copy, run_operation, commit,
  undo / redo / reset, set_detail, set_render_mode
- exchange.py: export, import_codes
- regenerate.py, training.py, api.py: the Regenerate panel, the Data & Train tab, the API endpoints

Patch a name where it is used (e.g. `opening.set_model`, `editing.render`): rebinding it here changes nothing.
"""

from __future__ import annotations

from .common import (
    MAX_LEVELS,
    SAFE_NAME_BYTES,
    SKIP,
    Audio,
    Heatmaps,
    Skip,
    View,
    fail,
    getattr_default,
    guarded,
    need_b,
    need_codec,
    need_edit,
    need_sel,
    safe_filename,
    to_int16,
    view_edited,
    view_recon,
    view_span,
)
from .editing import (
    cell_preview,
    clear_selection,
    commit,
    copy,
    edit,
    redo,
    reset,
    run_operation,
    select,
    select_all,
    set_detail,
    set_levels,
    set_render_mode,
    undo,
)
from .exchange import export, import_codes
from .opening import (
    MIN_CLIP_SECONDS,
    USER_ERRORS,
    demo_clips,
    encode_clip,
    encode_source,
    model_changed,
    new_session,
    open_a,
    open_clip,
    open_defaults,
    open_status,
    read_clip,
    set_b,
    set_model,
    start,
    upload_label,
)
from .pictures import (
    COLOUR_MODES,
    code_colours,
    full_view,
    history_text,
    memory_text,
    model_summary,
    move_view,
    play_whole,
    render,
    scroll,
    selection_text,
    set_colours,
    zoom,
)

__all__ = [
    "COLOUR_MODES", "MAX_LEVELS", "MIN_CLIP_SECONDS", "SAFE_NAME_BYTES", "SKIP", "USER_ERRORS", "Audio", "Heatmaps",
    "Skip", "View", "cell_preview", "clear_selection", "code_colours", "commit", "copy", "demo_clips", "edit",
    "encode_clip", "encode_source", "export", "fail", "full_view", "getattr_default", "guarded", "history_text",
    "import_codes", "memory_text", "model_changed", "model_summary", "move_view", "need_b", "need_codec",
    "need_edit", "need_sel", "new_session", "open_a", "open_clip", "open_defaults", "open_status", "play_whole",
    "read_clip", "redo", "render", "reset", "run_operation", "safe_filename", "scroll", "select", "select_all",
    "selection_text", "set_b", "set_colours", "set_detail", "set_levels", "set_model", "set_render_mode", "start",
    "to_int16", "undo", "upload_label", "view_edited", "view_recon", "view_span", "zoom",
]

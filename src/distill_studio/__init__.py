"""Distill Studio: the Gradio app (train on a folder, edit code grids, listen). Imports gradio; `distill` never does."""

from .app import build_app
from .state import Limits

__all__ = ["Limits", "build_app"]

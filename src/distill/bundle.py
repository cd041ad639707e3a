"""Save and load a trained model as one `.distill` file: safetensors weights + JSON metadata, never pickle."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .config import VQVAEConfig
from .fileio import atomic_write_bytes
from .model import ConvVQVAE
from .spectrogram import MelConfig

BUNDLE_FORMAT = "distill-model"
BUNDLE_VERSION = "1"


class BundleError(ValueError):
    """A file that is not a usable Distill model; the message names the file and the reason."""


@dataclass
class BundleInfo:
    """Everything in a .distill file besides the weights."""

    config: VQVAEConfig
    mel: MelConfig
    fingerprint: str
    dataset: dict = field(default_factory=dict)   # file counts, durations, names
    health: dict = field(default_factory=dict)    # per-level codebook health at the end of training
    history: list = field(default_factory=list)   # [{step, train, val}] loss history
    usage: list = field(default_factory=list)     # [levels][codebook_size] code counts on the training set
    # the JSON strings exactly as stored: the fingerprint is checked against these, so a model saved
    # before VQVAEConfig gained a field still loads and keeps its fingerprint
    stored_config: str = field(default="", repr=False)

    def config_strings(self) -> tuple[str, str]:
        """(config JSON as stored, canonical mel JSON): what the fingerprint hashes."""
        return (self.stored_config or self.config.to_json(), mel_json(self.mel))

    def metadata(self) -> dict[str, str]:
        config_json, mel_str = self.config_strings()
        return {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "fingerprint": self.fingerprint,
            "config": config_json,
            "mel": mel_str,
            "dataset": json.dumps(self.dataset),
            "health": json.dumps(self.health),
            "history": json.dumps(self.history),
            "usage": json.dumps(self.usage),
        }


def state_to_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous, unshared CPU copies (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def mel_json(mel: MelConfig) -> str:
    return json.dumps(mel.to_dict(), sort_keys=True)


def fingerprint(tensors: dict[str, torch.Tensor], config: VQVAEConfig | str, mel: MelConfig | str) -> str:
    """A short hash of weights + configs: codes and edit histories carry it so they never meet the wrong model."""
    h = hashlib.sha256()
    h.update((config if isinstance(config, str) else config.to_json()).encode())
    h.update((mel if isinstance(mel, str) else mel_json(mel)).encode())
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def save_bundle(path: str | os.PathLike, model: ConvVQVAE, info: BundleInfo) -> None:
    """Write the model atomically (distill.fileio): an interrupted save leaves the old file as it was."""
    atomic_write_bytes(path, save(state_to_tensors(model), metadata=info.metadata()))


def read_info(path: str | os.PathLike) -> BundleInfo:
    """Read only the metadata (fast; used by `distill info`)."""
    name = os.path.basename(os.fspath(path))
    meta = _read_metadata(path, name)
    try:
        return BundleInfo(
            config=VQVAEConfig.from_dict(json.loads(meta["config"])),
            mel=MelConfig.from_dict(json.loads(meta["mel"])),
            fingerprint=meta["fingerprint"],
            dataset=json.loads(meta.get("dataset", "{}")),
            health=json.loads(meta.get("health", "{}")),
            history=json.loads(meta.get("history", "[]")),
            usage=json.loads(meta.get("usage", "[]")),
            stored_config=meta["config"],
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise BundleError(f"{name}: damaged Distill model metadata ({exc})") from exc


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ConvVQVAE, BundleInfo]:
    """Rebuild the model from a .distill file; BundleError for anything foreign, corrupt or mismatched."""
    name = os.path.basename(os.fspath(path))
    info = read_info(path)
    try:
        tensors = load_file(os.fspath(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{name}: damaged weights ({exc})") from exc
    model = ConvVQVAE(info.config, n_mels=info.mel.n_mels)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{name}: weights do not match the saved configuration ({str(exc)[:200]})") from exc
    if fingerprint(tensors, *info.config_strings()) != info.fingerprint:
        raise BundleError(f"{name}: fingerprint mismatch, the file was modified or is damaged")
    model.eval()
    return model.to(device), info


def _read_metadata(path: str | os.PathLike, name: str) -> dict[str, str]:
    """The header's metadata as safetensors reads it; BundleError unless it is a Distill model this version reads."""
    if not os.path.isfile(path):
        raise BundleError(f"{name}: no such model file")
    try:
        with safe_open(os.fspath(path), "pt") as f:
            meta = f.metadata()
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{name}: not a Distill model ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{name}: not a Distill model (a safetensors file from something else)")
    if meta.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{name}: model format version {meta.get('format_version')!r} is not supported "
                          f"(this Distill reads version {BUNDLE_VERSION})")
    return meta

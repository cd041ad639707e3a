"""Save and load a trained model as one `.distill` file: safetensors weights + JSON metadata, never pickle.

The file format only: it checks the weights against whatever network the caller builds from the stored
configuration (`load_weights`), and imports no model code (distill.codec.load_bundle builds the codec's).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .config import VQVAEConfig
from .fileio import atomic_write_bytes
from .prior.config import PRIOR_PREFIX, PriorConfig
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
    prior: dict = field(default_factory=dict)     # the prior's settings and training record; {} = no prior
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
            **({"prior": json.dumps(self.prior)} if self.prior else {}),
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


def save_bundle(path: str | os.PathLike, model: torch.nn.Module, info: BundleInfo,
                prior: dict[str, torch.Tensor] | None = None) -> None:
    """Write the model atomically (distill.fileio): an interrupted save leaves the old file as it was.

    `prior`: the prior's tensors, named with PRIOR_PREFIX (info.prior holds its settings). They sit
    beside the codec's weights and are not part of the fingerprint, so adding a prior keeps every
    code file and history made with the model valid."""
    tensors = state_to_tensors(model)
    if prior:
        if not info.prior:
            raise BundleError("a prior's weights need its settings in info.prior")
        tensors.update({k: v.detach().cpu().contiguous().clone() for k, v in prior.items()
                        if k.startswith(PRIOR_PREFIX)})
    elif info.prior:
        raise BundleError("info.prior describes a prior but no prior weights were given")
    atomic_write_bytes(path, save(tensors, metadata=info.metadata()))


def read_info(path: str | os.PathLike) -> BundleInfo:
    """Read only the metadata (fast; used by `distill info`); BundleError naming the file for anything
    damaged, of the wrong type or out of range (checked here, so no later step meets it)."""
    name = os.path.basename(os.fspath(path))
    meta = _read_metadata(path, name)
    try:
        fp = meta["fingerprint"]
        config = VQVAEConfig.from_dict(_typed_config(_json(meta["config"], "config", dict)))
        mel = _checked_mel(_json(meta["mel"], "mel", dict))
        info = BundleInfo(
            config=config, mel=mel, fingerprint=fp,
            dataset=_json(meta.get("dataset", "{}"), "dataset", dict),
            health=_checked_health(_json(meta.get("health", "{}"), "health", dict)),
            history=_checked_history(_json(meta.get("history", "[]"), "history", list)),
            usage=_checked_usage(_json(meta.get("usage", "[]"), "usage", list), config),
            prior=_checked_prior(_json(meta.get("prior", "{}"), "prior", dict)),
            stored_config=meta["config"],
        )
    except KeyError as exc:
        raise BundleError(f"{name}: damaged Distill model metadata (no {exc.args[0]!r})") from exc
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise BundleError(f"{name}: damaged Distill model metadata ({_one_line(exc)})") from exc
    if not (isinstance(fp, str) and fp):
        raise BundleError(f"{name}: damaged Distill model metadata (no fingerprint)")
    return info


def load_weights(path: str | os.PathLike, build: Callable[[BundleInfo], torch.nn.Module],
                 device: str | torch.device = "cpu") -> tuple[torch.nn.Module, BundleInfo]:
    """The network `build(info)` makes from a .distill file's configuration, with the file's weights; BundleError
    for anything foreign, corrupt or mismatched (distill.codec.load_bundle builds the codec's ConvVQVAE).

    The network is first built on the meta device (no memory) and every weight's name, shape and type
    compared with the file's, so a crafted configuration never allocates more than the file holds; the
    fingerprint is checked before the real network is built."""
    name = os.path.basename(os.fspath(path))
    info = read_info(path)
    cfg = info.config
    if cfg.res_blocks > MAX_RES_BLOCKS or max(cfg.channels) > MAX_CHANNELS:
        raise BundleError(f"{name}: configuration is larger than any Distill model (res_blocks {cfg.res_blocks}, "
                          f"channels {list(cfg.channels)}; at most {MAX_RES_BLOCKS} and {MAX_CHANNELS})")
    try:
        with safe_open(os.fspath(path), "pt") as f:  # the codec's tensors only: the prior's load with the prior
            tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith(PRIOR_PREFIX)}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{name}: damaged weights ({_one_line(exc)})") from exc
    try:
        with torch.device("meta"):
            skeleton = build(info)
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as exc:
        raise BundleError(f"{name}: the saved configuration cannot be built ({_one_line(exc)})") from exc
    expected = {k: (tuple(v.shape), v.dtype) for k, v in skeleton.state_dict().items()}
    found = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    if expected != found:
        raise BundleError(f"{name}: weights do not match the saved configuration ({_difference(expected, found)})")
    if fingerprint(tensors, *info.config_strings()) != info.fingerprint:
        raise BundleError(f"{name}: fingerprint mismatch, the file was modified or is damaged")
    model = build(info)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{name}: weights do not match the saved configuration ({_one_line(exc)})") from exc
    model.eval()
    return model.to(device), info


def load_prior_tensors(path: str | os.PathLike, info: BundleInfo) -> dict[str, torch.Tensor]:
    """The prior's weights (names without PRIOR_PREFIX) from a model file whose info has a prior; BundleError
    when they are missing, damaged or were trained against another codec."""
    name = os.path.basename(os.fspath(path))
    if info.prior.get("codec") not in ("", None, info.fingerprint):
        raise BundleError(f"{name}: its prior was trained for another model ({info.prior.get('codec')}, this model "
                          f"is {info.fingerprint}); retrain it with `distill prior`")
    try:
        with safe_open(os.fspath(path), "pt") as f:
            out = {k[len(PRIOR_PREFIX):]: f.get_tensor(k) for k in f.keys() if k.startswith(PRIOR_PREFIX)}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{name}: damaged prior weights ({_one_line(exc)})") from exc
    if not out:
        raise BundleError(f"{name}: the prior's settings are there but its weights are missing")
    return out


MAX_RES_BLOCKS = 64        # per stage; the largest setting anyone trains is a handful
MAX_CHANNELS = 8192        # per layer


def _what_it_is(path: str | os.PathLike, exc: BaseException) -> str:
    """Why safetensors could not read a file, in words: what the file looks like instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    if not head:
        return "the file is empty"
    if head.startswith(b"PK"):
        return "a zip archive, e.g. a PyTorch checkpoint; Distill models are safetensors files"
    if head[:1] == b"\x80":
        return "a Python pickle; Distill never unpickles files, its models are safetensors files"
    text = _one_line(exc)
    if "not fully covered" in text or "incomplete" in text:
        return f"the file is cut short or damaged: {text}"
    return f"not a safetensors file: {text}"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit] + ("..." if len(text) > limit else "")


def _difference(expected: dict, found: dict) -> str:
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        return f"{len(missing)} weights missing, e.g. {missing[0]}"
    if extra:
        return f"{len(extra)} unexpected weights, e.g. {extra[0]}"
    key = next(k for k in sorted(expected) if expected[k] != found[k])
    (shape, dtype), (fshape, fdtype) = expected[key], found[key]
    return f"{key} is {list(fshape)} {str(fdtype).removeprefix('torch.')}, the configuration needs {list(shape)} " \
           f"{str(dtype).removeprefix('torch.')}"


def _json(text: object, what: str, kind: type) -> object:
    """One metadata entry: JSON text of the given kind (object or list)."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is not text")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{what} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _typed_config(d: dict) -> dict:
    """Refuse config values of the wrong type (a fractional codebook size, a text channel count) before
    VQVAEConfig checks their ranges: each field must have its default's type (a whole-number float such
    as 16.0, as a hand-written --config may hold, is read as an int)."""
    def whole(v: object) -> int | None:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return None

    out = dict(d)
    for f in fields(VQVAEConfig):
        if f.name not in d or f.default is MISSING:
            continue
        value, default = d[f.name], f.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = whole(value) is not None
            out[f.name] = whole(value)
        elif isinstance(default, float):
            ok = _is_number(value) and math.isfinite(value)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, tuple):
            ok = isinstance(value, list) and all(whole(v) is not None for v in value)
            out[f.name] = [whole(v) for v in value] if ok else value
        else:
            ok = True
        if not ok:
            kind = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
                    tuple: "a list of whole numbers"}.get(type(default), type(default).__name__)
            raise ValueError(f"config field {f.name} is {str(value)[:40]!r}, not {kind}")
    return out


def _checked_mel(d: dict) -> MelConfig:
    """The front end's settings, within what a spectrogram can be built from."""
    mel = MelConfig.from_dict(d)
    whole = {k: getattr(mel, k) for k in ("sample_rate", "n_fft", "hop_length", "n_mels")}
    for k, v in whole.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"mel {k} is {v!r}, not a whole number")
    nyquist = mel.sample_rate / 2
    f_max = nyquist if mel.f_max is None else mel.f_max
    if not (1000 <= mel.sample_rate <= 384_000 and 16 <= mel.n_fft <= 65_536 and 1 <= mel.hop_length <= mel.n_fft // 2
            and 8 <= mel.n_mels <= min(1024, mel.n_fft // 2 + 1)):
        raise ValueError(f"mel settings out of range ({whole})")
    if not (_is_number(mel.f_min) and _is_number(f_max) and 0 <= mel.f_min < f_max <= nyquist):
        raise ValueError(f"mel f_min {mel.f_min!r} / f_max {mel.f_max!r} must satisfy 0 <= f_min < f_max <= {nyquist:g}")
    return mel


def _checked_health(health: dict) -> dict:
    """Codebook health as `distill info` shows it: levels of {name, verdict, utilization, perplexity, dead_codes}."""
    levels = health.get("levels", [])
    if not isinstance(levels, list):
        raise ValueError("health levels must be a list")
    for h in levels:
        if not (isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("verdict"), str)
                and all(_is_number(h.get(k)) for k in ("utilization", "perplexity", "dead_codes"))):
            raise ValueError(f"health level {str(h)[:60]} lacks its name, verdict or figures")
    return health


def _checked_history(history: list) -> list:
    """The loss history: points {step, train/val/...: number}."""
    for h in history:
        if not (isinstance(h, dict) and isinstance(h.get("step"), int)
                and all(_is_number(v) for v in h.values())):
            raise ValueError(f"loss history point {str(h)[:60]} is not {{step, losses}}")
    return history


def _checked_usage(usage: list, config: VQVAEConfig) -> list:
    """Training-set code counts: none, or [levels][codebook_size] finite counts >= 0."""
    if not usage:
        return usage
    if len(usage) != config.num_quantizers or not all(
            isinstance(u, list) and len(u) == config.codebook_size
            and all(_is_number(c) and math.isfinite(c) and 0 <= c < 1e15 for c in u) for u in usage):
        raise ValueError(f"code usage must be {config.num_quantizers} lists of {config.codebook_size} counts >= 0")
    return usage


def _checked_prior(prior: dict) -> dict:
    """The prior's record: none, or {config: PriorConfig fields, codec: fingerprint, ...}. A record this version
    cannot use never blocks the codec: it comes back as {"error": why}, so the model still loads (regenerate
    says why it is unavailable) and `distill prior` can replace it."""
    if not prior:
        return prior
    try:
        PriorConfig.from_dict(prior.get("config"))
        if not isinstance(prior.get("codec", ""), str):
            raise ValueError("its codec fingerprint is not text")
    except (ValueError, TypeError) as exc:
        return {"error": _one_line(exc)}
    return prior


def _read_metadata(path: str | os.PathLike, name: str) -> dict[str, str]:
    """The header's metadata as safetensors reads it; BundleError unless it is a Distill model this version reads."""
    if os.path.isdir(path):
        raise BundleError(f"{name}: a folder, not a model file")
    if not os.path.isfile(path):
        raise BundleError(f"{name}: no such model file")
    try:
        with safe_open(os.fspath(path), "pt") as f:
            meta = f.metadata()
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{name}: not a Distill model ({_what_it_is(path, exc)})") from exc
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{name}: not a Distill model (a safetensors file from something else)")
    if meta.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{name}: model format version {meta.get('format_version')!r} is not supported "
                          f"(this Distill reads version {BUNDLE_VERSION})")
    return meta

"""Distill: train a residual-VQ autoencoder on your own audio and edit its Structure / Timbre / Detail codes."""

from .audio import (
    AudioError,
    FileVerdict,
    ScanReport,
    SourceAudio,
    TooLong,
    check_length,
    load_audio,
    load_source,
    scan_folder,
    scan_paths,
)
from .bundle import BundleError, BundleInfo, read_info, save_bundle
from .codec import Codec, Progress, keep_freed_memory, load_bundle
from .codes import CodeGrid, CodesError
from .config import LEVEL_NAMES, VQVAEConfig, adaptive_config
from .edits import (
    OPERATION_SYNTAX,
    DonorPatch,
    EditError,
    EditHistory,
    EditResult,
    Region,
    apply_operation,
    parse_region,
)
from .edits.operations import DEFAULT_CANDIDATES, DEFAULT_TEMPERATURE, MAX_CANDIDATES, RegenerateSettings
from .fileio import atomic_write, atomic_write_text, atomic_write_wav
from .health import LevelHealth
from .losses import LOSS_KEYS  # names of the loss terms in TrainEvent.losses / .val_losses, in a fixed order
from .model import ConvVQVAE, VQDecoder, VQEncoder
from .prior import DEFAULT_PRIOR_SHARE, NO_PRIOR_HELP, CodePrior, PriorConfig, PriorError, PriorTrainer
from .render import DEFAULT_DETAIL, RenderError
from .session import Clip, EditSession, Rendered, clip_from_source, clip_nbytes, load_clip, read_document
from .spectrogram import MelConfig, MelFrontEnd
from .train import Trainer, TrainEvent, TrainingError, TrainResult, split_budget, train_prior_after

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_DETAIL", "OPERATION_SYNTAX", "Clip", "DonorPatch", "EditError", "EditHistory", "EditResult",
    "EditSession", "Region", "RenderError", "Rendered", "SourceAudio", "apply_operation", "clip_from_source", "clip_nbytes",
    "load_clip", "load_source", "parse_region", "read_document", "atomic_write", "atomic_write_text", "atomic_write_wav",
    "AudioError", "BundleError", "BundleInfo", "Codec", "CodeGrid", "CodesError", "ConvVQVAE", "FileVerdict",
    "LEVEL_NAMES", "LOSS_KEYS", "LevelHealth", "MelConfig", "MelFrontEnd", "ScanReport", "TrainEvent", "TrainResult", "Trainer",
    "TrainingError", "VQDecoder", "VQEncoder", "VQVAEConfig", "adaptive_config", "load_audio", "load_bundle",
    "read_info", "save_bundle", "scan_folder", "scan_paths", "TooLong", "check_length",
    "DEFAULT_CANDIDATES", "DEFAULT_PRIOR_SHARE", "DEFAULT_TEMPERATURE", "MAX_CANDIDATES", "NO_PRIOR_HELP", "CodePrior", "PriorConfig",
    "PriorError", "PriorTrainer", "RegenerateSettings", "split_budget", "train_prior_after", "Progress",
    "keep_freed_memory",
]

"""Distill: train a residual-VQ autoencoder on your own audio and edit its Structure / Timbre / Detail codes."""

from .audio import AudioError, FileVerdict, ScanReport, load_audio, scan_folder, scan_paths
from .bundle import BundleError, BundleInfo, load_bundle, read_info, save_bundle
from .codec import Codec
from .codes import CodeGrid, CodesError
from .config import LEVEL_NAMES, VQVAEConfig, adaptive_config
from .model import ConvVQVAE, VQDecoder, VQEncoder
from .spectrogram import MelConfig, MelFrontEnd
from .train import LevelHealth, Trainer, TrainEvent, TrainingError, TrainResult

__version__ = "0.1.0"

__all__ = [
    "AudioError", "BundleError", "BundleInfo", "Codec", "CodeGrid", "CodesError", "ConvVQVAE", "FileVerdict",
    "LEVEL_NAMES", "LevelHealth", "MelConfig", "MelFrontEnd", "ScanReport", "TrainEvent", "TrainResult", "Trainer",
    "TrainingError", "VQDecoder", "VQEncoder", "VQVAEConfig", "adaptive_config", "load_audio", "load_bundle",
    "read_info", "save_bundle", "scan_folder", "scan_paths",
]

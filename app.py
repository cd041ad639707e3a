"""Distill Studio: `python app.py` opens it locally; the same file is the Hugging Face Space entry point."""

import sys
from pathlib import Path

try:
    import distill_studio  # noqa: F401  (installed with `pip install -e .`)
except ImportError:  # a Space that installed only the dependencies: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from distill_studio.app import main  # noqa: E402

if __name__ == "__main__":
    main()

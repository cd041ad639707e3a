"""Distill Studio: `python app.py` opens it locally; the same file is the Hugging Face Space entry point."""

from distill_studio.app import main

if __name__ == "__main__":
    main()

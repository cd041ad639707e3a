"""What a Hugging Face Space needs: requirements.txt in step with pyproject, app.py importable from a bare checkout, the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_pin_the_same_runtime_dependencies_as_pyproject():
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert set(deps) <= reqs, f"requirements.txt misses {set(deps) - reqs}"
    assert "torch==2.14.1" in reqs and "torchaudio==2.11.0" in reqs


def test_app_py_finds_the_source_tree_without_an_install(tmp_path):
    """As on a Space: dependencies installed, the project not; `python -S` skips the editable-install hook."""
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    code = (f"import runpy; runpy.run_path({str(ROOT / 'app.py')!r}, run_name='not_main'); "
            "import distill_studio; print(distill_studio.__file__)")
    env = {"PYTHONPATH": site, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    bare = subprocess.run([sys.executable, "-S", "-c", "import distill_studio"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert bare.returncode != 0, "the project is importable without app.py's fallback; this test proves nothing"
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(ROOT / "src") in out.stdout


def test_demo_assets_open_in_the_studio():
    """The bundled model must load with this version of distill (retrain it with assets/make_demo.py's command if not)."""
    from distill import Codec
    from distill_studio.handlers import demo_clips

    model = ROOT / "assets" / "demo.distill"
    if not model.exists():
        pytest.skip("assets/demo.distill has not been trained yet")
    codec = Codec.load(model)
    clips = demo_clips(str(ROOT / "assets" / "demo"))
    assert len(clips) >= 8
    assert model.stat().st_size < 20 * 2**20
    assert codec.config.num_quantizers == 3


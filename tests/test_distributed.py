"""Data-parallel training under torchrun with gloo on the CPU (distill.parallel): two processes train one model,
only rank 0 writes, both ranks end with the same codebooks, and a rank killed mid-run ends the job with a message
and a checkpoint that `--resume` continues (with another number of processes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import tone, write_corpus

from distill import Codec

TINY = {"codebook_size": 32, "codebook_dim": 32, "channels": [8, 16, 16, 32], "res_blocks": 1, "batch_size": 4,
        "warmup_steps": 2, "decay": 0.8}


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "distill.cli", "train", *args]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_corpus(root / "audio", n=8)
    (root / "tiny.json").write_text(json.dumps(TINY))
    return root


@pytest.mark.parametrize("norm", ["channel", "batch"])   # the default, and BatchNorm's running statistics
def test_two_gloo_processes_train_one_model_that_rank_0_alone_writes(setup, norm):
    out = setup / f"run-{norm}"
    out.mkdir()
    model = out / "two.distill"
    (setup / f"tiny-{norm}.json").write_text(json.dumps({**TINY, "norm": norm}))
    proc = subprocess.run(torchrun(str(setup / "audio"), "-o", str(model), "--epochs", "3", "--prior-share", "0",
                                   "--config", str(setup / f"tiny-{norm}.json"), "-q"),
                          capture_output=True, text=True, env=env(), timeout=240)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    digests = dict(re.findall(r"rank (\d) of 2, codebooks ([0-9a-f]{16})", text))
    assert set(digests) == {"0", "1"}, text[-3000:]
    assert digests["0"] == digests["1"]                 # one model (weights, codebooks, statistics), not two
    assert sorted(p.name for p in out.iterdir()) == ["two.distill", "two.distill.cache", "two.distill.ckpt"]
    assert text.count("saved ") == 1                            # rank 0 alone saved
    codec = Codec.load(model)
    grid = codec.encode(tone(1.0))
    assert grid.codes.shape[0] == 3
    training = codec.info.dataset["training"]
    assert training["world_size"] == 2 and training["backend"] == "gloo" and training["crops_per_step"] == 8
    info = subprocess.run([sys.executable, "-m", "distill.cli", "info", str(model)], capture_output=True, text=True,
                          env=env(), timeout=60)
    assert "2 x cpu (2 processes, backend gloo)" in info.stdout


def _children(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _rank_of(pid: int) -> str | None:
    try:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    found = [e[5:].decode() for e in environ if e.startswith(b"RANK=")]
    return found[0] if found else None


def test_a_rank_killed_mid_run_ends_the_job_with_a_message_and_a_checkpoint_resume_continues(setup):
    out = setup / "killed"
    out.mkdir()
    model, ckpt = out / "k.distill", out / "k.distill.ckpt"
    proc = subprocess.Popen(torchrun(str(setup / "audio"), "-o", str(model), "--minutes", "3", "--prior-share", "0",
                                     "--config", str(setup / "tiny.json"), "--checkpoint-every", "0.5", "-q"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert ckpt.exists(), "no checkpoint was written"
        victims = [p for p in _children(proc.pid) if _rank_of(p) == "1"]
        assert victims, "rank 1 not found"
        for p in victims:
            os.kill(p, signal.SIGKILL)
        text, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "the run lost another rank" in text and f"--resume {ckpt}" in text, text[-3000:]
    assert not model.exists()
    resumed = subprocess.run([sys.executable, "-m", "distill.cli", "train", str(setup / "audio"), "-o", str(model),
                              "--resume", str(ckpt), "--epochs", "2", "--prior-share", "0",
                              "--config", str(setup / "tiny.json"), "-q"],
                             capture_output=True, text=True, env=env(), timeout=240)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert re.search(r"resumed at step \d+", resumed.stderr)
    assert Codec.load(model).info.dataset["training"]["world_size"] == 1


def test_only_errors_of_the_process_group_are_called_a_lost_rank():
    from distill.parallel import lost_rank
    from distill.train import TrainingError

    assert lost_rank(RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"))
    assert not lost_rank(TrainingError("cannot resume from a.ckpt: this run differs (num_quantizers 3 -> 4)"))
    assert not lost_rank(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))

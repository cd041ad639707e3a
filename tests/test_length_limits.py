"""Issue 25 (2, 3, systemic): every way a file enters the studio checks the length limits before any decode.

An hour of stereo silence is a FLAC of a few hundred KB; decoding it to find out it is too long took seconds and
gigabytes. The studio's uploads, every API endpoint and the dataset scan read the length from the header (or,
for formats whose header may lie, count decoded blocks and stop at the limit) and refuse at once, naming the
file, its length, the limit and the variable that sets it. Imported codes and histories get the clip limit,
and a JSON file over DISTILL_MAX_JSON_MB is refused before it is read.
"""

from __future__ import annotations

import math
import os
import threading
import time
import tracemalloc
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from distill_studio import api, handlers, training
from distill_studio.state import Limits

HOUR_RATE = 24000          # an hour of stereo at 24 kHz: 691 MB as float32 once decoded, 0.3 MB as FLAC
MAX_GROWTH_MB = 200
MAX_SECONDS = 1.0


def write_silence(path: Path, seconds: float, rate: int, channels: int = 2, **kwargs) -> Path:
    """`seconds` of silence written a block at a time (never the whole clip in memory)."""
    block = np.zeros((1 << 20, channels), np.float32)
    with sf.SoundFile(path, "w", rate, channels, **kwargs) as f:
        left = int(seconds * rate)
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    return path


def flac_claiming(path: Path, claimed_seconds: float) -> Path:
    """One second of tone as FLAC whose STREAMINFO says it holds `claimed_seconds` (a damaged or crafted file)."""
    sf.write(path, tone(1.0, 330, sr=8000), 8000, format="FLAC")
    data = bytearray(path.read_bytes())
    at = 8 + 10                                  # 'fLaC', the block header, then 10 bytes before rate..total
    fields = int.from_bytes(data[at:at + 8], "big")
    fields = (fields & ~((1 << 36) - 1)) | int(claimed_seconds * 8000)
    data[at:at + 8] = fields.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def hour_flac(tmp_path_factory) -> Path:
    return write_silence(tmp_path_factory.mktemp("hour") / "hour.flac", 3600, HOUR_RATE, format="FLAC",
                         subtype="PCM_16")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measured(fn):
    """Run fn() -> (the exception it raised or None, seconds, peak RSS growth in MB, peak traced MB).

    RSS is sampled every 2 ms by a thread (ru_maxrss is the process's lifetime peak, useless inside pytest);
    tracemalloc sees numpy's arrays, so a short-lived buffer the sampler misses still counts."""
    base, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    t0, error = time.perf_counter(), None
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the caller checks what was raised
        error = exc
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    done.set()
    sampler.join()
    return error, seconds, max(0.0, peak[0] - base), traced


def _refused_at_once(fn, *words: str) -> str:
    error, seconds, growth, traced = measured(fn)
    assert error is not None, "accepted"
    text = getattr(error, "message", None) or str(error)
    for w in words:
        assert w in text, (w, text)
    assert seconds < MAX_SECONDS, f"{seconds:.2f} s before refusing"
    assert max(growth, traced) < MAX_GROWTH_MB, f"grew {growth:.0f} MB (traced {traced:.0f} MB) before refusing"
    return text


# ---------------------------------------------------------------------- the one check
def test_check_length_reads_the_header_not_the_samples(hour_flac):
    from distill.audio import TooLong, check_length

    text = _refused_at_once(lambda: check_length(hour_flac, 1800, "DISTILL_MAX_CLIP_SECONDS"),
                            "hour.flac", "3600 s", "1800 s", "DISTILL_MAX_CLIP_SECONDS")
    assert str(hour_flac.parent) not in text                     # the file's name, not its temp path
    with pytest.raises(TooLong) as info:
        check_length(hour_flac, 1800, "DISTILL_MAX_CLIP_SECONDS")
    assert info.value.seconds == pytest.approx(3600) and info.value.max_seconds == 1800
    assert check_length(hour_flac, 4000, "X") == (3600 * HOUR_RATE, HOUR_RATE, 2)


def test_a_flac_that_claims_hours_is_refused_from_its_header(tmp_path):
    from distill.audio import check_length

    lying = flac_claiming(tmp_path / "claims.flac", 7200)
    _refused_at_once(lambda: check_length(lying, 60, "DISTILL_MAX_CLIP_SECONDS"), "claims.flac", "7200 s", "60 s")


@pytest.mark.parametrize("fmt, subtype, ext", [("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")])
def test_formats_whose_header_may_lie_are_counted_and_counting_stops_at_the_limit(tmp_path, monkeypatch, fmt,
                                                                                  subtype, ext):
    """Ogg and MP3 lengths come from the last page / a tag or a bitrate estimate: the check decodes in blocks
    and stops once past the limit instead of trusting it."""
    from distill import audio

    path = write_silence(tmp_path / f"minute.{ext}", 60, 8000, channels=1, format=fmt, subtype=subtype)
    decoded = []
    real = sf.SoundFile.buffer_read_into
    monkeypatch.setattr(sf.SoundFile, "buffer_read_into",
                        lambda self, buf, dtype: decoded.append(real(self, buf, dtype)) or decoded[-1])
    with pytest.raises(audio.TooLong, match=rf"minute\.{ext}: longer than the limit of 5 s .*DISTILL_X"):
        audio.check_length(path, 5, "DISTILL_X")
    assert 5 * 8000 < sum(decoded) <= 5 * 8000 + 2 * audio.COUNT_BLOCK     # stopped just past the limit
    decoded.clear()
    frames, rate, channels = audio.check_length(path, 120, "DISTILL_X")
    assert (rate, channels) == (8000, 1) and abs(frames - 60 * 8000) < 8000 and sum(decoded) == frames


# ---------------------------------------------------------------------- the studio
def test_the_studio_refuses_an_hour_of_flac_before_decoding_it(codec, hour_flac):
    _refused_at_once(lambda: handlers.read_clip(codec, str(hour_flac), "hour.flac", Limits()),
                     "hour.flac", "3600 s", "1800 s", "DISTILL_MAX_CLIP_SECONDS")


def test_an_upload_over_the_limit_is_refused_and_the_session_is_unchanged(session, hour_flac):
    a, clips = session.a, dict(session.clips)
    _refused_at_once(lambda: handlers.open_clip(session, "A", None, str(hour_flac), Limits()),
                     "hour.flac", "DISTILL_MAX_CLIP_SECONDS")
    assert session.a is a and session.clips == clips


@pytest.fixture(scope="module")
def twelve(codec, tmp_path_factory):
    """A 12-second clip, its codes JSON and a history JSON of it (one edit), made without the studio's limits."""
    from distill import EditSession, clip_from_source, load_source

    folder = tmp_path_factory.mktemp("twelve")
    wav = folder / "twelve.wav"
    sf.write(wav, tone(12.0, 220, decay=0.1), 48000)
    session = EditSession(codec, clip_from_source(codec, load_source(wav), search_steps=0))
    codes = folder / "twelve.codes.json"
    session.clip.grid.save(codes)
    session.apply("reverse Structure@0.0-1.0")
    history = folder / "twelve.history.json"
    history.write_text(session.to_json())
    return wav, codes, history


def test_imported_codes_and_histories_keep_the_clip_limit(session, twelve):
    """Issue 25.3: with a 5 s limit the 12 s audio is refused, and so are its codes and its history."""
    wav, codes, history = twelve
    limits = Limits(max_clip_seconds=5)
    a = session.a
    with pytest.raises(gr.Error, match="DISTILL_MAX_CLIP_SECONDS"):
        handlers.open_clip(session, "A", None, str(wav), limits)
    for doc in (codes, history):
        with pytest.raises(gr.Error, match=rf"{doc.name}: 12 s long, over the limit of 5 s .*DISTILL_MAX_CLIP_SECONDS"):
            handlers.import_codes(session, str(doc), limits)
    assert session.a is a
    handlers.import_codes(session, str(codes), Limits(max_clip_seconds=20))   # within the limit it opens
    assert session.a.grid.duration_s == pytest.approx(12.0, abs=0.01)


def test_import_decodes_only_the_clip_whose_header_matches_the_codes(session, twelve, tmp_path, monkeypatch):
    """Second reader (issue 25): import walked the whole clip list decoding every file to compare hashes (and
    refused over-limit codes only afterwards). Now the codes are checked first, and a listed file is decoded
    only when its header gives the rate and length the codes record."""
    from distill import audio

    wav, codes, _ = twelve
    others = {f"c{i}": str(write_silence(tmp_path / f"c{i}.wav", 1.0 + i, 48000, channels=1)) for i in range(6)}
    session.clips.update(others, twelve=str(wav))
    decoded = []
    real = audio.load_audio
    monkeypatch.setattr(audio, "load_audio", lambda p, *a, **k: decoded.append(os.path.basename(p)) or real(p, *a, **k))
    handlers.import_codes(session, str(codes), Limits(max_clip_seconds=20))
    assert session.a.has_audio and decoded == ["twelve.wav"]
    decoded.clear()
    with pytest.raises(gr.Error, match="over the limit of 10 s"):
        handlers.import_codes(session, str(codes), Limits(max_clip_seconds=10))
    assert decoded == []


def test_a_json_over_the_size_cap_is_refused_before_it_is_read(session, twelve, monkeypatch):
    _, codes, _ = twelve
    limits = Limits(max_json_mb=0.001)   # the codes are ~9 KB
    read = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: read.append(self) or real(self, *a, **k))
    with pytest.raises(gr.Error, match=rf"{codes.name}: .* MB is over .* 0.001 MB .*DISTILL_MAX_JSON_MB"):
        handlers.import_codes(session, str(codes), limits)
    assert codes not in read


def test_clips_in_the_list_over_the_limit_are_not_decoded_to_match_imported_codes(session, twelve, hour_flac,
                                                                                   monkeypatch):
    """Import looks for the codes' audio in the clip list: a clip the studio would not open is not read for it."""
    from distill import audio

    _, codes, _ = twelve
    session.clips["hour"] = str(hour_flac)
    loaded = []   # files whose samples soundfile decodes: the hour may be opened for its header, never read
    for owner, fn in ((audio.sf.SoundFile, "read"), (audio.sf.SoundFile, "buffer_read_into")):
        real = getattr(owner, fn)
        monkeypatch.setattr(owner, fn, lambda f, *a, _real=real, **k: loaded.append(f.name) or _real(f, *a, **k))
    real_read = audio.sf.read
    monkeypatch.setattr(audio.sf, "read", lambda p, *a, **k: loaded.append(str(p)) or real_read(p, *a, **k))
    error, seconds, growth, _ = measured(lambda: handlers.import_codes(session, str(codes), Limits(max_clip_seconds=20)))
    assert error is None and str(hour_flac) not in loaded and seconds < 10


# ---------------------------------------------------------------------- the API
def test_encode_refuses_an_hour_of_flac_before_decoding_it(trained, hour_flac):
    model = str(trained[1])
    api._codec(model)   # loaded once, as every later call finds it
    _refused_at_once(lambda: api.api_encode(model, str(hour_flac), Limits()),
                     "hour.flac", "3600 s", "1800 s", "DISTILL_MAX_CLIP_SECONDS")


def test_every_endpoint_keeps_the_clip_and_json_limits(prior_codec, twelve, tmp_path):
    model = str(prior_codec[1])
    wav, codes, history = twelve
    short_wav = tmp_path / "short.wav"
    sf.write(short_wav, tone(1.0, 330), 48000)
    short = api.api_encode(model, str(short_wav), Limits())
    limits = Limits(max_clip_seconds=5)
    clip = "DISTILL_MAX_CLIP_SECONDS"
    for call in (lambda: api.api_encode(model, str(wav), limits),
                 lambda: api.api_edit(model, str(codes), "reverse Structure@0.0-1.0", None, limits),
                 lambda: api.api_edit(model, str(history), "reverse Structure@0.0-1.0", None, limits),
                 lambda: api.api_edit(model, short, "reverse Structure@0.0-0.5", str(codes), limits),
                 lambda: api.api_regenerate(model, str(codes), "Detail@0.0-1.0", limits=limits),
                 lambda: api.api_decode(model, str(codes), None, limits),
                 lambda: api.api_decode(model, short, str(wav), limits)):
        with pytest.raises(gr.Error, match=rf"twelve\.\S+: 12 s long, over the limit of 5 s .*{clip}"):
            call()
    tiny = Limits(max_json_mb=0.001)
    for call in (lambda: api.api_edit(model, str(codes), "reverse Structure@0.0-1.0", None, tiny),
                 lambda: api.api_regenerate(model, str(history), "Detail@0.0-1.0", limits=tiny),
                 lambda: api.api_decode(model, str(codes), None, tiny)):
        with pytest.raises(gr.Error, match="DISTILL_MAX_JSON_MB"):
            call()
    rate, wave = api.api_decode(model, short, str(short_wav), limits)   # within the limits: decoded
    assert rate == 48000 and len(wave) == 48000


# ---------------------------------------------------------------------- the dataset scan
def test_the_dataset_scan_refuses_audio_past_the_total_from_its_header(hour_flac, tmp_path):
    ok = tmp_path / "ok.wav"
    sf.write(ok, tone(1.0, 220), 48000)
    limits = Limits(max_total_minutes=10)
    report = None

    def scan():
        nonlocal report
        report = training.limited_scan([str(hour_flac), str(ok)], limits)

    error, seconds, growth, traced = measured(scan)
    assert error is None and seconds < MAX_SECONDS and max(growth, traced) < MAX_GROWTH_MB, (seconds, growth, traced)
    hour, fine = report.verdicts
    assert not hour.accepted and "DISTILL_MAX_TOTAL_MINUTES" in hour.reason and "60.0 min" in hour.reason
    assert fine.accepted


def test_the_total_is_counted_before_decoding_each_file(tmp_path, monkeypatch):
    """Two 40 s files with a one-minute total: the second is refused without being decoded."""
    from distill import audio

    paths = [str(tmp_path / f"f{i}.flac") for i in range(2)]
    for i, p in enumerate(paths):
        sf.write(p, tone(40.0, 220 * (i + 1), sr=8000, decay=0.0), 8000)
    peaked = []
    real = audio._peak
    monkeypatch.setattr(audio, "_peak", lambda p, *a, **k: peaked.append(str(p)) or real(p, *a, **k))
    first, second = training.limited_scan(paths, Limits(max_total_minutes=1)).verdicts
    assert first.accepted and not second.accepted and "DISTILL_MAX_TOTAL_MINUTES" in second.reason
    assert peaked == [paths[0]]


def test_the_core_scan_takes_a_per_file_limit(hour_flac, tmp_path):
    from distill.audio import scan_folder, scan_paths

    error, seconds, _, _ = measured(lambda: scan_paths([hour_flac], max_seconds=60, variable="DISTILL_X"))
    assert error is None and seconds < MAX_SECONDS
    (v,) = scan_paths([hour_flac], max_seconds=60, variable="DISTILL_X").verdicts
    assert not v.accepted and "3600 s long, over the limit of 60 s" in v.reason and "DISTILL_X" in v.reason
    assert scan_folder(hour_flac.parent, max_seconds=60, variable="DISTILL_X").verdicts[0].reason == v.reason


# ---------------------------------------------------------------------- one decode under a limit (issue 25 follow-up)
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if r & 0x80000000 else (r << 1) & 0xFFFFFFFF
        table.append(r)
    return table


def ogg_claiming(path: Path, seconds: float, claimed_seconds: float, rate: int = 8000) -> Path:
    """`seconds` of noise as Ogg Vorbis whose last page's granule (where its length is read from) says
    `claimed_seconds` (a damaged or crafted file; the page's CRC is recomputed so the page still reads)."""
    import struct

    noise = 0.1 * np.random.default_rng(1).standard_normal(int(seconds * rate)).astype(np.float32)
    sf.write(path, noise, rate, format="OGG", subtype="VORBIS")
    data = bytearray(path.read_bytes())
    at = data.rfind(b"OggS")
    segments = data[at + 27:at + 27 + data[at + 26]]
    end = at + 27 + len(segments) + sum(segments)
    struct.pack_into("<q", data, at + 6, int(claimed_seconds * rate))
    struct.pack_into("<I", data, at + 22, 0)
    crc, table = 0, _crc_table()
    for b in bytes(data[at:end]):
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) & 0xFF) ^ b]
    struct.pack_into("<I", data, at + 22, crc)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def decoded_frames(monkeypatch):
    """Frames soundfile decodes from now on, per file name (every decode goes through one of these two)."""
    counts: dict[str, int] = {}
    read, read_into = sf.SoundFile.read, sf.SoundFile.buffer_read_into

    def counting_read(self, *args, **kwargs):
        out = read(self, *args, **kwargs)
        counts[os.path.basename(str(self.name))] = counts.get(os.path.basename(str(self.name)), 0) + len(out)
        return out

    def counting_read_into(self, buffer, dtype):
        n = read_into(self, buffer, dtype)
        counts[os.path.basename(str(self.name))] = counts.get(os.path.basename(str(self.name)), 0) + n
        return n

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    monkeypatch.setattr(sf.SoundFile, "buffer_read_into", counting_read_into)
    return counts


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt, subtype, ext", [("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")])
def test_an_accepted_ogg_is_decoded_once_under_a_limit(tmp_path, decoded_frames, channels, fmt, subtype, ext):
    """Ogg's (and MP3's) length is found by decoding it: under a limit, load_audio keeps what it decodes (one
    pass), and gives exactly the samples a load without a limit gives (an MP3 decoder rounds differently at the
    edges of each read: the codes' source hash must not depend on whether a limit was set)."""
    from distill import audio

    wave = np.stack([tone(7.3, 220 * (c + 1), sr=44100, seed=c) for c in range(channels)], axis=1)
    path = tmp_path / f"take.{ext}"
    sf.write(path, wave, 44100, format=fmt, subtype=subtype)
    name = path.name
    decoded_frames.clear()
    wave, rate = audio.load_audio(path, max_seconds=10, variable="DISTILL_X")
    assert rate == 44100 and decoded_frames == {name: len(wave)}          # decoded once, not counted then read
    assert abs(len(wave) - 7.3 * 44100) < 4410
    reference, _ = audio.load_audio(path)
    assert np.array_equal(wave, reference)
    assert audio.load_source(path, max_seconds=10, variable="X").sha256 == audio.load_source(path).sha256
    decoded_frames.clear()
    resampled, rate = audio.load_audio(path, 48000, max_seconds=10, variable="DISTILL_X")
    assert decoded_frames == {name: len(wave)}
    assert rate == 48000 and np.array_equal(resampled, audio.load_audio(path, 48000)[0])


def test_loading_an_ogg_over_the_limit_stops_there_in_little_memory(tmp_path, decoded_frames):
    from distill import audio

    path = write_silence(tmp_path / "minute.ogg", 60, 8000, channels=2, format="OGG", subtype="VORBIS")
    decoded_frames.clear()
    error, seconds, growth, traced = measured(lambda: audio.load_audio(path, max_seconds=5, variable="DISTILL_X"))
    assert isinstance(error, audio.TooLong), error
    assert str(error) == "minute.ogg: longer than the limit of 5 s (decoding stopped there; set by DISTILL_X)"
    assert 5 * 8000 < decoded_frames["minute.ogg"] <= 5 * 8000 + 2 * audio.COUNT_BLOCK
    assert traced < 5, f"{traced:.1f} MB traced to refuse"     # one reused block, not the 5 s decoded so far


def test_an_ogg_whose_header_overstates_its_length_still_loads(tmp_path, decoded_frames):
    """An Ogg whose last page claims an hour and holds 3 s: counting finds 3 s, so it is decoded (a second time,
    only for such a file) and opened."""
    from distill import audio

    path = ogg_claiming(tmp_path / "claims.ogg", 3, 3600)
    assert sf.info(str(path)).frames == 3600 * 8000
    reference, _ = audio.load_audio(path)
    decoded_frames.clear()
    wave, rate = audio.load_audio(path, max_seconds=10, variable="DISTILL_X")
    assert np.array_equal(wave, reference) and abs(len(wave) - 3 * 8000) < 8000
    assert decoded_frames["claims.ogg"] == 2 * len(wave)


def test_load_audio_under_a_limit_refuses_an_hour_of_flac_from_its_header(hour_flac, tmp_path, decoded_frames):
    from distill import audio

    _refused_at_once(lambda: audio.load_audio(hour_flac, max_seconds=1800, variable="DISTILL_MAX_CLIP_SECONDS"),
                     "hour.flac", "3600 s", "1800 s", "DISTILL_MAX_CLIP_SECONDS")
    assert decoded_frames.get("hour.flac", 0) == 0
    source_error, _, _, _ = measured(lambda: audio.load_source(hour_flac, "Take 1", max_seconds=60, variable="X"))
    assert str(source_error) == "hour.flac: 3600 s long, over the limit of 60 s (set by X)"  # the file, not its label
    short = tmp_path / "short.wav"
    sf.write(short, tone(1.0, 220, sr=44100), 44100)
    assert np.array_equal(audio.load_audio(short, 48000, max_seconds=1, variable="X")[0],
                          audio.load_audio(short, 48000)[0])
    assert audio.load_source(short, max_seconds=1, variable="X").samples.shape == (44100,)


# ---------------------------------------------------------------------- the Trainer's own loads
def _small_folder(root: Path, n: int = 4, seconds: float = 0.6) -> Path:
    root.mkdir()
    for i in range(n):
        sf.write(root / f"take{i}.wav", tone(seconds, 200 + 60 * i, seed=i), 48000)
    return root


def _long_tone_flac(path: Path, seconds: float, rate: int = 8000) -> Path:
    sf.write(path, tone(seconds, 220, sr=rate, decay=0.0), rate, format="FLAC")
    return path


@pytest.mark.parametrize("limit", [None, 1.0])
def test_the_trainer_skips_a_file_that_grew_after_the_scan(tmp_path, tiny_config, decoded_frames, limit):
    """A file replaced by a long one between the scan and training is not decoded whole: the Trainer decodes no
    more than the scan's limit (when it had one) or a little more than the scan found, skips it with a warning
    naming it, and the run finishes on the others."""
    from distill import Trainer
    from distill.audio import scan_folder

    root = _small_folder(tmp_path / "data")
    report = scan_folder(root, max_seconds=limit, variable="DISTILL_X")
    assert len(report.accepted) == 4
    (root / "take2.wav").unlink()
    _long_tone_flac(root / "take2.flac", 600).rename(root / "take2.wav")   # ten minutes under the scanned name
    decoded_frames.clear()
    trainer = Trainer(report, tiny_config, epochs=1, validate_every=100, log_every_s=0)
    events = list(trainer.run())
    warnings = [e.message for e in events if e.kind == "warning" and "take2.wav" in e.message]
    assert len(warnings) == 1 and "skipped" in warnings[0], [e.message for e in events if e.kind == "warning"]
    if limit is None:
        assert "600.00 s long, 0.60 s when scanned" in warnings[0], warnings[0]
    else:
        assert "600 s long, over the limit of 1 s (set by DISTILL_X)" in warnings[0], warnings[0]
    assert decoded_frames.get("take2.wav", 0) == 0                  # refused from the FLAC header
    assert events[-1].kind == "done" and trainer.result is not None
    ds = trainer.result.info.dataset
    assert "take2.wav" not in ds["train_files"] + ds["val_files"] and ds["accepted"] == 3
    assert any(r["file"] == "take2.wav" for r in ds["rejected"])


def test_the_trainer_stops_decoding_a_grown_ogg_at_the_limit(tmp_path, tiny_config, decoded_frames):
    """The same for a format whose length is counted: decoding stops a little past what the scan found."""
    from distill import Trainer, audio

    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        sf.write(root / f"take{i}.ogg", tone(0.6, 200 + 60 * i, sr=8000, seed=i), 8000, format="OGG",
                 subtype="VORBIS")
    report = audio.scan_folder(root)
    assert len(report.accepted) == 3
    sf.write(root / "take1.ogg", tone(120, 220, sr=8000, decay=0.0), 8000, format="OGG", subtype="VORBIS")
    decoded_frames.clear()
    trainer = Trainer(report, tiny_config, epochs=1, validate_every=100, log_every_s=0)
    events = list(trainer.run())
    said = [e.message for e in events if e.kind == "warning" and "take1.ogg" in e.message]
    assert len(said) == 1 and "longer than when scanned" in said[0] and "skipped" in said[0], said
    assert decoded_frames["take1.ogg"] <= (0.6 + 1.0) * 8000 + 2 * audio.COUNT_BLOCK
    assert events[-1].kind == "done" and trainer.result.info.dataset["accepted"] == 2


def test_a_trainer_given_paths_and_a_limit_scans_and_loads_under_it(tmp_path, tiny_config):
    from distill import Trainer

    root = _small_folder(tmp_path / "data", n=3)
    long = _long_tone_flac(root / "long.flac", 600)
    trainer = Trainer(sorted(root.iterdir()), tiny_config, epochs=1, validate_every=100, log_every_s=0,
                      max_seconds=30, limit_variable="DISTILL_X")
    (v,) = trainer.report.rejected
    assert v.path == str(long) and "over the limit of 30 s (set by DISTILL_X)" in v.reason
    assert trainer.report.max_seconds == 30
    list(trainer.run())
    assert trainer.result is not None and trainer.result.info.dataset["accepted"] == 3


@pytest.mark.parametrize("ext, fmt", [("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG")])
def test_an_infinite_limit_is_no_limit(tmp_path, ext, fmt):
    """DISTILL_MAX_CLIP_SECONDS=inf (or the total) means no limit: every reader turned it into a frame count
    with int(inf * rate), and the OverflowError came out as 'unreadable or corrupt audio' for every file."""
    from distill import audio

    path = tmp_path / f"one.{ext}"
    sf.write(path, tone(1.0, 220.0, sr=16000), 16000, format=fmt)
    limits = Limits(max_clip_seconds=math.inf)
    assert len(limits.load_source(path).samples) == 16000
    limits.check_clip(path)
    assert len(audio.load_audio(path, max_seconds=math.inf)[0]) == 16000
    assert audio.scan_paths([path], max_seconds=math.inf).accepted

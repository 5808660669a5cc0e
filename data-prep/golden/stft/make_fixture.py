"""Golden values for umt-audio's STFT: torch.stft(...).abs() on seeded signals.

Run from the repository root:  /work/pyenv/bin/python data-prep/golden/stft/make_fixture.py
Writes next to this script:
  fixture.json          manifest: library versions, seed, and per case the STFT parameters,
                        signal length and output shape, plus file names
  <case>.input.f32le    the signal, little-endian float32
  <case>.output.f32le   torch.stft magnitude, float32, row-major [freq][frame]
The Rust test (crates/umt-audio/tests/golden_stft.rs) reads only these files.
"""
import json
import pathlib
import platform

import numpy as np
import torch

SEED = 20240601
HERE = pathlib.Path(__file__).resolve().parent

# (name, signal length, n_fft, win_length, hop, window periodic, center, pad_mode)
CASES = [
    # The paper's STFT on a 1 s, 16 kHz signal: (513, 32).
    ("paper_1s", 16000, 1024, 1024, 512, True, True, "reflect"),
    # Odd n_fft, win_length < n_fft (window zero-padded and centred), hop not dividing length.
    ("odd_nfft_short_window", 3001, 401, 300, 160, True, True, "reflect"),
    # Symmetric window, constant padding.
    ("symmetric_constant_pad", 2500, 256, 200, 100, False, True, "constant"),
    # No centring.
    ("no_center", 2049, 512, 512, 128, True, False, "reflect"),
    # Shortest legal signal for reflect padding: n_fft/2 + 1 samples.
    ("shortest_reflect", 513, 1024, 1024, 512, True, True, "reflect"),
]


def signal(rng, n, sr=16000.0):
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * (200.0 + 3000.0 * t) * t)
    x += 0.1 * rng.standard_normal(n)
    return x.astype(np.float32)


def main():
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    cases = []
    for name, n, n_fft, win, hop, periodic, center, pad_mode in CASES:
        x = signal(rng, n)
        window = torch.hann_window(win, periodic=periodic)
        spec = torch.stft(
            torch.from_numpy(x),
            n_fft=n_fft,
            hop_length=hop,
            win_length=win,
            window=window,
            center=center,
            pad_mode=pad_mode,
            return_complex=True,
        ).abs()
        out = spec.numpy().astype(np.float32)  # (n_fft//2 + 1, frames)
        (HERE / f"{name}.input.f32le").write_bytes(x.astype("<f4").tobytes())
        (HERE / f"{name}.output.f32le").write_bytes(out.astype("<f4").tobytes())
        cases.append(
            {
                "name": name,
                "signal_len": n,
                "n_fft": n_fft,
                "win_length": win,
                "hop_length": hop,
                "window": "hann_periodic" if periodic else "hann_symmetric",
                "center": center,
                "pad_mode": pad_mode,
                "shape": list(out.shape),
                "max_abs": float(out.max()),
                "sum": float(out.astype(np.float64).sum()),
            }
        )
    manifest = {
        "generator": "data-prep/golden/stft/make_fixture.py",
        "call": "torch.stft(x, n_fft, hop_length, win_length, window=torch.hann_window(win_length, periodic), center, pad_mode, return_complex=True).abs()",
        "seed": SEED,
        "signal": "0.3 sin(2 pi 440 t) + 0.2 chirp(200 Hz + 3000 t) + 0.1 N(0,1) (numpy default_rng(seed)), t = n / 16000, float32",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "cases": cases,
    }
    (HERE / "fixture.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()

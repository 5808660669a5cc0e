"""Golden values for umt-audio's resampler: scipy.signal.resample_poly with its defaults.

Run from the repository root:  /work/pyenv/bin/python data-prep/golden/resample/make_fixture.py
Writes next to this script:
  fixture.json          manifest: library versions, seed, and per case the rates, up/down and
                        lengths, plus file names
  <case>.input.f32le    the input signal, little-endian float32
  <case>.output.f32le   resample_poly(float64(input), up, down) rounded to float32
The Rust test (crates/umt-audio/tests/golden_resample.rs) reads only these files.
"""
import json
import math
import pathlib
import platform

import numpy as np
import scipy
import scipy.signal

SEED = 20240602
HERE = pathlib.Path(__file__).resolve().parent

# (from_hz, to_hz, input length): lengths chosen to be awkward (not multiples of down) so the
# output-length rounding and the zero padding at both ends are exercised.
CASES = [
    (8000, 16000, 1001),
    (44100, 16000, 4411),
    (48000, 16000, 4801),
    (22050, 16000, 2207),
    (16000, 8000, 999),
]


def main():
    rng = np.random.default_rng(SEED)
    cases = []
    for from_hz, to_hz, n in CASES:
        t = np.arange(n) / from_hz
        # Tones below and above the new Nyquist, plus noise: checks pass band and stop band.
        x = 0.4 * np.sin(2 * np.pi * 1000.0 * t) + 0.3 * np.sin(2 * np.pi * 0.45 * from_hz * t)
        x += 0.1 * rng.standard_normal(n)
        x = x.astype(np.float32)
        g = math.gcd(from_hz, to_hz)
        up, down = to_hz // g, from_hz // g
        y = scipy.signal.resample_poly(x.astype(np.float64), up, down)
        name = f"{from_hz}_to_{to_hz}"
        (HERE / f"{name}.input.f32le").write_bytes(x.astype("<f4").tobytes())
        (HERE / f"{name}.output.f32le").write_bytes(y.astype("<f4").tobytes())
        cases.append(
            {
                "name": name,
                "from_hz": from_hz,
                "to_hz": to_hz,
                "up": up,
                "down": down,
                "input_len": n,
                "output_len": int(y.shape[0]),
                "max_abs": float(np.abs(y).max()),
            }
        )
    manifest = {
        "generator": "data-prep/golden/resample/make_fixture.py",
        "call": "scipy.signal.resample_poly(x.astype(float64), up, down)  # window=('kaiser', 5.0), padtype='constant'",
        "seed": SEED,
        "signal": "0.4 sin(2 pi 1000 t) + 0.3 sin(2 pi 0.45 from_hz t) + 0.1 N(0,1) (numpy default_rng(seed)), float32",
        "versions": {
            "python": platform.python_version(),
            "scipy": scipy.__version__,
            "numpy": np.__version__,
        },
        "cases": cases,
    }
    (HERE / "fixture.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()

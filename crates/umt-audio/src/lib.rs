//! The audio front end of Uni-Modal Teacher (Du et al., §4.1), reusable in any project: it
//! depends on no tensor library and hands out plain `f32` buffers.
//!
//! The pipeline, one module per step:
//!
//! 1. [`wav`]: decode a WAV file (8/16/24/32-bit integer or 32/64-bit float PCM, plain or
//!    `WAVE_FORMAT_EXTENSIBLE`) and mix all channels to mono `f32` in [-1, 1];
//! 2. [`resample`]: band-limited polyphase resampling to 16 kHz, numerically equivalent to
//!    `scipy.signal.resample_poly` (Kaiser-windowed sinc, β = 5);
//! 3. [`crop`]: tile (repeat) clips shorter than 10 s, then crop a 10 s window: from the start
//!    for evaluation, at a seeded random offset for training;
//! 4. [`stft`]: magnitude STFT with `torch.stft`/nnAudio semantics (n_fft 1024, periodic Hann
//!    window of 1024, hop 512, centred with reflect padding), giving `(513, 313)` row-major
//!    `[freq][frame]` spectrograms; optional `ln(eps + x)` compression.
//!
//! [`FrontEnd`] chains all four from a serde [`FrontEndConfig`] whose default is the paper's.
//! Everything reports problems through the typed [`Error`]; nothing panics on user data.
//!
//! ```
//! use umt_audio::{Crop, FrontEnd, FrontEndConfig, Stft, StftConfig};
//!
//! # fn main() -> umt_audio::Result<()> {
//! // The paper's front end on a 3 s, 8 kHz tone: resampled to 16 kHz, tiled to 10 s.
//! let front_end = FrontEnd::new(FrontEndConfig::paper())?;
//! let tone: Vec<f32> = (0..24_000)
//!     .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8_000.0).sin())
//!     .collect();
//! let spec = front_end.process_samples(&tone, 8_000, Crop::Start)?;
//! assert_eq!(spec.shape(), (513, 313)); // (n_fft/2 + 1, 1 + 160_000 / 512)
//!
//! // 440 Hz falls in bin 440 / (16_000 / 1024) ≈ 28.
//! let frame = 100;
//! let peak = (0..spec.n_freqs())
//!     .max_by(|&a, &b| spec.get(a, frame).partial_cmp(&spec.get(b, frame)).unwrap())
//!     .unwrap();
//! assert_eq!(peak, 28);
//!
//! // The STFT alone, over a batch, in parallel.
//! let stft = Stft::new(StftConfig::paper())?;
//! let clips = vec![vec![0.0f32; 16_000]; 4];
//! let refs: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
//! let specs = stft.magnitude_batch(&refs)?;
//! assert_eq!(specs[0].shape(), (513, 32));
//! # Ok(())
//! # }
//! ```

pub mod crop;
mod error;
pub mod frontend;
pub mod resample;
pub mod stft;
pub mod wav;

pub use crop::{crop_offset, crop_or_tile, crop_or_tile_into, Crop};
pub use error::{Error, Result};
pub use frontend::{FrontEnd, FrontEndConfig};
pub use resample::Resampler;
pub use stft::{
    num_frames, LogCompression, PadMode, Spectrogram, Stft, StftConfig, StftScratch, Window,
};
pub use wav::{decode_wav, read_wav, Audio, SampleFormat};

//! The preparation run: match CSV rows to files, prepare the clips in parallel (each in a
//! temporary folder renamed into place when complete), then rebuild the index and write the
//! failure report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use umt_audio::Crop;
use umt_data::vggsound::{
    IndexEntry, AUDIO_FILE, CLASSES_FILE, CLIPS_DIR, FRAMES_DIR, INDEX_FILE, META_FILE,
    PREPARE_CONFIG_FILE, REPORT_FILE,
};

use crate::error::{io, Error, Result};
use crate::ffmpeg::{check_tools, extract_audio, extract_frames, probe};
use crate::manifest::{class_list, read_csv, CsvRow};
use crate::pattern::NamePattern;
use crate::report::{Failure, FailureReason};

/// Prefix of the temporary folder a clip is written into before its atomic rename.
pub const TMP_PREFIX: &str = ".tmp-";

/// What every prepared clip looks like; saved as `prepare.json` next to the data, and a rerun
/// with other settings into the same folder is refused ([`Error::SettingsMismatch`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Frames are resized to this square size. Paper §4.1: "each video is interpolated to
    /// 256 × 256 and saved as stacked images".
    pub frame_size_px: u32,
    /// Rate at which frames are stored. Default 10 fps, our choice: the paper does not state
    /// it; 10 s at 10 fps gives 100 frames, so sampling the paper's 32 frames uniformly never
    /// repeats a frame for clips of 3.2 s or more, at a third of the disk of YouTube's usual
    /// 30 fps.
    pub frames_fps: f64,
    /// JPEG quality, 1–100 (libjpeg scale, as Pillow's `quality`). Default 90, our choice:
    /// no visible artefacts at 256×256, about a third of the size of quality 100.
    pub jpeg_quality: u8,
    /// Audio sample rate. Paper §4.1: "converted to 16 kHz and 32-bit precision in the
    /// floating-point PCM format".
    pub sample_rate_hz: u32,
    /// Audio (and frames) are cut to the first `clip_seconds` of the file; shorter audio is
    /// tiled. Paper §4.1: "cropped or tiled to a fixed duration of 10 s" (VGGSound clips are
    /// 10 s, so this crop keeps the whole clip).
    pub clip_seconds: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            frame_size_px: 256,
            frames_fps: 10.0,
            jpeg_quality: 90,
            sample_rate_hz: 16_000,
            clip_seconds: 10.0,
        }
    }
}

impl Settings {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, expected: &str, found: String| {
            Err(Error::InvalidConfig {
                field,
                expected: expected.into(),
                found,
            })
        };
        if self.frame_size_px == 0 || self.frame_size_px > 4096 {
            return bad("frame_size_px", "1..=4096", self.frame_size_px.to_string());
        }
        if !(self.frames_fps.is_finite() && self.frames_fps > 0.0 && self.frames_fps <= 240.0) {
            return bad(
                "frames_fps",
                "a rate in (0, 240]",
                self.frames_fps.to_string(),
            );
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad("jpeg_quality", "1..=100", self.jpeg_quality.to_string());
        }
        if !(8_000..=192_000).contains(&self.sample_rate_hz) {
            return bad(
                "sample_rate_hz",
                "8000..=192000",
                self.sample_rate_hz.to_string(),
            );
        }
        if !(self.clip_seconds.is_finite() && self.clip_seconds > 0.0 && self.clip_seconds <= 600.0)
        {
            return bad(
                "clip_seconds",
                "a duration in (0, 600]",
                self.clip_seconds.to_string(),
            );
        }
        Ok(())
    }

    /// Samples in every WAV, `round(clip_seconds · sample_rate_hz)`.
    pub fn clip_len_samples(&self) -> usize {
        (self.clip_seconds * f64::from(self.sample_rate_hz)).round() as usize
    }
}

/// One preparation run.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The VGGSound CSV (`youtube_id,start_seconds,label,split`).
    pub csv: PathBuf,
    /// The folder of downloaded clips.
    pub videos: PathBuf,
    /// The output folder (created if needed; reruns resume in it).
    pub out: PathBuf,
    /// How clip files are named.
    pub name_pattern: NamePattern,
    /// Clips prepared at once (each runs its own ffmpeg). Default: the number of cores.
    pub jobs: usize,
    /// Show a progress bar with ETA on stderr.
    pub progress: bool,
    /// What the clips look like.
    pub settings: Settings,
}

impl PrepareOptions {
    /// Default settings, pattern and jobs for these three folders, no progress bar.
    pub fn new(
        csv: impl Into<PathBuf>,
        videos: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        Self {
            csv: csv.into(),
            videos: videos.into(),
            out: out.into(),
            name_pattern: NamePattern::default(),
            jobs: std::thread::available_parallelism().map_or(1, usize::from),
            progress: false,
            settings: Settings::default(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Clips prepared by this run.
    pub prepared: usize,
    /// Clips found complete from an earlier run and left alone.
    pub skipped: usize,
    /// CSV clips that could not be prepared (missing files included), by reason.
    pub failed: BTreeMap<FailureReason, usize>,
    /// Files in the videos folder that match no CSV row.
    pub not_in_csv: usize,
    /// Clips in the rebuilt index (every split).
    pub indexed: usize,
    /// Classes in the class list.
    pub classes: usize,
    /// Wall time of the run, in milliseconds.
    pub elapsed_ms: u128,
    /// The output folder.
    pub out: PathBuf,
}

impl Summary {
    /// CSV clips that failed, all reasons together.
    pub fn failed_total(&self) -> usize {
        self.failed.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prepared {}, skipped {} (already done), failed {}",
            self.prepared,
            self.skipped,
            self.failed_total()
        )?;
        if !self.failed.is_empty() {
            let parts: Vec<String> = self
                .failed
                .iter()
                .map(|(r, n)| format!("{}: {n}", reason_name(*r)))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        let secs = self.elapsed_ms as f64 / 1000.0;
        write!(
            f,
            ", not in the CSV {}; index: {} clips of {} classes in {}; report: {}; {:.1} s",
            self.not_in_csv,
            self.indexed,
            self.classes,
            self.out.join(INDEX_FILE).display(),
            self.out.join(REPORT_FILE).display(),
            secs,
        )?;
        if self.prepared > 0 && secs > 0.0 {
            write!(f, " ({:.2} clips/s)", self.prepared as f64 / secs)?;
        }
        Ok(())
    }
}

fn reason_name(r: FailureReason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{r:?}"))
}

/// A CSV row with the file found for it.
struct Job<'a> {
    row: &'a CsvRow,
    class_id: u32,
    src: PathBuf,
}

/// Runs the preparation (see the crate docs). Per-clip problems go to `report.jsonl`; only
/// run-level problems (no ffmpeg, unreadable CSV or folders, settings mismatch) are errors.
pub fn prepare(opts: &PrepareOptions) -> Result<Summary> {
    let started = Instant::now();
    opts.settings.validate()?;
    if opts.jobs == 0 {
        return Err(Error::InvalidConfig {
            field: "jobs",
            expected: "at least 1".into(),
            found: "0".into(),
        });
    }
    let rows = dedup(read_csv(&opts.csv)?);
    check_tools()?;
    let classes = class_list(&rows);
    let class_ids: HashMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();

    // Match CSV rows to files; files no row claims are reported.
    let files = list_videos(&opts.videos)?;
    let mut by_stem: HashMap<String, &PathBuf> = HashMap::new();
    if opts.name_pattern.any_extension() {
        for (name, path) in &files {
            let stem = Path::new(name)
                .file_stem()
                .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned());
            by_stem.entry(stem).or_insert(path);
        }
    }
    let mut claimed: HashSet<&Path> = HashSet::new();
    let mut failures: Vec<Failure> = Vec::new();
    let mut jobs = Vec::new();
    let mut skipped = 0;
    let clips_dir = opts.out.join(CLIPS_DIR);
    fs::create_dir_all(&clips_dir).map_err(io(&clips_dir))?;
    check_settings(&opts.out.join(PREPARE_CONFIG_FILE), &opts.settings)?;
    remove_stale_tmp(&clips_dir)?;
    write_atomic(&opts.out.join(CLASSES_FILE), &lines(&classes))?;
    for row in &rows {
        let name = opts.name_pattern.render(&row.youtube_id, row.start_seconds);
        let found = if opts.name_pattern.any_extension() {
            by_stem.get(&name).copied()
        } else {
            files.get(&name)
        };
        if let Some(p) = found {
            claimed.insert(p.as_path());
        }
        let id = row.clip_id();
        if clips_dir.join(&id).join(META_FILE).is_file() {
            skipped += 1;
            continue;
        }
        match found {
            Some(src) => jobs.push(Job {
                row,
                class_id: class_ids
                    .get(row.label.as_str())
                    .copied()
                    .unwrap_or_default(),
                src: src.clone(),
            }),
            None => failures.push(
                Failure::new(
                    FailureReason::Missing,
                    format!(
                        "expected {} in {} (CSV line {})",
                        name,
                        opts.videos.display(),
                        row.line
                    ),
                )
                .with_clip(Some(id), None),
            ),
        }
    }
    let not_in_csv: Vec<Failure> = files
        .values()
        .filter(|p| !claimed.contains(p.as_path()))
        .map(|p| {
            Failure::new(
                FailureReason::NotInCsv,
                format!("no row of {} names this file", opts.csv.display()),
            )
            .with_clip(None, Some(file_name(p)))
        })
        .collect();

    let (prepared, run_failures) = run_jobs(&jobs, opts, &clips_dir);
    failures.extend(run_failures);

    // The index is rebuilt from the completed clips, so a killed run leaves nothing half-listed.
    let mut entries = Vec::new();
    for row in &rows {
        let meta = clips_dir.join(row.clip_id()).join(META_FILE);
        if !meta.is_file() {
            continue;
        }
        let text = fs::read_to_string(&meta).map_err(io(&meta))?;
        let mut e: IndexEntry =
            serde_json::from_str(&text).map_err(|source| Error::Json { path: meta, source })?;
        // Label, id and split always come from the current CSV and class list.
        e.label.clone_from(&row.label);
        e.class_id = class_ids
            .get(row.label.as_str())
            .copied()
            .unwrap_or_default();
        e.split = row.split;
        entries.push(e);
    }
    entries.sort_by(|a, b| a.clip_id.cmp(&b.clip_id));
    let mut index = String::new();
    for e in &entries {
        index.push_str(&to_json(e, &opts.out.join(INDEX_FILE))?);
        index.push('\n');
    }
    write_atomic(&opts.out.join(INDEX_FILE), &index)?;

    failures.sort_by(|a, b| (&a.clip_id, a.reason).cmp(&(&b.clip_id, b.reason)));
    let mut report = String::new();
    let mut failed = BTreeMap::new();
    for f in failures.iter().chain(&not_in_csv) {
        report.push_str(&to_json(f, &opts.out.join(REPORT_FILE))?);
        report.push('\n');
    }
    for f in &failures {
        *failed.entry(f.reason).or_insert(0) += 1;
    }
    write_atomic(&opts.out.join(REPORT_FILE), &report)?;

    Ok(Summary {
        prepared,
        skipped,
        failed,
        not_in_csv: not_in_csv.len(),
        indexed: entries.len(),
        classes: classes.len(),
        elapsed_ms: started.elapsed().as_millis(),
        out: opts.out.clone(),
    })
}

/// Keeps the first row of each clip id (the CSV lists a few clips twice).
fn dedup(rows: Vec<CsvRow>) -> Vec<CsvRow> {
    let mut seen = HashSet::new();
    rows.into_iter()
        .filter(|r| seen.insert(r.clip_id()))
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn lines(items: &[String]) -> String {
    let mut s = items.join("\n");
    s.push('\n');
    s
}

fn to_json<T: Serialize>(v: &T, path: &Path) -> Result<String> {
    serde_json::to_string(v).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Regular, non-hidden files of the videos folder by name.
fn list_videos(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        files.insert(name, path);
    }
    Ok(files)
}

/// Writes `prepare.json`, or checks that the stored one matches this run.
fn check_settings(path: &Path, settings: &Settings) -> Result<()> {
    let expected = to_json(settings, path)?;
    if path.is_file() {
        let text = fs::read_to_string(path).map_err(io(path))?;
        let stored: Settings = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if stored != *settings {
            return Err(Error::SettingsMismatch {
                path: path.to_path_buf(),
                expected,
                found: to_json(&stored, path)?,
            });
        }
        return Ok(());
    }
    write_atomic(path, &format!("{expected}\n"))
}

/// Removes the temporary folders a killed run left behind.
fn remove_stale_tmp(clips_dir: &Path) -> Result<()> {
    for entry in fs::read_dir(clips_dir).map_err(io(clips_dir))? {
        let entry = entry.map_err(io(clips_dir))?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let p = entry.path();
            fs::remove_dir_all(&p).map_err(io(&p))?;
        }
    }
    Ok(())
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, text).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Prepares `jobs` on `opts.jobs` threads; returns the number prepared and the failures.
fn run_jobs(jobs: &[Job<'_>], opts: &PrepareOptions, clips_dir: &Path) -> (usize, Vec<Failure>) {
    let bar = if opts.progress {
        let b = ProgressBar::new(jobs.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} clips, {per_sec}, ETA {eta}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let workers = opts.jobs.min(jobs.len()).max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // ffmpeg's own threads: share the cores among the clips in flight.
    let threads = (cores / workers).max(1);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    let mut prepared = 0;
    let mut failures = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (tx, next) = (tx.clone(), &next);
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(k) else { break };
                let r = prepare_clip(job, clips_dir, &opts.settings, threads);
                if tx.send((k, r)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (k, r) in rx {
            bar.inc(1);
            match r {
                Ok(()) => prepared += 1,
                Err(f) => {
                    let job = &jobs[k];
                    failures.push(f.with_clip(Some(job.row.clip_id()), Some(file_name(&job.src))));
                }
            }
        }
    });
    bar.finish_and_clear();
    (prepared, failures)
}

/// Prepares one clip into `clips/.tmp-<id>`, then renames it to `clips/<id>`.
fn prepare_clip(
    job: &Job<'_>,
    clips_dir: &Path,
    settings: &Settings,
    threads: usize,
) -> std::result::Result<(), Failure> {
    let id = job.row.clip_id();
    let tmp = clips_dir.join(format!("{TMP_PREFIX}{id}"));
    let result = write_clip(job, &id, &tmp, clips_dir, settings, threads);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn write_clip(
    job: &Job<'_>,
    id: &str,
    tmp: &Path,
    clips_dir: &Path,
    settings: &Settings,
    threads: usize,
) -> std::result::Result<(), Failure> {
    let io_fail = |p: &Path, e: std::io::Error| {
        Failure::new(FailureReason::Io, format!("{}: {e}", p.display()))
    };
    if tmp.exists() {
        fs::remove_dir_all(tmp).map_err(|e| io_fail(tmp, e))?;
    }
    let frames_dir = tmp.join(FRAMES_DIR);
    fs::create_dir_all(&frames_dir).map_err(|e| io_fail(&frames_dir, e))?;

    let streams = probe(&job.src)?;
    if !streams.video {
        return Err(Failure::new(
            FailureReason::NoVideoStream,
            "the file has no video stream",
        ));
    }
    if !streams.audio {
        return Err(Failure::new(
            FailureReason::NoAudioStream,
            "the file has no audio track",
        ));
    }
    let num_frames = extract_frames(&job.src, &frames_dir, settings, threads)?;
    let samples = extract_audio(&job.src, settings, threads)?;
    // Tiled when shorter than clip_seconds, cut at the start when longer (paper §4.1).
    let wav = umt_audio::crop_or_tile(&samples, settings.clip_len_samples(), Crop::Start)
        .map_err(|e| Failure::new(FailureReason::EmptyAudio, e.to_string()))?;
    let wav_path = tmp.join(AUDIO_FILE);
    write_wav(&wav_path, &wav, settings.sample_rate_hz)
        .map_err(|e| Failure::new(FailureReason::Io, format!("{}: {e}", wav_path.display())))?;

    let entry = IndexEntry {
        clip_id: id.to_owned(),
        label: job.row.label.clone(),
        class_id: job.class_id,
        split: job.row.split,
        num_frames,
        source: file_name(&job.src),
    };
    let meta = tmp.join(META_FILE);
    let json = serde_json::to_string_pretty(&entry)
        .map_err(|e| Failure::new(FailureReason::Io, e.to_string()))?;
    fs::write(&meta, json).map_err(|e| io_fail(&meta, e))?;

    let done = clips_dir.join(id);
    if done.exists() {
        // An incomplete folder (no meta.json) from some other tool: replace it.
        fs::remove_dir_all(&done).map_err(|e| io_fail(&done, e))?;
    }
    fs::rename(tmp, &done).map_err(|e| io_fail(&done, e))
}

/// 32-bit float mono WAV.
fn write_wav(path: &Path, samples: &[f32], sample_rate_hz: u32) -> std::result::Result<(), String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: sample_rate_hz,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(|e| e.to_string())?;
    for &s in samples {
        w.write_sample(s).map_err(|e| e.to_string())?;
    }
    w.finalize().map_err(|e| e.to_string())
}

//! `--audio-teacher REF` / `--video-teacher REF` of the reproduce commands: a teacher given as a
//! local path or as `hf://OWNER/REPO[@REVISION]/PATH.safetensors` (fetched through `umt-hub`
//! into the shared Hugging Face cache, verified, honouring `HF_*` variables; docs/hub.md),
//! used for every seed instead of training one.

use anyhow::Context;
use umt_trainer::run::GivenTeacher;

/// Teacher flags (flattened into the reproduce commands' arguments).
#[derive(clap::Args, Debug, Default)]
pub struct TeacherArgs {
    /// Audio teacher to use instead of training one: a path or `hf://OWNER/REPO[@REV]/F.safetensors`
    /// (its card must fit the run: dataset, classes, encoder config).
    #[arg(long, value_name = "REF")]
    pub audio_teacher: Option<String>,
    /// Video teacher, as `--audio-teacher`.
    #[arg(long, value_name = "REF")]
    pub video_teacher: Option<String>,
}

impl TeacherArgs {
    /// Resolves both references (fetching hub files) to `[audio, video]`.
    pub fn resolve(&self) -> anyhow::Result<[Option<GivenTeacher>; 2]> {
        let one = |flag: &str, r: &Option<String>| -> anyhow::Result<Option<GivenTeacher>> {
            let Some(text) = r else { return Ok(None) };
            let reference: umt_hub::TeacherRef =
                text.parse().with_context(|| format!("--{flag} {text:?}"))?;
            let path = umt_hub::resolve(&reference, &umt_hub::HubConfig::from_env())
                .with_context(|| format!("--{flag} {text:?}"))?;
            let given = GivenTeacher::new(&path, text.clone())
                .with_context(|| format!("--{flag} {text:?}"))?;
            eprintln!("{flag}: {text} -> {}", path.display());
            Ok(Some(given))
        };
        Ok([
            one("audio-teacher", &self.audio_teacher)?,
            one("video-teacher", &self.video_teacher)?,
        ])
    }
}

//! The nine methods of the paper's Table 2, with the paper's names.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A training method of Table 2. Every method trains a late-fusion model (two encoders whose
/// embeddings are concatenated into one linear classifier, paper Figure 1) with cross-entropy,
/// plus what the variant says; see `docs/trainer.md` for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Method {
    /// Cross-entropy only.
    NaiveFusion,
    /// Dropout 0.5 on the fused embedding.
    Dropout,
    /// Per sample: drop the audio embedding (1/3), the video embedding (1/3), or neither (1/3).
    ModalityDropout,
    /// The encoders of a trained Naive Fusion model distilled into a fresh fusion model.
    SelfDistillation,
    /// The uni-modal teachers' encoders frozen, a new linear classifier on their embeddings.
    PretrainFinetune,
    /// UMT with the audio teacher only.
    AudioOnlyDistillation,
    /// UMT with the video teacher only.
    VideoOnlyDistillation,
    /// Gradient-Blending (Wang et al. 2020): uni-modal heads plus the fused head, weighted by
    /// the overfitting-to-generalisation ratio estimated on a validation split.
    GradientBlending,
    /// Uni-Modal Teacher: `CE + λ · Σ_m MSE(student_m, teacher_m)`.
    UniModalTeacher,
}

impl Method {
    /// All nine, in the order of the printed table.
    pub const ALL: [Method; 9] = [
        Method::NaiveFusion,
        Method::Dropout,
        Method::ModalityDropout,
        Method::SelfDistillation,
        Method::PretrainFinetune,
        Method::AudioOnlyDistillation,
        Method::VideoOnlyDistillation,
        Method::GradientBlending,
        Method::UniModalTeacher,
    ];

    /// The paper's name (Table 2).
    pub fn name(self) -> &'static str {
        match self {
            Method::NaiveFusion => "Naive Fusion",
            Method::Dropout => "Dropout",
            Method::ModalityDropout => "Modality Dropout",
            Method::SelfDistillation => "Self Distillation",
            Method::PretrainFinetune => "Pre-train + Fine-tune",
            Method::AudioOnlyDistillation => "Audio-only Distillation",
            Method::VideoOnlyDistillation => "Video-only Distillation",
            Method::GradientBlending => "Gradient-Blending",
            Method::UniModalTeacher => "Uni-Modal Teacher",
        }
    }

    /// A file-system and command-line friendly name (`naive-fusion`, `umt`, ...).
    pub fn slug(self) -> &'static str {
        match self {
            Method::NaiveFusion => "naive-fusion",
            Method::Dropout => "dropout",
            Method::ModalityDropout => "modality-dropout",
            Method::SelfDistillation => "self-distillation",
            Method::PretrainFinetune => "pretrain-finetune",
            Method::AudioOnlyDistillation => "audio-only-distillation",
            Method::VideoOnlyDistillation => "video-only-distillation",
            Method::GradientBlending => "gradient-blending",
            Method::UniModalTeacher => "umt",
        }
    }

    /// Parses a paper name or a slug (case-insensitive); unknown names are an error listing the
    /// accepted ones.
    pub fn parse(name: &str) -> Result<Self> {
        let n = name.trim().to_lowercase();
        Method::ALL
            .into_iter()
            .find(|m| m.slug() == n || m.name().to_lowercase() == n)
            .ok_or_else(|| Error::UnknownMethod {
                name: name.to_string(),
                expected: Method::ALL
                    .iter()
                    .map(|m| m.slug())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Whether the method distils from the audio teacher / the video teacher.
    pub fn distils(self) -> (bool, bool) {
        match self {
            Method::UniModalTeacher => (true, true),
            Method::AudioOnlyDistillation => (true, false),
            Method::VideoOnlyDistillation => (false, true),
            _ => (false, false),
        }
    }

    /// Whether the method needs the uni-modal teachers.
    pub fn needs_teachers(self) -> bool {
        matches!(self, Method::PretrainFinetune) || self.distils() != (false, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.name()).unwrap(), m);
            assert_eq!(Method::parse(m.slug()).unwrap(), m);
        }
        assert_eq!(
            Method::parse("Uni-Modal Teacher").unwrap(),
            Method::UniModalTeacher
        );
        let err = Method::parse("late-fusion").unwrap_err();
        assert!(err.to_string().contains("late-fusion"));
        assert!(err.to_string().contains("naive-fusion"));
    }
}

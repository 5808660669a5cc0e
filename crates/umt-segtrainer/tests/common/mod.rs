//! Shared by the integration tests: the tiny synthetic configuration.

use umt_segtrainer::{DataConfig, SegExperimentConfig};

/// The smoke recipe shrunk for tests: 32×32 scenes, 4 train / 2 test, a width-4 model,
/// batch 2, two UMT taps.
pub fn tiny() -> SegExperimentConfig {
    let mut cfg = SegExperimentConfig::smoke();
    cfg.preset = "test".into();
    if let DataConfig::Synthetic { generator } = &mut cfg.data {
        generator.height = 32;
        generator.width = 32;
        generator.train_samples = 4;
        generator.test_samples = 2;
    }
    cfg.model = cfg.model.with_input_size(32, 32);
    cfg.model.base_width = 4;
    cfg.model.decoder_channels = [16, 8, 8];
    cfg.train.batch_size = 2;
    cfg.train.eval_batch_size = 2;
    cfg.umt.taps = vec![1, 4];
    cfg
}

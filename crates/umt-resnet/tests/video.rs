//! The per-frame video encoder: shapes, and equality with encoding every frame by hand and
//! averaging over time (eval mode), and with the (B·T)-frame batch in train mode.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use umt_resnet::{ResNet, ResNetConfig, VideoEncoder};

fn max_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    anyhow::ensure!(a.dims() == b.dims(), "{:?} vs {:?}", a.dims(), b.dims());
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn video_encoder_averages_frames() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let config = ResNetConfig::resnet18(3)
        .with_width(4)
        .with_num_classes(Some(6));
    let vars = VarMap::new();
    let video = VideoEncoder::new(&config, VarBuilder::from_varmap(&vars, DType::F32, &dev))?;
    let (b, t) = (2, 3);
    let x = Tensor::randn(0f32, 1.0, (b, t, 3, 32, 32), &dev)?; // (B, T, C, H, W)
    let out = video.forward_t(&x, false)?;
    assert_eq!(out.embedding.dims(), &[b, 32]);
    assert_eq!(out.stem.dims(), &[b, 4, 16, 16]);
    assert_eq!(out.layer4.dims(), &[b, 32, 1, 1]);
    let logits = out
        .logits
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no logits"))?;
    assert_eq!(logits.dims(), &[b, 6]);

    // By hand: each clip, each frame, then the mean over frames.
    let resnet: &ResNet = video.resnet();
    for clip in 0..b {
        let mut emb = Vec::new();
        let mut l2 = Vec::new();
        let mut lg = Vec::new();
        for frame in 0..t {
            let f = x.get(clip)?.get(frame)?.unsqueeze(0)?; // (1, C, H, W)
            let o = resnet.forward_t(&f, false)?;
            emb.push(o.embedding);
            l2.push(o.layer2);
            lg.push(o.logits.ok_or_else(|| anyhow::anyhow!("no logits"))?);
        }
        let mean =
            |v: &[Tensor]| -> anyhow::Result<Tensor> { Ok(Tensor::cat(v, 0)?.mean_keepdim(0)?) };
        assert!(max_diff(&mean(&emb)?, &out.embedding.narrow(0, clip, 1)?)? < 1e-5);
        assert!(max_diff(&mean(&l2)?, &out.layer2.narrow(0, clip, 1)?)? < 1e-5);
        // fc is linear: the mean of per-frame logits equals the logits of the mean embedding.
        assert!(max_diff(&mean(&lg)?, &logits.narrow(0, clip, 1)?)? < 1e-5);
    }

    // Train mode: BatchNorm statistics over all B·T frames, i.e. the frame batch.
    let train = video.forward_t(&x, true)?;
    let frames = resnet.forward_t(&x.reshape((b * t, 3, 32, 32))?, true)?;
    let by_hand = frames.embedding.reshape((b, t, 32))?.mean(1)?;
    assert!(max_diff(&train.embedding, &by_hand)? < 1e-5);
    Ok(())
}

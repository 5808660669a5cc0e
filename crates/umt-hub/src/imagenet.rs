//! ImageNet-pretrained encoders for other modalities, at the safetensors level (no candle).
//!
//! ESANet (Seichter et al. 2021) starts its depth encoder from ImageNet weights by summing the
//! first convolution over the three RGB input channels: a 1-channel input `d` then gives exactly
//! what the RGB network gives for the grey image `(d, d, d)`. [`adapt_first_conv`] applies this
//! to a checkpoint file written by `data-prep/convert_torchvision.py` (or any torchvision-named
//! ResNet checkpoint) so that `umt_resnet::load_resnet` loads it strictly into a model with
//! `in_channels = 1`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::HubError;

/// The first convolution of a torchvision ResNet.
pub const FIRST_CONV: &str = "conv1.weight";

/// Sums a convolution weight `(O, I, kh, kw)` (row-major f32) over its input channels, giving
/// `(O, 1, kh, kw)`; `shape` is `[O, I, kh, kw]`. `None` if `weight.len()` does not match.
pub fn sum_input_channels(weight: &[f32], shape: [usize; 4]) -> Option<Vec<f32>> {
    let [out_c, in_c, kh, kw] = shape;
    let k = kh * kw;
    if weight.len() != out_c * in_c * k {
        return None;
    }
    let mut summed = vec![0f32; out_c * k];
    for o in 0..out_c {
        for i in 0..in_c {
            let src = &weight[(o * in_c + i) * k..(o * in_c + i + 1) * k];
            for (acc, w) in summed[o * k..(o + 1) * k].iter_mut().zip(src) {
                *acc += w;
            }
        }
    }
    Some(summed)
}

/// Writes to `dst` the checkpoint `src` adapted for an encoder with `in_channels` inputs:
/// `1` sums [`FIRST_CONV`] over its 3 RGB input channels (ESANet), `3` keeps it. With
/// `drop_head`, the classifier (`fc.*`) is removed (UMT's encoders have none). Every other tensor
/// is copied bit for bit. The metadata follows: `config.in_channels` (and `config.num_classes`
/// → `null` without the head) are updated, `normalization` is dropped when summing (ImageNet's
/// RGB statistics do not apply to depth, which uses its dataset's own), `classes` is dropped
/// with the head, and `first_conv` records what was done. `dst` is written atomically.
pub fn adapt_first_conv(
    src: &Path,
    dst: &Path,
    in_channels: usize,
    drop_head: bool,
) -> Result<(), HubError> {
    let bad = |tensor: &str, problem: String| HubError::BadCheckpoint {
        path: src.to_path_buf(),
        tensor: tensor.to_string(),
        problem,
    };
    if !matches!(in_channels, 1 | 3) {
        return Err(bad(
            FIRST_CONV,
            format!(
                "cannot be adapted to {in_channels} input channels: expected 1 (summed RGB) or 3"
            ),
        ));
    }
    let bytes = std::fs::read(src).map_err(HubError::io("read", src))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad("(header)", format!("is not a safetensors file: {e}")))?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad("(header)", e.to_string()))?;
    let mut meta: HashMap<String, String> = header.metadata().clone().unwrap_or_default();

    let conv = st
        .tensor(FIRST_CONV)
        .map_err(|_| bad(FIRST_CONV, "is missing".into()))?;
    let shape: [usize; 4] = conv.shape().try_into().map_err(|_| {
        bad(
            FIRST_CONV,
            format!("has shape {:?}, expected (O, 3, kh, kw)", conv.shape()),
        )
    })?;
    if conv.dtype() != Dtype::F32 {
        return Err(bad(
            FIRST_CONV,
            format!("has dtype {:?}, expected F32", conv.dtype()),
        ));
    }
    if shape[1] != 3 {
        return Err(bad(
            FIRST_CONV,
            format!(
                "has {} input channels (shape {shape:?}), expected 3 (RGB)",
                shape[1]
            ),
        ));
    }
    let summed_bytes: Vec<u8>;
    let summed_shape = vec![shape[0], 1, shape[2], shape[3]];
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if drop_head && (name == "fc.weight" || name == "fc.bias") {
            continue;
        }
        tensors.push((name, view));
    }
    if in_channels == 1 {
        let weight: Vec<f32> = conv
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let summed = sum_input_channels(&weight, shape).ok_or_else(|| {
            bad(
                FIRST_CONV,
                format!("holds {} values, shape {shape:?}", weight.len()),
            )
        })?;
        summed_bytes = summed.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, summed_shape, &summed_bytes)
            .map_err(|e| bad(FIRST_CONV, e.to_string()))?;
        for entry in tensors.iter_mut().filter(|(n, _)| n == FIRST_CONV) {
            entry.1 = view.clone();
        }
        meta.remove("normalization");
        meta.insert(
            "first_conv".into(),
            "conv1.weight summed over the 3 RGB input channels (ESANet depth encoder)".into(),
        );
    }
    if let Some(config) = meta.get("config") {
        let mut config: serde_json::Value = serde_json::from_str(config)
            .map_err(|e| bad("(metadata config)", format!("is not JSON: {e}")))?;
        if let Some(obj) = config.as_object_mut() {
            obj.insert("in_channels".into(), in_channels.into());
            if drop_head {
                obj.insert("num_classes".into(), serde_json::Value::Null);
            }
        }
        meta.insert("config".into(), config.to_string());
    }
    if drop_head {
        meta.remove("classes");
    }
    let out =
        safetensors::serialize(tensors, Some(meta)).map_err(|e| bad("(all)", e.to_string()))?;
    let dir = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(HubError::io("create temporary file in", dir))?;
    tmp.write_all(&out)
        .map_err(HubError::io("write", tmp.path()))?;
    crate::cache::persist(tmp, dst)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_checkpoint(path: &Path, conv_shape: Vec<usize>, dtype: Dtype) {
        let n: usize = conv_shape.iter().product();
        let conv: Vec<u8> = match dtype {
            Dtype::F32 => (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect(),
            _ => vec![0u8; n * 2],
        };
        let fc: Vec<u8> = [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = vec![
            (
                "conv1.weight",
                safetensors::tensor::TensorView::new(dtype, conv_shape, &conv).expect("view"),
            ),
            (
                "fc.bias",
                safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &fc).expect("view"),
            ),
        ];
        let meta = HashMap::from([
            (
                "config".to_string(),
                r#"{"in_channels":3,"num_classes":2}"#.to_string(),
            ),
            (
                "normalization".to_string(),
                r#"{"mean":[0.5,0.5,0.5],"std":[0.2,0.2,0.2]}"#.to_string(),
            ),
        ]);
        std::fs::write(
            path,
            safetensors::serialize(tensors, Some(meta)).expect("serialize"),
        )
        .expect("write");
    }

    fn paths(
        dir: &tempfile::TempDir,
        src: &str,
        dst: &str,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let path = |name: &str| dir.path().join(format!("{name}.safetensors"));
        (path(src), path(dst))
    }

    #[test]
    fn sums_over_rgb_and_updates_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = paths(&dir, "rgb", "depth");
        write_checkpoint(&src, vec![2, 3, 1, 2], Dtype::F32);
        adapt_first_conv(&src, &dst, 1, true).expect("adapt");
        let bytes = std::fs::read(&dst).expect("read");
        let st = SafeTensors::deserialize(&bytes).expect("parse");
        let conv = st.tensor(FIRST_CONV).expect("conv1");
        assert_eq!(conv.shape(), &[2, 1, 1, 2]);
        let values: Vec<f32> = conv
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // out 0: channels (0,1), (2,3), (4,5) -> (6, 9); out 1: (6,7), (8,9), (10,11) -> (24, 27)
        assert_eq!(values, [6.0, 9.0, 24.0, 27.0]);
        assert!(st.tensor("fc.bias").is_err(), "head dropped");
        let (_, header) = SafeTensors::read_metadata(&bytes).expect("meta");
        let meta = header.metadata().clone().expect("metadata");
        assert!(!meta.contains_key("normalization"));
        assert!(meta.contains_key("first_conv"));
        let config: serde_json::Value = serde_json::from_str(&meta["config"]).expect("json");
        assert_eq!(
            config,
            serde_json::json!({ "in_channels": 1, "num_classes": null })
        );

        adapt_first_conv(&src, &dst, 3, false).expect("identity");
        let bytes = std::fs::read(&dst).expect("read");
        let st = SafeTensors::deserialize(&bytes).expect("parse");
        assert_eq!(st.tensor(FIRST_CONV).expect("conv1").shape(), &[2, 3, 1, 2]);
        assert!(st.tensor("fc.bias").is_ok());
    }

    #[test]
    fn bad_inputs_name_the_tensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = paths(&dir, "in", "out");
        write_checkpoint(&src, vec![2, 1, 1, 2], Dtype::F32);
        let e = adapt_first_conv(&src, &dst, 1, false)
            .expect_err("1 channel already")
            .to_string();
        assert!(
            e.contains("conv1.weight") && e.contains("expected 3"),
            "{e}"
        );
        write_checkpoint(&src, vec![2, 3, 1, 2], Dtype::F16);
        let e = adapt_first_conv(&src, &dst, 1, false)
            .expect_err("f16")
            .to_string();
        assert!(e.contains("F16"), "{e}");
        write_checkpoint(&src, vec![6, 2], Dtype::F32);
        let e = adapt_first_conv(&src, &dst, 1, false)
            .expect_err("2-D")
            .to_string();
        assert!(e.contains("shape [6, 2]"), "{e}");
        write_checkpoint(&src, vec![2, 3, 1, 2], Dtype::F32);
        let e = adapt_first_conv(&src, &dst, 2, false)
            .expect_err("2 channels")
            .to_string();
        assert!(e.contains("2 input channels"), "{e}");
        std::fs::write(&src, b"not safetensors").expect("write");
        let e = adapt_first_conv(&src, &dst, 1, false)
            .expect_err("garbage")
            .to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
        assert!(!dst.exists(), "nothing written on error");
        assert_eq!(sum_input_channels(&[1.0; 5], [1, 3, 1, 2]), None);
    }
}

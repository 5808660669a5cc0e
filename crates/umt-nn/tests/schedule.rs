//! Learning-rate schedules against `torch.optim.lr_scheduler` values
//! (fixture: data-prep/golden/optim/optim.json).

use serde::Deserialize;
use umt_nn::schedule::{
    cosine, linear_warmup, one_cycle, one_cycle_momentum, step_decay, LrSchedule,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Deserialize)]
struct Sched {
    name: String,
    kind: String,
    args: serde_json::Value,
    lr: Vec<f64>,
    #[serde(default)]
    momentum: Vec<f64>,
}

#[derive(Deserialize)]
struct Fixture {
    schedules: Vec<Sched>,
}

fn num(a: &serde_json::Value, k: &str) -> Result<f64, String> {
    a[k].as_f64().ok_or_else(|| format!("missing {k}"))
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-12 + 1e-9 * want.abs(),
        "{what}: {got} vs torch {want}"
    );
}

#[test]
fn schedules_match_torch() -> TestResult {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data-prep/golden/optim/optim.json"
    );
    let f: Fixture = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    assert_eq!(f.schedules.len(), 5);
    for s in &f.schedules {
        let a = &s.args;
        for (t, &want) in s.lr.iter().enumerate() {
            let got = match s.kind.as_str() {
                "one_cycle" => one_cycle(
                    t,
                    num(a, "max_lr")?,
                    num(a, "total_steps")? as usize,
                    num(a, "pct_start")?,
                    num(a, "div_factor")?,
                    num(a, "final_div_factor")?,
                ),
                "step_decay" => step_decay(
                    num(a, "base_lr")?,
                    t,
                    num(a, "step_size")? as usize,
                    num(a, "gamma")?,
                ),
                "cosine" => cosine(
                    num(a, "base_lr")?,
                    t,
                    num(a, "total_steps")? as usize,
                    num(a, "min_lr")?,
                ),
                "linear_warmup" => linear_warmup(
                    num(a, "base_lr")?,
                    t,
                    num(a, "warmup_steps")? as usize,
                    num(a, "start_factor")?,
                ),
                k => return Err(format!("unknown kind {k}").into()),
            };
            assert_close(got, want, &format!("{} lr at {t}", s.name));
        }
        if s.kind == "one_cycle" {
            for (t, &want) in s.momentum.iter().enumerate() {
                let got = one_cycle_momentum(
                    t,
                    num(a, "total_steps")? as usize,
                    num(a, "pct_start")?,
                    0.85,
                    0.95,
                );
                assert_close(got, want, &format!("{} momentum at {t}", s.name));
            }
        }
    }
    Ok(())
}

/// ESANet's NYUv2 schedule through the config enum: 4e-4 → 0.01 at epoch 49 → 4e-8 at 499.
#[test]
fn esanet_one_cycle_config() -> TestResult {
    let s: LrSchedule = serde_json::from_str(
        r#"{"kind": "one_cycle", "max_lr": 0.01, "total_steps": 500, "pct_start": 0.1,
            "div_factor": 25, "final_div_factor": 1e4}"#,
    )?;
    s.validate()?;
    assert_close(s.lr_at(0), 4e-4, "start");
    assert_close(s.lr_at(49), 0.01, "peak");
    assert_close(s.lr_at(499), 4e-8, "end");
    assert_close(s.lr_at(10_000), 4e-8, "past the end");
    assert_eq!(s.momentum_at(0), Some(0.95));
    Ok(())
}

#[test]
fn cosine_with_warmup() -> TestResult {
    let s = LrSchedule::Cosine {
        base_lr: 0.1,
        total_steps: 12,
        min_lr: 0.0,
        warmup_steps: 2,
        warmup_start_factor: 0.5,
    };
    s.validate()?;
    assert_close(s.lr_at(0), 0.05, "warm-up start");
    assert_close(s.lr_at(1), 0.075, "warm-up");
    assert_close(s.lr_at(2), 0.1, "cosine start");
    assert_close(s.lr_at(7), 0.05, "cosine middle");
    assert_close(s.lr_at(12), 0.0, "end");
    assert_eq!(s.momentum_at(3), None);
    Ok(())
}

#[test]
fn bad_configs_are_errors() -> TestResult {
    let unknown = serde_json::from_str::<LrSchedule>(
        r#"{"kind": "step_decay", "base_lr": 0.1, "step_size": 5, "gama": 0.1}"#,
    );
    assert!(unknown
        .err()
        .ok_or("accepted")?
        .to_string()
        .contains("gama"));
    let bad = [
        LrSchedule::StepDecay {
            base_lr: 0.1,
            step_size: 0,
            gamma: 0.1,
        },
        LrSchedule::Constant { lr: f64::NAN },
        LrSchedule::Cosine {
            base_lr: 0.1,
            total_steps: 5,
            min_lr: 0.0,
            warmup_steps: 5,
            warmup_start_factor: 0.1,
        },
    ];
    for s in bad {
        assert!(
            matches!(s.validate(), Err(umt_nn::Error::Config { .. })),
            "{s:?}"
        );
    }
    // Phase 1 would last 0 steps: pct_start·total − 1 = 0.
    let s: LrSchedule = serde_json::from_str(
        r#"{"kind": "one_cycle", "max_lr": 0.1, "total_steps": 10, "pct_start": 0.1}"#,
    )?;
    let err = s.validate().err().ok_or("accepted")?;
    assert!(err.to_string().contains("pct_start"), "{err}");
    Ok(())
}

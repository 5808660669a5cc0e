//! Without ffmpeg on PATH the run stops before touching anything, saying how to install it.
//! (Its own test binary: it empties PATH for the whole process.)

#[test]
fn missing_ffmpeg_says_how_to_install_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("v.csv");
    std::fs::write(&csv, "a,1,x,train\n")?;
    std::env::set_var("PATH", dir.path());
    let out = dir.path().join("out");
    let opts = umt_data_prep::PrepareOptions::new(&csv, dir.path(), &out);
    let e = umt_data_prep::prepare(&opts).unwrap_err();
    assert!(
        matches!(e, umt_data_prep::Error::ToolNotFound { tool: "ffmpeg", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("apt-get install ffmpeg"), "{e}");
    assert!(
        !out.exists(),
        "nothing is written before the tools are found"
    );
    Ok(())
}

//! Test fixture for stasc's plugin loader: a plugin that misbehaves on request, so the host's containment can be
//! tested. The answer selects the behaviour: "panic" panics, "error" returns an error, "nan" / "inf" return those
//! values; any other answer scores the number of gold answers.

fn score(gold: &[String], answer: &str) -> Result<f64, String> {
    match answer {
        "panic" => panic!("test-misbehaving was asked to panic"),
        "error" => Err("test-misbehaving was asked to fail".to_string()),
        "nan" => Ok(f64::NAN),
        "inf" => Ok(f64::INFINITY),
        _ => Ok(gold.len() as f64),
    }
}

stasc_plugin::export_reward!("test-misbehaving", score);

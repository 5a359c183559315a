//! How an error reaches the user: one line, each cause once.

/// The error and its causes on one line, `outer: cause: ...`. A cause whose text the line already holds is left
/// out (typed errors often print their source in their own message as well, and anyhow's chain lists it again), and
/// a message of several lines is joined into one.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source in its own message and also returns it as its source, as the io-wrapping
    /// variants of the library's error enums do.
    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Wrapped {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from_raw_os_error(17);
        let err = anyhow::Error::new(Wrapped { path: "runs/x/iter_0/model".into(), source: io })
            .context("saving the fine-tuned model");
        assert_eq!(
            one_line(&err),
            "saving the fine-tuned model: runs/x/iter_0/model: File exists (os error 17)",
            "{err:#}"
        );
    }

    #[test]
    fn new_causes_are_kept_and_lines_are_joined() {
        let err = anyhow::anyhow!("disk full\n  while writing chunk 3").context("sampling").context("run failed");
        assert_eq!(one_line(&err), "run failed: sampling: disk full while writing chunk 3");
    }
}

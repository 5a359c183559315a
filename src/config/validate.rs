//! Small value checks shared by the resolvers; each error names the file and the key.

use std::path::Path;

use super::error::ConfigError;

/// `value` must be at least `min` (counts such as batch sizes and sample numbers).
pub fn at_least(file: &Path, key: &str, value: u64, min: u64) -> Result<usize, ConfigError> {
    if value < min {
        return Err(ConfigError::invalid(file, key, format!("must be at least {min}, found {value}")));
    }
    usize::try_from(value).map_err(|_| ConfigError::invalid(file, key, format!("is too large, found {value}")))
}

/// `value` must lie in the interval; `low_open`/`high_open` exclude the ends. The error writes the interval.
pub fn in_interval(
    file: &Path,
    key: &str,
    value: f64,
    (low, low_open): (f64, bool),
    (high, high_open): (f64, bool),
) -> Result<f64, ConfigError> {
    let above = if low_open { value > low } else { value >= low };
    let below = if high_open { value < high } else { value <= high };
    if above && below {
        return Ok(value);
    }
    let interval = format!(
        "{}{low}, {}{}",
        if low_open { "(" } else { "[" },
        if high.is_infinite() { "inf".to_string() } else { high.to_string() },
        if high_open { ")" } else { "]" }
    );
    Err(ConfigError::invalid(file, key, format!("must be in {interval}, found {value}")))
}

/// `value` must be finite and at least 0.
pub fn non_negative(file: &Path, key: &str, value: f64) -> Result<f64, ConfigError> {
    in_interval(file, key, value, (0.0, false), (f64::INFINITY, true))
}

/// `value` must be finite and above 0.
pub fn positive(file: &Path, key: &str, value: f64) -> Result<f64, ConfigError> {
    in_interval(file, key, value, (0.0, true), (f64::INFINITY, true))
}

/// `value` must be a non-empty string.
pub fn non_empty(file: &Path, key: &str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(file, key, "must not be empty"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_name_their_bounds() {
        let f = Path::new("c.yaml");
        assert_eq!(in_interval(f, "top_p", 1.0, (0.0, true), (1.0, false)).unwrap(), 1.0);
        let e = in_interval(f, "top_p", 1.5, (0.0, true), (1.0, false)).unwrap_err().to_string();
        assert_eq!(e, "c.yaml: key 'top_p' must be in (0, 1], found 1.5");
        let e = non_negative(f, "temperature", -0.1).unwrap_err().to_string();
        assert_eq!(e, "c.yaml: key 'temperature' must be in [0, inf), found -0.1");
        assert!(at_least(f, "k", 0, 1).is_err());
        assert!(non_empty(f, "k", " ".into()).is_err());
    }
}

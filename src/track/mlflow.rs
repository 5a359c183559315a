//! MLflow over its REST API (the `/api/2.0/mlflow/...` endpoints, as `mlflow server` serves them) at
//! MLFLOW_TRACKING_URI: one MLflow run per stasc run, found again when a run resumes (its id is kept in the run
//! directory's tracking.json), parameters from the resolved configuration, metrics in batches, files uploaded
//! through the server's artifact proxy (`mlflow-artifacts:` URIs) or copied into a local artifact store.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::TrackError;

/// Where a stasc run's MLflow run lives (kept in tracking.json so a resumed run logs into the same one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowRun {
    /// The tracking server it was created on.
    pub tracking_uri: String,
    /// Its experiment.
    pub experiment_id: String,
    /// Its run id.
    pub run_id: String,
    /// Where its artifacts go (`mlflow-artifacts:/...`, `file:///...` or a path).
    pub artifact_uri: String,
}

/// MLflow's limits on one log-batch call and on a parameter value (mlflow/utils/validation.py).
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PARAMS_PER_BATCH: usize = 100;
const MAX_PARAM_VALUE_CHARS: usize = 6000;
/// Seconds before a silent server counts as failed: a tracker must never hold a run up for long.
const TIMEOUT_S: u64 = 15;

/// A client for one tracking server.
#[derive(Debug, Clone)]
pub struct MlflowClient {
    base: String,
}

impl MlflowClient {
    /// A client for `tracking_uri` (http://host:port[/prefix]); other schemes are an error saying what is supported.
    pub fn new(tracking_uri: &str) -> Result<Self, TrackError> {
        let uri = tracking_uri.trim_end_matches('/');
        if !uri.starts_with("http://") {
            return Err(TrackError::Unsupported(format!(
                "MLFLOW_TRACKING_URI={tracking_uri}: stasc talks to an MLflow server over plain http:// (start one \
                 with `mlflow server --host 127.0.0.1 --port 5000`, or reach a remote one through an http tunnel)"
            )));
        }
        Ok(MlflowClient { base: uri.to_string() })
    }

    fn call(&self, method: &str, endpoint: &str, body: Option<&Value>) -> Result<Value, TrackError> {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.base);
        let request = match method {
            "GET" => minreq::get(&url),
            _ => minreq::post(&url),
        };
        let request = match body {
            Some(b) => request.with_header("Content-Type", "application/json").with_body(b.to_string()),
            None => request,
        };
        let response = request
            .with_timeout(TIMEOUT_S)
            .send()
            .map_err(|e| TrackError::Http { url: url.clone(), message: e.to_string() })?;
        let text = response.as_str().unwrap_or("").to_string();
        if !(200..300).contains(&response.status_code) {
            return Err(TrackError::Http { url, message: format!("HTTP {}: {}", response.status_code, text.trim()) });
        }
        serde_json::from_str(&text).map_err(|e| TrackError::Http { url, message: format!("not JSON ({e}): {text}") })
    }

    /// The id of experiment `name`, created if it does not exist.
    pub fn experiment_id(&self, name: &str) -> Result<String, TrackError> {
        let endpoint = format!("experiments/get-by-name?experiment_name={}", percent_encode(name));
        match self.call("GET", &endpoint, None) {
            Ok(v) => string_at(&v, &["experiment", "experiment_id"]),
            Err(TrackError::Http { message, .. }) if message.contains("RESOURCE_DOES_NOT_EXIST") => {
                let v = self.call("POST", "experiments/create", Some(&json!({ "name": name })))?;
                string_at(&v, &["experiment_id"])
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a run named `run_name` in `experiment_id`.
    pub fn create_run(
        &self,
        tracking_uri: &str,
        experiment_id: &str,
        run_name: &str,
        tags: &[(&str, String)],
    ) -> Result<MlflowRun, TrackError> {
        let tags: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        let body = json!({
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": now_ms(),
            "tags": tags,
        });
        let v = self.call("POST", "runs/create", Some(&body))?;
        Ok(MlflowRun {
            tracking_uri: tracking_uri.to_string(),
            experiment_id: experiment_id.to_string(),
            run_id: string_at(&v, &["run", "info", "run_id"])?,
            artifact_uri: string_at(&v, &["run", "info", "artifact_uri"])?,
        })
    }

    /// Whether `run_id` still exists on the server (a resumed run logs into it, else into a new one).
    pub fn run_exists(&self, run_id: &str) -> Result<bool, TrackError> {
        match self.call("GET", &format!("runs/get?run_id={}", percent_encode(run_id)), None) {
            Ok(v) => Ok(v["run"]["info"]["lifecycle_stage"].as_str() != Some("deleted")),
            Err(TrackError::Http { message, .. }) if message.contains("RESOURCE_DOES_NOT_EXIST") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Logs parameters (values cut to MLflow's limit), in batches.
    pub fn log_params(&self, run_id: &str, params: &[(String, String)]) -> Result<(), TrackError> {
        for chunk in params.chunks(MAX_PARAMS_PER_BATCH) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": param_key(k), "value": v.chars().take(MAX_PARAM_VALUE_CHARS).collect::<String>()}))
                .collect();
            self.call("POST", "runs/log-batch", Some(&json!({"run_id": run_id, "params": params})))?;
        }
        Ok(())
    }

    /// Logs metrics `(step, name, value)`, in batches.
    pub fn log_metrics(&self, run_id: &str, metrics: &[(u64, String, f64)]) -> Result<(), TrackError> {
        let timestamp = now_ms();
        for chunk in metrics.chunks(MAX_METRICS_PER_BATCH) {
            let metrics: Vec<Value> = chunk
                .iter()
                .filter(|(_, _, v)| v.is_finite())
                .map(|(step, k, v)| json!({"key": k, "value": v, "timestamp": timestamp, "step": step}))
                .collect();
            self.call("POST", "runs/log-batch", Some(&json!({"run_id": run_id, "metrics": metrics})))?;
        }
        Ok(())
    }

    /// Marks the run FINISHED or FAILED.
    pub fn end_run(&self, run_id: &str, succeeded: bool) -> Result<(), TrackError> {
        let status = if succeeded { "FINISHED" } else { "FAILED" };
        let body = json!({"run_id": run_id, "status": status, "end_time": now_ms()});
        self.call("POST", "runs/update", Some(&body)).map(|_| ())
    }

    /// Uploads every file under `dir` to the run's artifacts, below `under`; returns how many files went up.
    pub fn log_artifacts(&self, run: &MlflowRun, dir: &Path, under: &str) -> Result<usize, TrackError> {
        let mut files = Vec::new();
        collect_files(dir, dir, &mut files)?;
        for (path, relative) in &files {
            let target = if under.is_empty() { relative.clone() } else { format!("{under}/{relative}") };
            self.put_artifact(run, path, &target)?;
        }
        Ok(files.len())
    }

    fn put_artifact(&self, run: &MlflowRun, path: &Path, target: &str) -> Result<(), TrackError> {
        let bytes = std::fs::read(path).map_err(|e| TrackError::io(path, e))?;
        if let Some(rest) = run.artifact_uri.strip_prefix("mlflow-artifacts:") {
            // mlflow-artifacts:/<path> or mlflow-artifacts://host:port/<path>: the server proxies the store.
            let rest = rest.strip_prefix("//").map_or(rest, |r| r.find('/').map_or("", |i| &r[i..]));
            let url = format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{}/{}",
                self.base,
                rest.trim_matches('/'),
                target.split('/').map(percent_encode).collect::<Vec<_>>().join("/")
            );
            let response = minreq::put(&url)
                .with_header("Content-Type", "application/octet-stream")
                .with_body(bytes)
                .with_timeout(TIMEOUT_S)
                .send()
                .map_err(|e| TrackError::Http { url: url.clone(), message: e.to_string() })?;
            if !(200..300).contains(&response.status_code) {
                let text = response.as_str().unwrap_or("").trim().to_string();
                return Err(TrackError::Http { url, message: format!("HTTP {}: {text}", response.status_code) });
            }
            return Ok(());
        }
        // A store on this machine's file system (a server started without artifact proxying): copy.
        let root = run.artifact_uri.strip_prefix("file://").unwrap_or(&run.artifact_uri);
        if !root.starts_with('/') {
            return Err(TrackError::Unsupported(format!(
                "artifact store {}: stasc uploads through the server (mlflow server --serve-artifacts, the default) \
                 or into a local directory",
                run.artifact_uri
            )));
        }
        let dest = Path::new(root).join(target);
        crate::atomic_file::write(&dest, &bytes).map_err(|e| TrackError::io(&e.path, e.source))
    }
}

/// Every file below `dir` with its path relative to `root` ('/'-separated), in name order.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<(), TrackError> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| TrackError::io(dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else if path.is_file() {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let relative: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into()).collect();
            out.push((path.clone(), relative.join("/")));
        }
    }
    Ok(())
}

fn string_at(v: &Value, path: &[&str]) -> Result<String, TrackError> {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().map(str::to_string).ok_or_else(|| TrackError::Http {
        url: path.join("."),
        message: format!("the server's answer has no {}: {v}", path.join(".")),
    })
}

/// MLflow keys allow letters, digits, `_ - . / ` and spaces; anything else becomes `_`.
fn param_key(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || "_-./ ".contains(c) { c } else { '_' }).collect()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_for_urls_and_keys() {
        assert_eq!(percent_encode("a b/c=é"), "a%20b%2Fc%3D%C3%A9");
        assert_eq!(param_key("ft.training.lr[0]"), "ft.training.lr_0_");
    }

    #[test]
    fn only_http_servers_are_accepted() {
        assert!(MlflowClient::new("http://127.0.0.1:5000/").is_ok());
        let e = MlflowClient::new("file:///tmp/mlruns").unwrap_err().to_string();
        assert!(e.contains("plain http://"), "{e}");
    }

    #[test]
    fn a_server_that_is_not_there_is_an_error_not_a_hang() {
        // Port 9 (discard) on loopback: nothing listens in a test environment, so the connection is refused.
        let client = MlflowClient::new("http://127.0.0.1:9").unwrap();
        let e = client.experiment_id("x").unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:9"), "{e}");
    }
}

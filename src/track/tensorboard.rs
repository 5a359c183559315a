//! TensorBoard event files written by hand: TFRecord framing (length, masked CRC-32C of the length, data, masked
//! CRC-32C of the data) around `tensorflow.Event` protobuf messages with scalar `Summary` values. The two messages
//! are small enough that encoding their few fields directly beats pulling in a protobuf stack; tensorboard's own
//! reader checks the result (tests/it/tracking.rs).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::TrackError;

/// Appends scalar events to one `events.out.tfevents.*` file in a directory.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Creates a new event file in `dir` (a new file per process: TensorBoard reads every file of a directory, so a
    /// resumed run adds one beside the first) and writes the file-version event first.
    pub fn create(dir: &Path) -> Result<Self, TrackError> {
        fs::create_dir_all(dir).map_err(|e| TrackError::io(dir, e))?;
        let host = fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let host = if host.is_empty() { "localhost".to_string() } else { host };
        let name = format!("events.out.tfevents.{}.{host}.{}.stasc", now().trunc() as u64, std::process::id());
        let path = dir.join(name);
        let file =
            OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| TrackError::io(&path, e))?;
        let mut writer = EventWriter { path, file };
        writer.write_event(&file_version_event(now()))?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event holding `values` as scalars at `step`, and flushes it.
    pub fn scalars(&mut self, step: u64, values: &[(String, f64)]) -> Result<(), TrackError> {
        self.write_event(&scalar_event(now(), step, values))
    }

    fn write_event(&mut self, event: &[u8]) -> Result<(), TrackError> {
        self.file.write_all(&tfrecord(event)).and_then(|_| self.file.flush()).map_err(|e| TrackError::io(&self.path, e))
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One TFRecord: u64 length, masked CRC of the length bytes, the data, masked CRC of the data (little-endian).
pub fn tfrecord(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// TFRecord's CRC mask: rotate right by 15 bits and add a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise: event files are small.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn key(out: &mut Vec<u8>, field: u8, wire: u8) {
    out.push((field << 3) | wire);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    key(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `Event { wall_time = 1 (double), step = 2 (int64), ... }`, the header both event kinds share.
fn event_header(wall_time: f64, step: u64) -> Vec<u8> {
    let mut out = Vec::new();
    key(&mut out, 1, FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    key(&mut out, 2, VARINT);
    varint(&mut out, step);
    out
}

/// The first event of every file: `Event.file_version = 3` = "brain.Event:2".
fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut out = event_header(wall_time, 0);
    bytes_field(&mut out, 3, b"brain.Event:2");
    out
}

/// `Event.summary = 5` holding `Summary.value = 1` entries of `Value { tag = 1, simple_value = 2 (float) }`.
fn scalar_event(wall_time: f64, step: u64, values: &[(String, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in values {
        let mut value = Vec::new();
        bytes_field(&mut value, 1, tag.as_bytes());
        key(&mut value, 2, FIXED32);
        value.extend_from_slice(&(*v as f32).to_le_bytes());
        bytes_field(&mut summary, 1, &value);
    }
    let mut out = event_header(wall_time, step);
    bytes_field(&mut out, 5, &summary);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }

    #[test]
    fn records_frame_their_data() {
        let r = tfrecord(b"abc");
        assert_eq!(r.len(), 3 + 16);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(u32::from_le_bytes(r[15..].try_into().unwrap()), masked_crc32c(b"abc"));
    }

    #[test]
    fn varints_use_seven_bits_per_byte() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, vec![0xac, 0x02]);
    }

    #[test]
    fn each_writer_gets_its_own_file_starting_with_the_version_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(3, &[("a/b".into(), 0.5)]).unwrap();
        let bytes = fs::read(w.path()).unwrap();
        let first_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert!(bytes[12..12 + first_len].ends_with(b"brain.Event:2"));
        assert!(w.path().file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
    }
}

//! The lock of a run directory (`<run dir>/.lock`), so that two runners (two `stasc sweep` commands, a plain
//! `stasc run` beside a sweep, a resubmitted Slurm task) never work in one directory at once.
//!
//! The lock is an flock on the file, which also holds a one-line JSON record of the holder: host, pid, Slurm job
//! and array task, start time and a heartbeat that a thread renews while the lock is held. The flock alone decides
//! between runners of one host (the kernel drops it when the holder dies, however it dies). On a shared filesystem
//! flocks may be local to each host (NFS mounted with `local_lock=flock` or `nolock`), so a record written by another
//! host counts as held while its heartbeat is younger than the lease, and as stale (taken over) after it. A Slurm
//! task requeued after preemption carries the job id it had, so it takes over its own earlier record at once.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Exit status of `stasc run` / `stasc eval` when another runner holds the run directory (EX_TEMPFAIL): the cell
/// was skipped, not failed.
pub const BUSY_EXIT_CODE: u8 = 75;
/// Name of the lock file inside a run directory.
pub const LOCK_FILE: &str = ".lock";
/// How often the holder renews its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long a record from another host counts as held without a new heartbeat.
pub const LEASE: Duration = Duration::from_secs(120);
/// The record is padded to this many bytes and written with one positioned write, so a reader never sees half of a
/// longer old record behind a shorter new one.
const RECORD_BYTES: usize = 1024;

/// Who holds (or last held) a run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Host name of the holder.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
    /// `SLURM_JOB_ID` of the holder, when it runs inside a Slurm job.
    pub slurm_job_id: Option<String>,
    /// `SLURM_ARRAY_JOB_ID` and `SLURM_ARRAY_TASK_ID` joined as `JOB_TASK`, when it is a job array task.
    pub slurm_array_task: Option<String>,
    /// When the holder took the lock (seconds since the Unix epoch).
    pub started: u64,
    /// The holder's last heartbeat (seconds since the Unix epoch).
    pub heartbeat: u64,
}

impl LockHolder {
    /// The current process as a holder.
    pub fn this_process() -> LockHolder {
        let now = unix_now();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let array = match (env("SLURM_ARRAY_JOB_ID"), env("SLURM_ARRAY_TASK_ID")) {
            (Some(job), Some(task)) => Some(format!("{job}_{task}")),
            _ => None,
        };
        LockHolder {
            host: host_name(),
            pid: std::process::id(),
            slurm_job_id: env("SLURM_JOB_ID"),
            slurm_array_task: array,
            started: now,
            heartbeat: now,
        }
    }

    /// "host H pid P (Slurm job J), since <seconds> s": how messages name the holder.
    pub fn describe(&self) -> String {
        let job = match (&self.slurm_array_task, &self.slurm_job_id) {
            (Some(task), _) => format!(" (Slurm array task {task})"),
            (None, Some(job)) => format!(" (Slurm job {job})"),
            (None, None) => String::new(),
        };
        let age = unix_now().saturating_sub(self.started);
        format!("host {} pid {}{job}, for {age} s", self.host, self.pid)
    }

    /// Whether this record, found in a lock file whose flock was free, still counts as held: only a holder on
    /// another host (whose flock we may not see) with a heartbeat younger than the lease, and not an earlier
    /// incarnation of our own Slurm job (a requeued task).
    fn live_without_flock(&self, me: &LockHolder, now: u64) -> bool {
        if self.host == me.host {
            return false;
        }
        if self.slurm_job_id.is_some() && self.slurm_job_id == me.slurm_job_id {
            return false;
        }
        now.saturating_sub(self.heartbeat) < LEASE.as_secs()
    }
}

/// Errors of taking a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another runner works in the directory.
    #[error("{} is being run by {}; skipping it", dir.display(), holder.describe())]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// Who holds it.
        holder: LockHolder,
    },
    /// The lock file could not be opened or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A held lock: released (record cleared, flock dropped) when dropped, or when the process dies.
#[derive(Debug)]
pub struct RunDirLock {
    file: Arc<File>,
    path: PathBuf,
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    beating: Option<std::thread::JoinHandle<()>>,
    released: AtomicBool,
}

impl RunDirLock {
    /// Takes the lock of `run_dir` (creating the directory), or says who holds it.
    pub fn acquire(run_dir: &Path) -> Result<RunDirLock, LockError> {
        let path = run_dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        // The run directory itself is what cannot be made when, say, a file holds its name: name it, not the lock.
        std::fs::create_dir_all(run_dir).map_err(|source| LockError::Io { path: run_dir.to_path_buf(), source })?;
        let me = LockHolder::this_process();
        // A status view probes the flock for a moment; a runner that meets the probe tries again.
        let mut attempts = 0;
        let (file, flocked) = loop {
            let file =
                OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
            match try_flock(&file, libc::LOCK_EX) {
                Ok(true) => break (file, true),
                Ok(false) => match read_record(&file) {
                    Some(holder) => return Err(LockError::Busy { dir: run_dir.to_path_buf(), holder }),
                    None if attempts < 50 => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    // Held by someone that wrote no record (another tool, or a status probe that never ends).
                    None => {
                        let holder = LockHolder { host: "?".into(), pid: 0, started: 0, heartbeat: 0, ..me.clone() };
                        return Err(LockError::Busy { dir: run_dir.to_path_buf(), holder });
                    }
                },
                // The filesystem has no flock at all: the record alone decides.
                Err(_) => break (file, false),
            }
        };
        if let Some(old) = read_record(&file) {
            // Without flock, a holder on this host is alive exactly when its process is.
            let alive_here = !flocked && old.host == me.host && old.pid != me.pid && process_alive(old.pid);
            if alive_here || old.live_without_flock(&me, unix_now()) {
                return Err(LockError::Busy { dir: run_dir.to_path_buf(), holder: old });
            }
            if old.pid != 0 {
                eprintln!("note: taking over the stale lock of {} from {}", run_dir.display(), old.describe());
            }
        }
        write_record(&file, &me).map_err(io)?;
        let file = Arc::new(file);
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let beating = {
            let (file, stop, mut record) = (Arc::clone(&file), Arc::clone(&stop), me);
            std::thread::Builder::new()
                .name("rundir-lock-heartbeat".into())
                .spawn(move || {
                    let (lock, cvar) = &*stop;
                    let mut stopped = lock.lock().expect("heartbeat lock");
                    // The flag is checked before each wait: a release may come before this thread first waits.
                    while !*stopped {
                        let (guard, timeout) = cvar.wait_timeout(stopped, HEARTBEAT).expect("heartbeat lock");
                        stopped = guard;
                        if *stopped || !timeout.timed_out() {
                            continue;
                        }
                        record.heartbeat = unix_now();
                        // A failed renewal only shortens the lease others see; the flock still holds.
                        let _ = write_record(&file, &record);
                    }
                })
                .map_err(io)?
        };
        Ok(RunDirLock { file, path, stop, beating: Some(beating), released: AtomicBool::new(false) })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Clears the record and drops the flock (also done on drop).
    pub fn release(&mut self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        {
            let (lock, cvar) = &*self.stop;
            *lock.lock().expect("heartbeat lock") = true;
            cvar.notify_all();
        }
        if let Some(t) = self.beating.take() {
            let _ = t.join();
        }
        // An empty file means "free" to readers; the flock goes with the file descriptor.
        let _ = self.file.set_len(0);
        let _ = unlock(&self.file);
    }
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        self.release();
    }
}

/// Who holds the lock of `run_dir` now; None when it is free, never taken, or its holder is gone (stale).
pub fn holder(run_dir: &Path) -> Option<LockHolder> {
    let file = File::open(run_dir.join(LOCK_FILE)).ok()?;
    let record = read_record(&file)?;
    match try_flock(&file, libc::LOCK_SH) {
        // Held: the holder's flock keeps us out.
        Ok(false) => Some(record),
        Ok(true) => {
            let _ = unlock(&file);
            let me = LockHolder::this_process();
            record.live_without_flock(&me, unix_now()).then_some(record)
        }
        Err(_) => {
            let me = LockHolder::this_process();
            let alive_here = record.host == me.host && process_alive(record.pid);
            (alive_here || record.live_without_flock(&me, unix_now())).then_some(record)
        }
    }
}

/// Ok(true): locked; Ok(false): someone else holds a conflicting lock; Err: the filesystem does not support flock.
/// Waits for an exclusive flock on `file` (released when the file is closed, or by the kernel when the process dies);
/// std's `File::lock` needs Rust 1.89.
pub(crate) fn flock_exclusive(file: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a valid open file descriptor; no memory is shared with the kernel.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn try_flock(file: &File, kind: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock on a valid open file descriptor; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

fn unlock(file: &File) -> std::io::Result<()> {
    // SAFETY: as in try_flock.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn write_record(file: &File, record: &LockHolder) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(record).expect("lock record serialises");
    // Trailing spaces are JSON whitespace: the record parses whatever length it had before.
    bytes.resize(RECORD_BYTES.max(bytes.len() + 1), b' ');
    *bytes.last_mut().expect("non-empty") = b'\n';
    file.write_all_at(&bytes, 0)?;
    file.sync_data()
}

fn read_record(file: &File) -> Option<LockHolder> {
    // A record being rewritten in place can be read half-old for an instant; a second read then sees it whole.
    for _ in 0..3 {
        let mut text = String::new();
        let mut f = file;
        if f.seek(SeekFrom::Start(0)).is_err() || f.read_to_string(&mut text).is_err() {
            return None;
        }
        if text.trim().is_empty() {
            return None;
        }
        if let Ok(record) = serde_json::from_str(&text) {
            return Some(record);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Whether a process with this pid exists on this host.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This machine's host name (as `hostname` prints it).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes a NUL-terminated name into it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_rw(dir: &Path) -> File {
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(LOCK_FILE)).unwrap()
    }

    #[test]
    fn a_second_lock_on_one_directory_is_refused_naming_the_holder_and_free_after_release() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), None, "never taken");
        let mut first = RunDirLock::acquire(dir.path()).unwrap();
        let held = holder(dir.path()).expect("held");
        assert_eq!(held.pid, std::process::id());
        assert_eq!(held.host, host_name());
        // flocks belong to open files, so a second open in the same process conflicts like another process would.
        match RunDirLock::acquire(dir.path()) {
            Err(LockError::Busy { holder, .. }) => assert_eq!(holder.pid, std::process::id()),
            other => panic!("expected Busy, got {other:?}"),
        }
        let message = RunDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(message.contains("is being run by host") && message.contains("skipping"), "{message}");
        first.release();
        assert_eq!(holder(dir.path()), None, "released");
        drop(RunDirLock::acquire(dir.path()).unwrap());
    }

    #[test]
    fn a_record_left_by_a_dead_holder_is_stale_and_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A holder that died without clearing its record: a child process that has exited by now.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let old = LockHolder { pid: dead, ..LockHolder::this_process() };
        write_record(&open_rw(dir.path()), &old).unwrap();
        assert_eq!(holder(dir.path()), None, "a dead holder on this host holds nothing");
        let lock = RunDirLock::acquire(dir.path()).unwrap();
        assert_eq!(holder(dir.path()).unwrap().pid, std::process::id());
        drop(lock);
    }

    #[test]
    fn a_record_from_another_host_holds_for_the_lease_unless_it_is_our_own_slurm_job() {
        let me = LockHolder { slurm_job_id: Some("7".into()), ..LockHolder::this_process() };
        let now = unix_now();
        let other = LockHolder { host: "node-b".into(), heartbeat: now - 10, slurm_job_id: None, ..me.clone() };
        assert!(other.live_without_flock(&me, now));
        let expired = LockHolder { heartbeat: now - LEASE.as_secs() - 1, ..other.clone() };
        assert!(!expired.live_without_flock(&me, now));
        let requeued = LockHolder { slurm_job_id: Some("7".into()), ..other.clone() };
        assert!(!requeued.live_without_flock(&me, now), "a requeued task takes over its own earlier record");
        let same_host = LockHolder { host: me.host.clone(), ..other };
        assert!(!same_host.live_without_flock(&me, now), "on this host the flock alone decides");

        // And through the file: a fresh record of another host keeps a runner out although the flock is free.
        let dir = tempfile::tempdir().unwrap();
        let remote = LockHolder { host: "node-b".into(), heartbeat: now, slurm_job_id: None, ..me };
        write_record(&open_rw(dir.path()), &remote).unwrap();
        assert_eq!(holder(dir.path()).map(|h| h.host), Some("node-b".into()));
        assert!(matches!(RunDirLock::acquire(dir.path()), Err(LockError::Busy { .. })));
    }

    #[test]
    fn a_short_record_over_a_longer_one_still_parses() {
        let dir = tempfile::tempdir().unwrap();
        let f = open_rw(dir.path());
        let long = LockHolder { host: "h".repeat(300), ..LockHolder::this_process() };
        write_record(&f, &long).unwrap();
        let short = LockHolder { host: "h".into(), ..long };
        write_record(&f, &short).unwrap();
        assert_eq!(read_record(&f), Some(short));
    }
}

//! A trap for CA trust-store reads, for the init smoke test.
//!
//! `SSL_CERT_FILE` names a FIFO and `SSL_CERT_DIR` an empty directory. Every
//! loader of the system store honours them when set (rustls-native-certs,
//! OpenSSL and its probe) and reads the file first. Opening a FIFO for
//! reading blocks until a writer comes: the watcher sees the waiting reader
//! (a non-blocking open for writing succeeds only then), counts it, feeds it
//! a real certificate and closes, so the reader carries on as it would have.
//! A listing of the directory moves its access time (set far in the past
//! first, so `relatime` updates it).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use tokio::task::JoinHandle;

use crate::Result;

pub struct TrustStoreTrap {
    _dir: tempfile::TempDir,
    file: PathBuf,
    certs: PathBuf,
    file_reads: Arc<AtomicUsize>,
    watcher: JoinHandle<()>,
}

impl Drop for TrustStoreTrap {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Whether `path`'s access time moved past the year 2001.
fn accessed_recently(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.accessed())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|d| d > Duration::from_secs(31 * 365 * 86_400))
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let status = Command::new(program).args(args).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {args:?}: {status}").into())
    }
}

impl TrustStoreTrap {
    /// Starts watching; readers get `pem` (a real certificate, so their
    /// init goes on as it would with a store).
    pub fn start(pem: Vec<u8>) -> Result<TrustStoreTrap> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("ca-bundle.pem");
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs)?;
        run("mkfifo", &[&file.to_string_lossy()])?;
        let file_reads = Arc::new(AtomicUsize::new(0));
        let watcher = tokio::spawn({
            let (file, file_reads) = (file.clone(), file_reads.clone());
            async move {
                // One reader is counted (and fed) once, however long it
                // keeps the FIFO open; it is gone when no reader is left.
                let mut feeding = false;
                loop {
                    // ENXIO while nobody has the FIFO open for reading.
                    let writer = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&file);
                    match writer {
                        Ok(mut writer) if !feeding => {
                            file_reads.fetch_add(1, Ordering::SeqCst);
                            let _ = writer.write_all(&pem);
                            feeding = true;
                        }
                        Ok(_) => {}
                        Err(_) => feeding = false,
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        });
        let trap = TrustStoreTrap {
            _dir: dir,
            file,
            certs,
            file_reads,
            watcher,
        };
        trap.reset()?;
        Ok(trap)
    }

    /// The variables that point a process's trust store at the trap.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "SSL_CERT_FILE".into(),
                self.file.to_string_lossy().into_owned(),
            ),
            (
                "SSL_CERT_DIR".into(),
                self.certs.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// Forgets what was seen so far.
    pub fn reset(&self) -> Result<()> {
        self.file_reads.store(0, Ordering::SeqCst);
        run(
            "touch",
            &[
                "-a",
                "-d",
                "2000-01-01 00:00:00",
                &self.certs.to_string_lossy(),
            ],
        )?;
        if accessed_recently(&self.certs) {
            return Err("cannot set the trap directory's access time".into());
        }
        Ok(())
    }

    /// What was read since the last reset: the file (how often) and the directory.
    pub fn reads(&self) -> (usize, bool) {
        (
            self.file_reads.load(Ordering::SeqCst),
            accessed_recently(&self.certs),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trap sees a reader of each path and feeds the file's reader.
    #[tokio::test(flavor = "multi_thread")]
    async fn sees_a_process_read_the_file_and_list_the_directory() {
        let trap = TrustStoreTrap::start(b"-----BEGIN CERTIFICATE-----\n".to_vec()).unwrap();
        assert_eq!(trap.reads(), (0, false));
        let env = trap.env();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh")
                .args(["-c", "cat \"$SSL_CERT_FILE\"; ls \"$SSL_CERT_DIR\""])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(env)
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        assert!(String::from_utf8_lossy(&output.stdout).contains("BEGIN CERTIFICATE"));
        assert_eq!(trap.reads(), (1, true));
        trap.reset().unwrap();
        assert_eq!(trap.reads(), (0, false));
    }
}

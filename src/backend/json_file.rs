//! The JSON Lines file backend: appends each record as one line, streamed into the file (a
//! million-series record is never built as one string), newline last, so a reader that stops
//! at the last newline never sees a partial record. A partial tail left by a crash is cut off
//! at start; a failed write is rolled back. Rotates at `max_bytes` to `path.1` … `path.keep`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use super::config::{BackendInvalid, raw};
use super::{Backend, BackendError};
use crate::record::Record;

/// The JSON Lines file backend's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonFileConfig {
    pub path: PathBuf,
    /// Rotate when the file would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept: `path.1` … `path.keep`.
    pub keep: usize,
}

/// `kind = "json_file"` as the file spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJsonFileConfig {
    path: PathBuf,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default = "default_keep")]
    keep: usize,
}

fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}

fn default_keep() -> usize {
    5
}

/// Validates a json_file entry.
///
/// # Errors
/// A missing path, an unknown key or a wrong type.
pub(super) fn validate(table: toml::Table) -> Result<JsonFileConfig, BackendInvalid> {
    let RawJsonFileConfig {
        path,
        max_bytes,
        keep,
    } = raw(table)?;
    Ok(JsonFileConfig {
        path,
        max_bytes,
        keep,
    })
}

const NAME: &str = "json_file";

/// Appends records to a file, rotating by size.
pub struct JsonFileBackend {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: Option<File>,
    size: u64,
}

impl JsonFileBackend {
    /// Opens (or creates) the file and cuts off a partial last line.
    ///
    /// # Errors
    /// When the file cannot be opened, read or truncated.
    pub fn open(config: &JsonFileConfig) -> Result<JsonFileBackend, BackendError> {
        let mut backend = JsonFileBackend {
            path: config.path.clone(),
            max_bytes: config.max_bytes,
            keep: config.keep,
            file: None,
            size: 0,
        };
        backend.reopen().map_err(|e| backend.error(e))?;
        Ok(backend)
    }

    fn error(&self, source: io::Error) -> BackendError {
        BackendError::File {
            backend: NAME,
            path: self.path.clone(),
            source,
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)?;
        self.size = cut_partial_tail(&mut file)?;
        self.file = Some(file);
        Ok(())
    }

    fn append(&mut self, record: &Record) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("file not open"));
        };
        let before = self.size;
        let mut out = CountingWriter {
            inner: BufWriter::with_capacity(256 * 1024, &*file),
            written: 0,
        };
        let result = serde_json::to_writer(&mut out, record)
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        let written = out.written;
        drop(out);
        match result {
            Ok(()) => {
                self.size = before + written;
                Ok(())
            }
            Err(e) => {
                // Roll back the partial line so the next record starts on a clean line.
                if file.set_len(before).is_err() {
                    self.file = None;
                }
                Err(e)
            }
        }
    }

    /// Shifts `path.N` to `path.N+1` (dropping the one beyond `keep`), `path` to `path.1`,
    /// and starts a new file.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = numbered(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, numbered(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        self.reopen()
    }
}

impl Backend for JsonFileBackend {
    fn name(&self) -> &str {
        NAME
    }

    fn write(&mut self, record: &Record) -> Result<(), BackendError> {
        self.append(record).map_err(|e| self.error(e))?;
        if self.size >= self.max_bytes {
            self.rotate().map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    fn close(&mut self, _deadline: Instant) -> Result<(), BackendError> {
        if let Some(file) = self.file.take() {
            file.sync_data().map_err(|e| self.error(e))?;
        }
        Ok(())
    }
}

/// `path.n`
pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Truncates the file after its last newline; returns the resulting size.
fn cut_partial_tail(file: &mut File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let piece = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(piece)?;
        if let Some(at) = piece.iter().rposition(|&b| b == b'\n') {
            let keep = start + at as u64 + 1;
            if keep < len {
                tracing::warn!(cut = len - keep, "json_file: cut a partial last line");
                file.set_len(keep)?;
            }
            return Ok(keep);
        }
        end = start;
    }
    if len > 0 {
        tracing::warn!(cut = len, "json_file: cut a partial last line");
        file.set_len(0)?;
    }
    Ok(0)
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_tail_is_cut_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":").expect("write");
        let config = JsonFileConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 2,
        };
        let backend = JsonFileBackend::open(&config).expect("opens");
        assert_eq!(backend.size, 8);
        assert_eq!(std::fs::read(&path).expect("read"), b"{\"a\":1}\n");
    }

    #[test]
    fn file_without_any_newline_is_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.jsonl");
        std::fs::write(&path, b"{\"partial\":").expect("write");
        let config = JsonFileConfig {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 2,
        };
        JsonFileBackend::open(&config).expect("opens");
        assert_eq!(std::fs::read(&path).expect("read").len(), 0);
    }

    #[test]
    fn numbered_appends_suffix() {
        assert_eq!(
            numbered(Path::new("/var/lib/m.jsonl"), 3),
            PathBuf::from("/var/lib/m.jsonl.3")
        );
    }
}

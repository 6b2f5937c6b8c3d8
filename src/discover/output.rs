//! The list `discover` writes: a CSV that is a valid `--input`, in a
//! temporary file beside the target, synced and renamed into place when the
//! walk ends well (a reader never sees half a list), or to stdout at the end.

use super::{DiscoverError, Source};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the list goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListOut {
    Stdout,
    File(PathBuf),
}

impl ListOut {
    /// `-` is stdout.
    pub(crate) fn parse(p: &Path) -> Self {
        if p.as_os_str() == "-" {
            ListOut::Stdout
        } else {
            ListOut::File(p.to_owned())
        }
    }
}

/// The header of the list of a source: export's input columns.
fn header(source: &Source) -> &'static [&'static str] {
    match source {
        Source::Groups { .. } => &["GroupId", "MsgSeq"],
        Source::Accounts(_) => &["From_Account", "To_Account", "MsgKey"],
    }
}

enum Sink {
    /// The rows, printed when the walk ends well.
    Memory,
    /// The temporary file and the target.
    File { tmp: PathBuf, target: PathBuf },
}

pub(crate) struct ListWriter {
    csv: csv::Writer<Box<dyn Write + Send>>,
    sink: Sink,
    /// Rows kept for stdout.
    buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    finished: bool,
}

/// A `Write` into a shared buffer (the list for stdout).
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn output_error(path: &Path, e: impl std::fmt::Display) -> DiscoverError {
    DiscoverError::Output(format!("{}: {e}", path.display()))
}

impl ListWriter {
    /// Open the list and write its header; a file's folder must exist.
    pub(crate) fn create(out: &ListOut, source: &Source) -> Result<Self, DiscoverError> {
        let buffer = std::sync::Arc::default();
        let (inner, sink): (Box<dyn Write + Send>, Sink) = match out {
            ListOut::Stdout => (
                Box::new(Shared(std::sync::Arc::clone(&buffer))),
                Sink::Memory,
            ),
            ListOut::File(target) => {
                let name = target.file_name().ok_or_else(|| {
                    DiscoverError::Usage(format!("--out {}: name a file", target.display()))
                })?;
                let tmp = target.with_file_name(format!(
                    ".{}.tmp-{}",
                    name.to_string_lossy(),
                    std::process::id()
                ));
                let file = std::fs::File::create(&tmp).map_err(|e| output_error(&tmp, e))?;
                let sink = Sink::File {
                    tmp,
                    target: target.clone(),
                };
                (Box::new(std::io::BufWriter::new(file)), sink)
            }
        };
        let mut w = ListWriter {
            csv: csv::Writer::from_writer(inner),
            sink,
            buffer,
            finished: false,
        };
        w.csv.write_record(header(source)).map_err(|e| w.error(e))?;
        Ok(w)
    }

    fn error(&self, e: impl std::fmt::Display) -> DiscoverError {
        match &self.sink {
            Sink::Memory => DiscoverError::Output(format!("stdout: {e}")),
            Sink::File { tmp, .. } => output_error(tmp, e),
        }
    }

    pub(crate) fn row(&mut self, fields: &[&str]) -> Result<(), DiscoverError> {
        self.csv.write_record(fields).map_err(|e| self.error(e))
    }

    /// Make the list whole: the file synced and renamed into place (its
    /// folder synced), or the rows printed.
    pub(crate) fn finish(mut self) -> Result<(), DiscoverError> {
        self.csv.flush().map_err(|e| self.error(e))?;
        match &self.sink {
            Sink::Memory => {
                let rows =
                    std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
                let mut out = std::io::stdout().lock();
                out.write_all(&rows)
                    .and_then(|()| out.flush())
                    .map_err(|e| self.error(e))?;
            }
            Sink::File { tmp, target } => {
                std::fs::File::open(tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| output_error(tmp, e))?;
                crate::write::publish_staged(tmp, target)
                    .map_err(|e| DiscoverError::Output(e.to_string()))?;
            }
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for ListWriter {
    /// A list not finished leaves nothing behind.
    fn drop(&mut self) {
        if let (false, Sink::File { tmp, .. }) = (self.finished, &self.sink) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

//! The listener's journal: an append-only log of records (one line each,
//! no newline inside) in a folder of segment files, made durable with
//! `fsync` before anything is acknowledged.
//!
//! Records are numbered from 0 for ever (the *offset*); a segment is named
//! after its first record's offset (`00000000000000000042.jsonl`), so a
//! consumer can say "everything below N is elsewhere" and the segments
//! wholly below N go. The highest segment is never removed, so the journal
//! always knows where it ends, and `floor` (a file) says where it begins.
//!
//! A crash can leave a torn last line (a write that never completed, never
//! acknowledged): `open` cuts it off. A failed append is cut off at once.
//! One writer owns a `Journal`; readers (`read`) look at the files up to
//! an end the writer has published.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A segment is closed and another begun past this size.
const SEGMENT_BYTES: u64 = 64 << 20;

const SUFFIX: &str = ".jsonl";

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line} is damaged (not the last line, so not a torn write): {reason}", .path.display())]
    Damaged {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The open journal, for its one writer.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// The segment appended to: its path, first offset, file and length.
    path: PathBuf,
    first: u64,
    file: File,
    len: u64,
    /// The offset the next record gets.
    end: u64,
}

impl Journal {
    /// Open (or create) the journal in `dir`, cutting off a torn last line.
    /// `valid` says whether a complete line is a record (a line that is
    /// not, before the last, is damage).
    pub fn open(dir: &Path, valid: &dyn Fn(&[u8]) -> bool) -> Result<Journal, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let segments = segments(dir)?;
        let (first, path) = match segments.last() {
            Some((first, path)) => (*first, path.clone()),
            None => {
                let path = segment_path(dir, 0);
                File::create(&path).map_err(io(&path))?;
                sync_dir(dir)?;
                (0, path)
            }
        };
        let (lines, good_len) = scan(&path, valid)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if file.metadata().map_err(io(&path))?.len() != good_len {
            file.set_len(good_len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let mut j = Journal {
            dir: dir.to_owned(),
            path,
            first,
            file,
            len: good_len,
            end: first + lines,
        };
        j.file.seek(SeekFrom::End(0)).map_err(io(&j.path))?;
        Ok(j)
    }

    /// The offset the next record gets: every record below it is durable.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Append records and make them durable (one `fdatasync` for all);
    /// the new end. On failure nothing of them stays.
    pub fn append(&mut self, records: &[Vec<u8>]) -> Result<u64, JournalError> {
        if self.len >= SEGMENT_BYTES {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
        for r in records {
            buf.extend_from_slice(r);
            buf.push(b'\n');
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut back what may have reached the file: it was never acknowledged.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(io(&self.path)(e));
        }
        self.len += buf.len() as u64;
        self.end += records.len() as u64;
        Ok(self.end)
    }

    /// From now on every write fails as on a full disk (for tests).
    #[cfg(test)]
    pub(crate) fn fill_disk(&mut self) {
        self.file = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, self.end);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        sync_dir(&self.dir)?;
        (self.path, self.first, self.file, self.len) = (path, self.end, file, 0);
        Ok(())
    }
}

/// Where the journal in `dir` begins: records below it were handed on and
/// may be gone (0 when `forget` never ran).
pub fn floor(dir: &Path) -> Result<u64, JournalError> {
    let path = dir.join("floor");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| JournalError::Damaged {
            path,
            line: 1,
            reason: format!("{e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Say that records below `offset` are no longer needed: the floor moves
/// there (durably, first), then the segments wholly below it are removed.
pub fn forget(dir: &Path, offset: u64) -> Result<(), JournalError> {
    if offset <= floor(dir)? {
        return Ok(());
    }
    let path = dir.join("floor");
    let tmp = dir.join("floor.tmp");
    let write = |p: &Path| -> std::io::Result<()> {
        let mut f = File::create(p)?;
        writeln!(f, "{offset}")?;
        f.sync_all()
    };
    write(&tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)?;
    let segments = segments(dir)?;
    for pair in segments.windows(2) {
        // The next segment's first record is at or below the floor: this one is done.
        if pair[1].0 <= offset {
            std::fs::remove_file(&pair[0].1).map_err(io(&pair[0].1))?;
        }
    }
    Ok(())
}

/// Records `[from, to)` of the journal in `dir` (at most `max` of them),
/// with the offset of the first; `to` must be an end the writer published.
pub fn read(
    dir: &Path,
    from: u64,
    to: u64,
    max: usize,
) -> Result<(u64, Vec<Vec<u8>>), JournalError> {
    let segments = segments(dir)?;
    let start = segments.iter().rposition(|(first, _)| *first <= from);
    let Some(start) = start else {
        // Below the oldest segment: begin with it (the caller asked from its floor).
        return match segments.first() {
            Some((first, _)) if *first < to => read(dir, *first, to, max),
            _ => Ok((from, Vec::new())),
        };
    };
    let mut out = Vec::new();
    for (first, path) in &segments[start..] {
        let f = File::open(path).map_err(io(path))?;
        for (offset, line) in (*first..).zip(BufReader::new(f).split(b'\n')) {
            if offset >= to || out.len() >= max {
                return Ok((from, out));
            }
            let line = line.map_err(io(path))?;
            if offset >= from {
                out.push(line);
            }
        }
    }
    Ok((from, out))
}

/// The segments of `dir`, by first offset.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SUFFIX}"))
}

/// The complete, valid lines of a segment and the length they take; a
/// torn or invalid last line is not counted, one before it is damage.
fn scan(path: &Path, valid: &dyn Fn(&[u8]) -> bool) -> Result<(u64, u64), JournalError> {
    let f = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::new(f);
    let (mut lines, mut len) = (0u64, 0u64);
    let mut buf = Vec::new();
    let mut bad: Option<String> = None;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok((lines, len));
        }
        if let Some(reason) = bad.take() {
            return Err(JournalError::Damaged {
                path: path.to_owned(),
                line: lines + 1,
                reason,
            });
        }
        let complete = buf.last() == Some(&b'\n');
        if !complete {
            return Ok((lines, len));
        }
        if !valid(&buf[..n - 1]) {
            // Only the last line may be a torn write's leftovers.
            bad = Some("not a record".into());
            continue;
        }
        lines += 1;
        len += n as u64;
    }
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &[u8]) -> bool {
        true
    }

    fn json(line: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(line).is_ok()
    }

    fn recs(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        range
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect()
    }

    #[test]
    fn records_keep_their_offsets_across_reopen_and_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &any).unwrap();
        assert_eq!(j.append(&recs(0..3)).unwrap(), 3);
        j.len = SEGMENT_BYTES; // the next append begins a segment at 3
        assert_eq!(j.append(&recs(3..5)).unwrap(), 5);
        drop(j);
        let j = Journal::open(dir.path(), &json).unwrap();
        assert_eq!(j.end(), 5);
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
        let (_, got) = read(dir.path(), 1, 5, 100).unwrap();
        assert_eq!(got, recs(1..5));
        let (_, got) = read(dir.path(), 2, 4, 1).unwrap();
        assert_eq!(got, recs(2..3));
        // Nothing past the end asked for.
        assert_eq!(read(dir.path(), 0, 2, 100).unwrap().1, recs(0..2));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_damage_before_it_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &json).unwrap();
        j.append(&recs(0..2)).unwrap();
        let path = j.path.clone();
        drop(j);
        let whole = std::fs::read(&path).unwrap();
        for torn in [&b"{\"n\":"[..], b"{\"n\":2", b"garbage\n"] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(torn);
            std::fs::write(&path, &bytes).unwrap();
            let mut j = Journal::open(dir.path(), &json).unwrap();
            assert_eq!(j.end(), 2, "{torn:?}");
            assert_eq!(j.append(&recs(2..3)).unwrap(), 3);
            assert_eq!(read(dir.path(), 0, 3, 9).unwrap().1, recs(0..3));
            drop(j);
            std::fs::write(&path, &whole).unwrap();
        }
        let mut bytes = b"garbage\n".to_vec();
        bytes.extend_from_slice(&whole);
        std::fs::write(&path, &bytes).unwrap();
        let e = Journal::open(dir.path(), &json).unwrap_err();
        assert!(e.to_string().contains("line 1 is damaged"), "{e}");
    }

    #[test]
    fn forgetting_moves_the_floor_and_removes_only_whole_segments_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), &any).unwrap();
        for start in [0u64, 3, 6] {
            j.append(&recs(start..start + 3)).unwrap();
            j.len = SEGMENT_BYTES;
        }
        // Segments 0, 3, 6 (the last one written: 6..9).
        assert_eq!(floor(dir.path()).unwrap(), 0);
        forget(dir.path(), 5).unwrap();
        let firsts: Vec<u64> = segments(dir.path()).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(firsts, [3, 6]);
        assert_eq!(floor(dir.path()).unwrap(), 5);
        // Reading from below the oldest segment begins with it.
        assert_eq!(read(dir.path(), 0, 9, 100).unwrap().1, recs(3..9));
        forget(dir.path(), 9).unwrap();
        let firsts: Vec<u64> = segments(dir.path()).unwrap().iter().map(|s| s.0).collect();
        assert_eq!(
            firsts,
            [6],
            "the last segment stays: it says where the journal ends"
        );
        drop(j);
        assert_eq!(Journal::open(dir.path(), &any).unwrap().end(), 9);
        // The floor never goes back.
        forget(dir.path(), 2).unwrap();
        assert_eq!(floor(dir.path()).unwrap(), 9);
    }
}

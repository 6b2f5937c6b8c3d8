//! The input CSV: a header naming `From_Account`, `To_Account` and `MsgKey`
//! (any case, any order, extra columns ignored, UTF-8 BOM and CRLF accepted),
//! then one message per row. Rows stream out one at a time as `InputItem`s:
//! messages, duplicates (exported once, tracked by a 128-bit fingerprint so a
//! huge input is never held in memory) and invalid rows with their line number.
//! Knows nothing about HTTP.

use crate::kind::{Kind, MessageId};
use crate::model::{FingerprintSet, InputMessage};
use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The value `errors.csv` puts in `error_code` for an invalid input row.
pub(crate) const INVALID_INPUT: &str = "invalid_input";

/// A row that cannot be exported, with what could be read of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidRow {
    pub(crate) line: u64,
    /// The identity cells as read (lossy UTF-8), in `Kind::columns` order.
    pub(crate) cells: Vec<String>,
    pub(crate) reason: String,
}

/// One row's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InputItem {
    /// A message seen for the first time.
    Message(InputMessage),
    /// The same message as another row: the same identity as an earlier
    /// row, or a one-to-one message without a sender that is listed with one.
    Duplicate { line: u64 },
    /// Cannot be exported (reported in errors.csv).
    Invalid(InvalidRow),
    /// A row of a re-fed errors.csv that was an invalid input row then: skipped, not reported again.
    Skipped { line: u64 },
}

/// Why the input cannot be read at all (a usage error, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no header row (expected {})", header_choices())]
    NoHeader { path: PathBuf },
    #[error(
        "{path}: line 1: the header lacks the columns of a message list: {missing} (found: {found})"
    )]
    MissingColumn {
        path: PathBuf,
        /// For each kind, the columns it needs that the header lacks.
        missing: String,
        found: String,
    },
    #[error(
        "{path}: line 1: the header names columns of two kinds of message, {kinds}; one file lists one kind"
    )]
    MixedKinds { path: PathBuf, kinds: String },
    #[error(
        "{path}: changed while it was read ({how}); this run stops here and can be resumed only \
         with the content it started with (write the next list to a new name, or rename it into place)"
    )]
    Changed { path: PathBuf, how: String },
    #[error("{path}: line {line}: cannot read: {message}")]
    Read {
        path: PathBuf,
        line: u64,
        message: String,
    },
}

#[derive(Debug, Clone)]
struct Columns {
    kind: Kind,
    /// Where each of `kind.columns()` is (an optional one may be absent).
    id: Vec<Option<usize>>,
    error_code: Option<usize>,
    width: usize,
}

/// Passes bytes through and remembers where a `\n` follows a `\r`. The csv
/// parser ends a record at the `\r` of a CRLF and reports the next record as
/// starting at the `\n`, one line early: these offsets correct that.
struct CrlfTracker<R> {
    inner: R,
    offset: u64,
    prev_cr: bool,
    lf_after_cr: Arc<Mutex<VecDeque<u64>>>,
}

impl<R: Read> Read for CrlfTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut found = self.lf_after_cr.lock().unwrap_or_else(|p| p.into_inner());
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' && self.prev_cr {
                found.push_back(self.offset + i as u64);
            }
            self.prev_cr = b == b'\r';
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Streams `InputItem`s from a CSV source.
pub(crate) struct InputReader<R: Read> {
    path: PathBuf,
    rdr: csv::Reader<CrlfTracker<R>>,
    lf_after_cr: Arc<Mutex<VecDeque<u64>>>,
    cols: Columns,
    record: csv::ByteRecord,
    seen: FingerprintSet,
    senders: FingerprintSet,
}

impl InputReader<std::fs::File> {
    pub(crate) fn open(path: &Path) -> Result<Self, InputError> {
        InputReader::new(path, open_input(path)?)
    }
}

/// Open an input file for reading; a folder is refused here (a usage error),
/// not later as a read error.
pub(crate) fn open_input(path: &Path) -> Result<std::fs::File, InputError> {
    let open_err = |source| InputError::Open {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(open_err)?;
    if file.metadata().map_err(open_err)?.is_dir() {
        return Err(open_err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory, not a CSV file",
        )));
    }
    Ok(file)
}

fn csv_reader<R: Read>(src: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(src)
}

impl<R: Read> InputReader<R> {
    /// `path` names the source in messages.
    pub(crate) fn new(path: &Path, src: R) -> Result<Self, InputError> {
        let lf_after_cr = Arc::new(Mutex::new(VecDeque::new()));
        let mut rdr = csv_reader(CrlfTracker {
            inner: src,
            offset: 0,
            prev_cr: false,
            lf_after_cr: lf_after_cr.clone(),
        });
        let mut header = csv::ByteRecord::new();
        let read = rdr
            .read_byte_record(&mut header)
            .map_err(|e| InputError::Read {
                path: path.to_owned(),
                line: 1,
                message: e.to_string(),
            })?;
        if !read {
            return Err(InputError::NoHeader {
                path: path.to_owned(),
            });
        }
        let names: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = if i == 0 {
                    f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
                } else {
                    f
                };
                String::from_utf8_lossy(f).trim().to_ascii_lowercase()
            })
            .collect();
        let find = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
        let named: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| k.required_columns().any(|c| find(c).is_some()))
            .collect();
        if named.len() > 1 {
            return Err(InputError::MixedKinds {
                path: path.to_owned(),
                kinds: named
                    .iter()
                    .map(|k| {
                        let cols: Vec<&str> = k.required_columns().collect();
                        format!("{} ({})", k.spec().name(), cols.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join(" and "),
            });
        }
        let Some(kind) = Kind::from_header(&names) else {
            return Err(InputError::MissingColumn {
                path: path.to_owned(),
                missing: missing_columns(|c| find(c).is_some()),
                found: names.join(","),
            });
        };
        let cols = Columns {
            kind,
            id: kind.spec().columns().iter().map(|c| find(c)).collect(),
            error_code: find("error_code"),
            width: names.len(),
        };
        Ok(InputReader {
            path: path.to_owned(),
            rdr,
            lf_after_cr,
            cols,
            record: csv::ByteRecord::new(),
            seen: FingerprintSet::default(),
            senders: FingerprintSet::default(),
        })
    }

    /// Messages without a sender whose (To_Account, MsgKey) also comes with
    /// one elsewhere in the input (see `Prescan::senders`): they are
    /// duplicates of that row, which is the one exported.
    pub(crate) fn with_senders(mut self, senders: FingerprintSet) -> Self {
        self.senders = senders;
        self
    }

    /// The kind of message the header names.
    pub(crate) fn kind(&self) -> Kind {
        self.cols.kind
    }

    /// What the current record holds, before de-duplication.
    fn parse(&self, line: u64) -> Row {
        let rec = &self.record;
        let field = |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or(b"");
        let invalid = |reason: String| {
            Row::Invalid(InvalidRow {
                line,
                cells: self
                    .cols
                    .id
                    .iter()
                    .map(|&i| String::from_utf8_lossy(field(i)).into_owned())
                    .collect(),
                reason,
            })
        };
        // A re-fed errors.csv: its invalid rows and the messages the API
        // said do not exist are final answers; asking again changes nothing.
        if let Some(code) = self.cols.error_code {
            let code = field(Some(code));
            let not_found = std::str::from_utf8(code)
                .ok()
                .and_then(|c| c.parse::<i64>().ok())
                .is_some_and(|c| self.cols.kind.is_not_found(c));
            if code == INVALID_INPUT.as_bytes() || not_found {
                return Row::Skipped;
            }
        }
        if rec.len() != self.cols.width {
            return invalid(format!(
                "{} fields where the header has {}",
                rec.len(),
                self.cols.width
            ));
        }
        let mut trimmed = false;
        let mut cells: Vec<&str> = Vec::with_capacity(self.cols.id.len());
        for (name, &i) in self.cols.kind.spec().columns().iter().zip(&self.cols.id) {
            let Ok(raw) = std::str::from_utf8(field(i)) else {
                return invalid(format!("{name} is not valid UTF-8"));
            };
            // Stray spaces around an ID (`user_1 `) would make a message
            // that exists come back not found: they are trimmed, and counted.
            let t = raw.trim_matches([' ', '\t']);
            trimmed |= t.len() != raw.len();
            cells.push(t);
        }
        match self.cols.kind.spec().parse_cells(&cells) {
            Err(reason) => invalid(reason.to_string()),
            Ok(msg) => Row::Message(msg, trimmed),
        }
    }

    fn classify(&mut self, line: u64) -> InputItem {
        match self.parse(line) {
            Row::Skipped => InputItem::Skipped { line },
            Row::Invalid(r) => InputItem::Invalid(r),
            Row::Message(msg, trimmed) => {
                let fp = msg.fingerprint();
                // Without a sender, and the same message is listed with one.
                let has_sender_elsewhere =
                    msg.identity().lacks_sender() && self.senders.contains(fp);
                if !has_sender_elsewhere && self.seen.insert(fp) {
                    InputItem::Message(InputMessage { msg, line, trimmed })
                } else {
                    InputItem::Duplicate { line }
                }
            }
        }
    }

    /// The next record, parsed but not de-duplicated (for `prescan`).
    fn next_row(&mut self) -> Option<Result<Row, InputError>> {
        match self.read_record()? {
            Ok(line) => Some(Ok(self.parse(line))),
            Err(e) => Some(Err(e)),
        }
    }

    /// Read the next record; its line number (CRLF corrected).
    fn read_record(&mut self) -> Option<Result<u64, InputError>> {
        let mut record = std::mem::take(&mut self.record);
        let result = self.rdr.read_byte_record(&mut record);
        self.record = record;
        match result {
            Ok(false) => None,
            Ok(true) => {
                let (byte, line) = self
                    .record
                    .position()
                    .map_or((0, 0), |p| (p.byte(), p.line()));
                let starts_at_lf = {
                    let mut q = self.lf_after_cr.lock().unwrap_or_else(|p| p.into_inner());
                    while q.front().is_some_and(|&o| o < byte) {
                        q.pop_front();
                    }
                    q.front() == Some(&byte)
                };
                Some(Ok(line + u64::from(starts_at_lf)))
            }
            Err(e) => Some(Err(match changed_how(&e) {
                Some(how) => InputError::Changed {
                    path: self.path.clone(),
                    how,
                },
                None => InputError::Read {
                    path: self.path.clone(),
                    line: e.position().map_or(0, |p| p.line()),
                    message: e.to_string(),
                },
            })),
        }
    }
}

/// The headers of each kind: "From_Account,To_Account,MsgKey or GroupId,MsgSeq".
fn header_choices() -> String {
    Kind::ALL.map(|k| k.spec().columns().join(",")).join(" or ")
}

/// What a header lacks to list messages of each kind: "To_Account for
/// one-to-one messages, or GroupId and MsgSeq for group messages".
fn missing_columns(has: impl Fn(&str) -> bool) -> String {
    Kind::ALL
        .into_iter()
        .map(|k| {
            let lacks: Vec<&str> = k.required_columns().filter(|c| !has(c)).collect();
            format!("{} for {} messages", lacks.join(" and "), k.spec().name())
        })
        .collect::<Vec<_>>()
        .join(", or ")
}

/// A record as read, before de-duplication.
enum Row {
    /// A message, and whether spaces were trimmed from its fields.
    Message(MessageId, bool),
    Invalid(InvalidRow),
    Skipped,
}

impl<R: Read> Iterator for InputReader<R> {
    type Item = Result<InputItem, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.read_record()?.map(|line| self.classify(line)))
    }
}

/// What one read of the whole input tells before a run: its size, content
/// hash (a resume checks it is the same input) and rows (the progress bar's
/// total), and the messages listed both with and without a sender.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prescan {
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    /// sha256 of the file's bytes, hex.
    pub(crate) sha256: String,
    /// sha256 of each `BLOCK` bytes of the file, in order: what the run's
    /// read is checked against before a row of the block is handed on.
    pub(crate) blocks: Arc<Vec<[u8; 32]>>,
    /// Fingerprints (as messages without a sender) of the (To_Account,
    /// MsgKey) pairs listed both without a sender and with one: the row
    /// without is a duplicate of the row with (`InputReader::with_senders`).
    pub(crate) senders: FingerprintSet,
}

/// The input is checked in blocks of this many bytes: a run hands on no
/// row of a block whose bytes differ from the prescan's.
pub const BLOCK: usize = 64 << 10;

/// Passes bytes through, hashing them whole and block by block, and counting them.
struct HashingRead<R> {
    inner: R,
    hasher: sha2::Sha256,
    block: sha2::Sha256,
    in_block: usize,
    blocks: Vec<[u8; 32]>,
    bytes: u64,
}

impl<R> HashingRead<R> {
    fn new(inner: R) -> Self {
        use sha2::Digest;
        HashingRead {
            inner,
            hasher: sha2::Sha256::new(),
            block: sha2::Sha256::new(),
            in_block: 0,
            blocks: Vec::new(),
            bytes: 0,
        }
    }

    /// The whole file's sha256 (hex) and each block's.
    fn finish(mut self) -> (String, Vec<[u8; 32]>) {
        use sha2::Digest;
        if self.in_block > 0 {
            self.blocks.push(self.block.finalize().into());
        }
        let hex = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (hex, self.blocks)
    }
}

impl<R: Read> Read for HashingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let take = rest.len().min(BLOCK - self.in_block);
            self.block.update(&rest[..take]);
            self.in_block += take;
            rest = &rest[take..];
            if self.in_block == BLOCK {
                let done = std::mem::replace(&mut self.block, sha2::Sha256::new());
                self.blocks.push(done.finalize().into());
                self.in_block = 0;
            }
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The input changed after its prescan: the marker inside the `io::Error`
/// that `VerifiedRead` returns, saying how.
#[derive(Debug)]
struct Changed(&'static str);

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Changed {}

/// Reads a file block by block and hands on a block only once its bytes
/// hash to the prescan's; at the end, the file must hold no more bytes and
/// still be as long as it was. So the rows read are exactly the rows the
/// prescan counted and hashed, or the read fails with `Changed`.
pub(crate) struct VerifiedRead {
    file: std::fs::File,
    blocks: Arc<Vec<[u8; 32]>>,
    total: u64,
    next_block: usize,
    buf: Vec<u8>,
    at: usize,
}

impl VerifiedRead {
    fn new(file: std::fs::File, scan: &Prescan) -> Self {
        VerifiedRead {
            file,
            blocks: scan.blocks.clone(),
            total: scan.bytes,
            next_block: 0,
            buf: Vec::with_capacity(BLOCK),
            at: 0,
        }
    }

    fn changed(how: &'static str) -> std::io::Error {
        std::io::Error::other(Changed(how))
    }

    /// Load and check the next block; `Ok(false)` at the verified end. The
    /// file's length is looked at with every block: a file appended to
    /// while it is read (a list still being written) is told within a
    /// block, not at its end, thousands of calls later.
    fn next_block(&mut self) -> std::io::Result<bool> {
        use sha2::Digest;
        let len = self.file.metadata()?.len();
        if len > self.total {
            return Err(Self::changed("it grew"));
        }
        let Some(want) = self.blocks.get(self.next_block) else {
            let mut probe = [0u8; 1];
            if self.file.read(&mut probe)? > 0 {
                return Err(Self::changed("it grew"));
            }
            if self.file.metadata()?.len() != self.total {
                return Err(Self::changed("its length changed"));
            }
            return Ok(false);
        };
        let len = (self.total - (self.next_block * BLOCK) as u64).min(BLOCK as u64) as usize;
        self.buf.clear();
        let got = (&mut self.file)
            .take(len as u64)
            .read_to_end(&mut self.buf)?;
        if got < len {
            return Err(Self::changed("it became shorter"));
        }
        if sha2::Sha256::digest(&self.buf).as_slice() != want {
            return Err(Self::changed("its bytes differ"));
        }
        self.next_block += 1;
        self.at = 0;
        Ok(true)
    }
}

impl Read for VerifiedRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() && !self.next_block()? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Whether a CSV error is `VerifiedRead` finding the file changed, and how.
fn changed_how(e: &csv::Error) -> Option<String> {
    match e.kind() {
        csv::ErrorKind::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Changed>())
            .map(|c| c.0.to_owned()),
        _ => None,
    }
}

/// Read the whole input once through `file` (twice when some messages come
/// without a sender): memory grows only with the rows that lack a sender.
/// The file is left at its start.
fn prescan_file(path: &Path, file: &mut std::fs::File, show: bool) -> Result<Prescan, InputError> {
    use std::io::Seek;
    let read_err = |line: u64, e: std::io::Error| InputError::Read {
        path: path.to_owned(),
        line,
        message: e.to_string(),
    };
    let mut src = HashingRead::new(std::io::BufReader::with_capacity(1 << 20, &*file));
    let mut rows = 0u64;
    let mut senderless = FingerprintSet::default();
    let shown = PrescanProgress::new(path, show);
    {
        let mut r = InputReader::new(path, &mut src)?;
        while let Some(row) = r.next_row() {
            rows += 1;
            if rows.is_multiple_of(4096) {
                shown.tick(rows);
            }
            if let Row::Message(m, _) = row?
                && m.identity().lacks_sender()
            {
                senderless.insert(m.fingerprint());
            }
        }
    }
    std::io::copy(&mut src, &mut std::io::sink()).map_err(|e| read_err(rows + 1, e))?;
    let bytes = src.bytes;
    let (sha256, blocks) = src.finish();
    let mut scan = Prescan {
        rows,
        bytes,
        sha256,
        blocks: Arc::new(blocks),
        senders: FingerprintSet::default(),
    };
    shown.done(rows);
    let rewind = |file: &mut std::fs::File| {
        file.seek(std::io::SeekFrom::Start(0))
            .map(drop)
            .map_err(|e| read_err(0, e))
    };
    rewind(file)?;
    if !senderless.is_empty() {
        let verified = VerifiedRead::new(file.try_clone().map_err(|e| read_err(0, e))?, &scan);
        let mut r = InputReader::new(path, verified)?;
        while let Some(row) = r.next_row() {
            if let Row::Message(m, _) = row?
                && let Some(base) = m.identity().without_sender()
            {
                let fp = base.fingerprint();
                if senderless.contains(fp) {
                    scan.senders.insert(fp);
                }
            }
        }
        rewind(file)?;
    }
    Ok(scan)
}

/// Says, 2 s in and every 5 s after, that a large input is being read and
/// how far it got, so that a long prescan is not silence; says nothing for
/// an input read sooner, nor when `show` is off (`--quiet`).
struct PrescanProgress<'a> {
    path: &'a Path,
    show: bool,
    started: std::time::Instant,
    last: std::cell::Cell<Option<std::time::Instant>>,
}

/// When the prescan's progress line is due: 2 s after the start, then
/// every 5 s (`since_last` is `None` before the first line).
fn progress_due(since_start: std::time::Duration, since_last: Option<std::time::Duration>) -> bool {
    use std::time::Duration;
    match since_last {
        None => since_start >= Duration::from_secs(2),
        Some(d) => d >= Duration::from_secs(5),
    }
}

impl<'a> PrescanProgress<'a> {
    fn new(path: &'a Path, show: bool) -> Self {
        PrescanProgress {
            path,
            show,
            started: std::time::Instant::now(),
            last: std::cell::Cell::new(None),
        }
    }

    fn tick(&self, rows: u64) {
        let now = std::time::Instant::now();
        let since_last = self.last.get().map(|t| now.duration_since(t));
        if self.show && progress_due(now.duration_since(self.started), since_last) {
            self.last.set(Some(now));
            eprintln!(
                "msgext: {}: reading the input first (counting and hashing): {rows} rows so far",
                self.path.display()
            );
        }
    }

    fn done(&self, rows: u64) {
        if self.last.get().is_some() {
            eprintln!("msgext: {}: {rows} rows", self.path.display());
        }
    }
}

/// Counts of a whole input, as `msgext validate` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InputCounts {
    pub(crate) rows: u64,
    pub(crate) distinct: u64,
    pub(crate) duplicates: u64,
    pub(crate) skipped: u64,
    /// Messages whose IDs had stray spaces, trimmed.
    pub(crate) trimmed: u64,
    pub(crate) invalid: Vec<InvalidRow>,
}

/// Prescan `path`, then read it again from the same open file with the
/// sender rule applied: the reader a run (and `validate`) uses. A file
/// replaced by a rename meanwhile does not matter (the open file is read);
/// one changed in place fails the read with `InputError::Changed` before a
/// row of the changed block is handed on.
/// `show`: say how far the prescan got when it takes more than 2 s.
pub(crate) fn open_prescanned(
    path: &Path,
    show: bool,
) -> Result<(InputReader<VerifiedRead>, Prescan), InputError> {
    let mut file = open_input(path)?;
    let mut scan = prescan_file(path, &mut file, show)?;
    let reader = InputReader::new(path, VerifiedRead::new(file, &scan))?
        .with_senders(std::mem::take(&mut scan.senders));
    Ok((reader, scan))
}

/// Read a whole input without keeping its messages: counts and invalid rows.
pub(crate) fn validate<R: Read>(reader: InputReader<R>) -> Result<InputCounts, InputError> {
    let mut c = InputCounts::default();
    for item in reader {
        c.rows += 1;
        match item? {
            InputItem::Message(m) => {
                c.distinct += 1;
                c.trimmed += u64::from(m.trimmed);
            }
            InputItem::Duplicate { .. } => c.duplicates += 1,
            InputItem::Skipped { .. } => c.skipped += 1,
            InputItem::Invalid(row) => c.invalid.push(row),
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::MessageRef;

    fn read(bytes: &[u8]) -> Result<Vec<InputItem>, InputError> {
        InputReader::new(Path::new("in.csv"), bytes)?.collect()
    }

    fn msg(from: Option<&str>, to: &str, key: &str, line: u64) -> InputItem {
        InputItem::Message(InputMessage {
            msg: MessageRef::new(from, to, key).into(),
            line,
            trimmed: false,
        })
    }

    /// Items as a run reads them from a file: prescanned, senders applied.
    fn read_file(bytes: &[u8]) -> (Vec<InputItem>, Prescan) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, bytes).unwrap();
        let (reader, scan) = open_prescanned(&path, false).unwrap();
        (reader.collect::<Result<_, _>>().unwrap(), scan)
    }

    fn invalid_line(item: &InputItem) -> Option<(u64, &str)> {
        match item {
            InputItem::Invalid(r) => Some((r.line, r.reason.as_str())),
            _ => None,
        }
    }

    #[test]
    fn accepts_bom_crlf_quotes_any_case_and_extra_columns() {
        let input = "\u{feff}msgkey,Note,TO_ACCOUNT,from_account\r\n\
                     \"1_2_3\",\"a, note\",\"bob\",\"al\"\"ice\"\r\n\
                     \"4_5_6\",x,\"multi\nline\",\r\n";
        let items = read(input.as_bytes()).unwrap();
        assert_eq!(
            items,
            vec![
                msg(Some("al\"ice"), "bob", "1_2_3", 2),
                msg(None, "multi\nline", "4_5_6", 3)
            ]
        );
    }

    #[test]
    fn missing_sender_column_or_value_means_no_sender() {
        let items = read(b"To_Account,MsgKey\nbob,1\n").unwrap();
        assert_eq!(items, vec![msg(None, "bob", "1", 2)]);
    }

    #[test]
    fn invalid_rows_carry_their_line_and_do_not_stop_the_read() {
        let input = b"From_Account,To_Account,MsgKey\n\
                      a,b,1\n\
                      a,,2\n\
                      a,b,\n\
                      a,b\n\
                      a,b,3,extra\n\
                      a,\xff\xfe,4\n\
                      a,b,5\n";
        let items = read(input).unwrap();
        let invalid: Vec<_> = items.iter().filter_map(invalid_line).collect();
        assert_eq!(
            invalid,
            vec![
                (3, "To_Account is empty"),
                (4, "MsgKey is empty"),
                (5, "2 fields where the header has 3"),
                (6, "4 fields where the header has 3"),
                (7, "To_Account is not valid UTF-8"),
            ]
        );
        assert_eq!(items.first(), Some(&msg(Some("a"), "b", "1", 2)));
        assert_eq!(items.last(), Some(&msg(Some("a"), "b", "5", 8)));
    }

    #[test]
    fn duplicates_are_reported_once_seen() {
        let input =
            b"From_Account,To_Account,MsgKey\na,b,1\n,b,1\na,b,1\n\"a\",\"b\",\"1\"\n,b,1\n";
        let (items, scan) = read_file(input);
        assert_eq!(
            items,
            vec![
                msg(Some("a"), "b", "1", 2),
                // The same message without its sender: one message, not two.
                InputItem::Duplicate { line: 3 },
                InputItem::Duplicate { line: 4 },
                InputItem::Duplicate { line: 5 },
                InputItem::Duplicate { line: 6 },
            ]
        );
        assert_eq!(scan.rows, 5);
    }

    #[test]
    fn a_message_listed_with_and_without_its_sender_is_exported_once_with_it() {
        // (input, expected items): the row with From_Account is kept wherever it stands.
        let table: Vec<(&[u8], Vec<InputItem>)> = vec![
            (
                b"From_Account,To_Account,MsgKey\n,b,1\na,b,1\n",
                vec![
                    InputItem::Duplicate { line: 2 },
                    msg(Some("a"), "b", "1", 3),
                ],
            ),
            (
                b"From_Account,To_Account,MsgKey\n,b,1\n,b,1\n,c,1\n",
                vec![
                    msg(None, "b", "1", 2),
                    InputItem::Duplicate { line: 3 },
                    msg(None, "c", "1", 4),
                ],
            ),
            // Two senders, same (To, MsgKey): two conversations, two messages;
            // the row without a sender is one of them.
            (
                b"From_Account,To_Account,MsgKey\na,b,1\n,b,1\nz,b,1\n",
                vec![
                    msg(Some("a"), "b", "1", 2),
                    InputItem::Duplicate { line: 3 },
                    msg(Some("z"), "b", "1", 4),
                ],
            ),
        ];
        for (input, want) in table {
            assert_eq!(
                read_file(input).0,
                want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn stray_spaces_are_trimmed_and_counted() {
        let (items, _) =
            read_file(b"From_Account,To_Account,MsgKey\n a ,user_1 ,\t1_2_3\na,user_1,1_2_3\n");
        assert_eq!(
            items,
            vec![
                InputItem::Message(InputMessage {
                    msg: MessageRef::new(Some("a"), "user_1", "1_2_3").into(),
                    line: 2,
                    trimmed: true,
                }),
                InputItem::Duplicate { line: 3 },
            ]
        );
        let (items, _) = read_file(b"From_Account,To_Account,MsgKey\na, ,1\n");
        assert!(matches!(&items[0], InputItem::Invalid(r) if r.reason == "To_Account is empty"));
    }

    /// An input of `n` one-to-one rows, over several `BLOCK`s when `n` is large.
    fn big_input(n: usize, tag: &str) -> Vec<u8> {
        let mut out = b"From_Account,To_Account,MsgKey\n".to_vec();
        for i in 0..n {
            out.extend_from_slice(format!("a,user_{i:06},{tag}_{i:06}_0000000000\n").as_bytes());
        }
        out
    }

    /// Read a prescanned input while `change` is done to the file once
    /// `after` messages were read; the messages read and how it ended.
    fn read_while(
        bytes: &[u8],
        after: usize,
        change: &dyn Fn(&Path),
    ) -> (usize, Result<(), InputError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, bytes).unwrap();
        let (reader, scan) = open_prescanned(&path, false).unwrap();
        assert_eq!(scan.blocks.len(), bytes.len().div_ceil(BLOCK));
        let mut n = 0;
        for item in reader {
            match item {
                Ok(InputItem::Message(m)) => {
                    // Every message handed on is one of the prescan's rows.
                    let key = &m.msg.identity().cells()[2];
                    assert!(key.starts_with("old_"), "{key}");
                    n += 1;
                    if n == after {
                        change(&path);
                    }
                }
                Ok(other) => panic!("{other:?}"),
                Err(e) => return (n, Err(e)),
            }
        }
        (n, Ok(()))
    }

    #[test]
    fn rows_are_read_exactly_as_prescanned_or_the_read_fails_as_changed() {
        let rows = 10_000;
        let original = big_input(rows, "old");
        assert!(original.len() > 5 * BLOCK);
        let rewrite_tail = |p: &Path| {
            // Same length, other bytes, in the last block.
            let mut b = std::fs::read(p).unwrap();
            let at = b.windows(4).rposition(|w| w == b"old_").unwrap();
            b[at..at + 3].copy_from_slice(b"new");
            std::fs::write(p, b).unwrap();
        };
        let truncate = |p: &Path| {
            std::fs::write(p, b"From_Account,To_Account,MsgKey\n").unwrap();
        };
        let append = |p: &Path| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
            f.write_all(b"a,user_999999,new_row\n").unwrap();
        };
        let rename_over = |p: &Path| {
            let tmp = p.with_extension("next");
            std::fs::write(&tmp, big_input(10, "next")).unwrap();
            std::fs::rename(&tmp, p).unwrap();
        };
        type Change<'a> = &'a dyn Fn(&Path);
        let table: [(&str, Change, Option<&str>); 4] = [
            (
                "rewritten in place",
                &rewrite_tail,
                Some("its bytes differ"),
            ),
            ("truncated", &truncate, Some("it became shorter")),
            ("appended to", &append, Some("it grew")),
            // The open file is read: a list renamed into place is the next run's.
            ("replaced by a rename", &rename_over, None),
        ];
        for (what, change, want) in table {
            let (n, ended) = read_while(&original, 100, change);
            match (want, ended) {
                (None, Ok(())) => assert_eq!(n, rows, "{what}"),
                (Some(how), Err(e @ InputError::Changed { .. })) => {
                    assert!(n <= rows, "{what}: {n} rows read");
                    // Growth is told within a block of the change (at row
                    // 100 of 10,000 rows in more than 5 blocks), not at the end.
                    if how == "it grew" {
                        assert!(n < rows / 2, "{what}: told after {n} rows");
                    }
                    let text = e.to_string();
                    assert!(
                        text.contains("in.csv: changed while it was read") && text.contains(how),
                        "{what}: {text}"
                    );
                }
                (want, ended) => panic!("{what}: {want:?} vs {ended:?}"),
            }
        }
    }

    #[test]
    fn the_prescan_speaks_after_two_seconds_then_every_five() {
        use std::time::Duration;
        let s = Duration::from_secs;
        let table = [
            (s(0), None, false),
            (Duration::from_millis(1999), None, false),
            (s(2), None, true),
            (s(4), Some(s(2)), false),
            (s(7), Some(s(5)), true),
        ];
        for (since_start, since_last, want) in table {
            assert_eq!(
                progress_due(since_start, since_last),
                want,
                "{since_start:?} {since_last:?}"
            );
        }
    }

    #[test]
    fn the_prescan_hashes_the_whole_file() {
        let input = b"From_Account,To_Account,MsgKey\na,b,1\n";
        let (_, scan) = read_file(input);
        assert_eq!(scan.bytes, input.len() as u64);
        use sha2::Digest;
        let want: String = sha2::Sha256::digest(input)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(scan.sha256, want);
    }

    #[test]
    fn header_only_empty_and_headerless_inputs() {
        assert_eq!(read(b"From_Account,To_Account,MsgKey\r\n").unwrap(), vec![]);
        let e = read(b"").err().unwrap();
        assert!(matches!(e, InputError::NoHeader { .. }), "{e}");
        assert!(
            e.to_string()
                .ends_with("(expected From_Account,To_Account,MsgKey or GroupId,MsgSeq)"),
            "{e}"
        );
        let e = read(b"alice,bob,1_2_3\n").err().unwrap();
        assert!(matches!(e, InputError::MissingColumn { .. }), "{e}");
        assert!(e.to_string().starts_with("in.csv: line 1:"), "{e}");
        assert!(
            e.to_string().contains(
                "To_Account and MsgKey for one-to-one messages, or GroupId and MsgSeq for group messages"
            ),
            "{e}"
        );
        let e = read(b"from_account,msgkey\n").err().unwrap();
        assert!(e.to_string().contains(": To_Account for one-to-one"), "{e}");
    }

    #[test]
    fn a_header_naming_both_kinds_is_refused_naming_both() {
        for header in [
            "From_Account,To_Account,MsgKey,GroupId,MsgSeq\n",
            "GroupId,MsgSeq,To_Account\n",
            "to_account,msgkey,groupid\n",
        ] {
            let e = read(header.as_bytes()).err().unwrap();
            assert!(matches!(e, InputError::MixedKinds { .. }), "{header}: {e}");
            assert_eq!(
                e.to_string(),
                "in.csv: line 1: the header names columns of two kinds of message, one-to-one \
                 (To_Account, MsgKey) and group (GroupId, MsgSeq); one file lists one kind"
            );
        }
    }

    #[test]
    fn refed_errors_csv_skips_invalid_rows_and_messages_not_found() {
        let input = b"From_Account,To_Account,MsgKey,error_code,error_info,attempts,line\n\
                      a,b,1,10002,internal,8,2\n\
                      a,,2,invalid_input,To_Account is empty,0,3\n\
                      a,b,3,23004,no such message,1,4\n\
                      a,b,4,aborted,gave up,0,5\n";
        let items = read(input).unwrap();
        assert_eq!(
            items,
            vec![
                msg(Some("a"), "b", "1", 2),
                InputItem::Skipped { line: 3 },
                InputItem::Skipped { line: 4 },
                msg(Some("a"), "b", "4", 5),
            ]
        );
        // For group messages, a dismissed group (10010) is final too.
        let input = b"GroupId,MsgSeq,error_code,error_info,attempts,line\n\
                      g1,5,10010,group dismissed,1,2\n\
                      g1,6,10002,internal,8,3\n";
        let items = read(input).unwrap();
        assert_eq!(items[0], InputItem::Skipped { line: 2 });
        assert!(matches!(items[1], InputItem::Message(_)));
    }

    #[test]
    fn validate_counts_everything() {
        let input = b"From_Account,To_Account,MsgKey\na,b,1\na,b,1\na,,2\nc,d,3\n";
        let c = validate(InputReader::new(Path::new("x"), &input[..]).unwrap()).unwrap();
        assert_eq!(
            (c.rows, c.distinct, c.duplicates, c.invalid.len()),
            (4, 2, 1, 1)
        );
        assert_eq!(c.invalid[0].line, 4);
    }
}

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
pub const INVALID_INPUT: &str = "invalid_input";

/// A row that cannot be exported, with what could be read of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    pub line: u64,
    /// The identity cells as read (lossy UTF-8), in `Kind::columns` order.
    pub cells: Vec<String>,
    pub reason: String,
}

/// One row's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputItem {
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
    #[error("{path}: no header row (expected From_Account,To_Account,MsgKey or GroupId,MsgSeq)")]
    NoHeader { path: PathBuf },
    #[error(
        "{path}: line 1: the header has no {column} column, nor GroupId and MsgSeq for group messages (found: {found})"
    )]
    MissingColumn {
        path: PathBuf,
        column: &'static str,
        found: String,
    },
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
pub struct InputReader<R: Read> {
    path: PathBuf,
    rdr: csv::Reader<CrlfTracker<R>>,
    lf_after_cr: Arc<Mutex<VecDeque<u64>>>,
    cols: Columns,
    record: csv::ByteRecord,
    seen: FingerprintSet,
    senders: FingerprintSet,
}

impl InputReader<std::fs::File> {
    pub fn open(path: &Path) -> Result<Self, InputError> {
        InputReader::new(path, open_input(path)?)
    }
}

/// Open an input file for reading; a folder is refused here (a usage error),
/// not later as a read error.
pub fn open_input(path: &Path) -> Result<std::fs::File, InputError> {
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
    pub fn new(path: &Path, src: R) -> Result<Self, InputError> {
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
        let Some(kind) = Kind::from_header(&names) else {
            let one = Kind::OneToOne;
            let column = one
                .columns()
                .iter()
                .copied()
                .find(|c| !one.is_optional(c) && find(c).is_none())
                .unwrap_or("To_Account");
            return Err(InputError::MissingColumn {
                path: path.to_owned(),
                column,
                found: names.join(","),
            });
        };
        let cols = Columns {
            kind,
            id: kind.columns().iter().map(|c| find(c)).collect(),
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
    pub fn with_senders(mut self, senders: FingerprintSet) -> Self {
        self.senders = senders;
        self
    }

    /// The kind of message the header names.
    pub fn kind(&self) -> Kind {
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
        if let Some(code) = self.cols.error_code
            && field(Some(code)) == INVALID_INPUT.as_bytes()
        {
            return Row::Skipped;
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
        for (name, &i) in self.cols.kind.columns().iter().zip(&self.cols.id) {
            let Ok(raw) = std::str::from_utf8(field(i)) else {
                return invalid(format!("{name} is not valid UTF-8"));
            };
            // Stray spaces around an ID (`user_1 `) would make a message
            // that exists come back not found: they are trimmed, and counted.
            let t = raw.trim_matches([' ', '\t']);
            trimmed |= t.len() != raw.len();
            cells.push(t);
        }
        match self.cols.kind.parse_cells(&cells) {
            Err(reason) => invalid(reason),
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
                let has_sender_elsewhere = msg.lacks_sender() && self.senders.contains(fp);
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
            Err(e) => Some(Err(InputError::Read {
                path: self.path.clone(),
                line: e.position().map_or(0, |p| p.line()),
                message: e.to_string(),
            })),
        }
    }
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
pub struct Prescan {
    pub rows: u64,
    pub bytes: u64,
    /// sha256 of the file's bytes, hex.
    pub sha256: String,
    /// Fingerprints (as messages without a sender) of the (To_Account,
    /// MsgKey) pairs listed both without a sender and with one: the row
    /// without is a duplicate of the row with (`InputReader::with_senders`).
    pub senders: FingerprintSet,
}

/// Passes bytes through, hashing and counting them.
struct HashingRead<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Read the whole input once (twice when some messages come without a
/// sender): memory grows only with the rows that lack a sender.
pub fn prescan(path: &Path) -> Result<Prescan, InputError> {
    use sha2::Digest;
    let mut src = HashingRead {
        inner: std::io::BufReader::with_capacity(1 << 20, open_input(path)?),
        hasher: sha2::Sha256::new(),
        bytes: 0,
    };
    let mut rows = 0u64;
    let mut senderless = FingerprintSet::default();
    {
        let mut r = InputReader::new(path, &mut src)?;
        while let Some(row) = r.next_row() {
            rows += 1;
            if let Row::Message(m, _) = row?
                && m.lacks_sender()
            {
                senderless.insert(m.fingerprint());
            }
        }
    }
    std::io::copy(&mut src, &mut std::io::sink()).map_err(|e| InputError::Read {
        path: path.to_owned(),
        line: rows + 1,
        message: e.to_string(),
    })?;
    let mut senders = FingerprintSet::default();
    if !senderless.is_empty() {
        let mut r = InputReader::open(path)?;
        while let Some(row) = r.next_row() {
            if let Row::Message(m, _) = row?
                && let Some(base) = m.without_sender()
            {
                let fp = base.fingerprint();
                if senderless.contains(fp) {
                    senders.insert(fp);
                }
            }
        }
    }
    let digest = src.hasher.finalize();
    Ok(Prescan {
        rows,
        bytes: src.bytes,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        senders,
    })
}

/// Counts of a whole input, as `msgext validate` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputCounts {
    pub rows: u64,
    pub distinct: u64,
    pub duplicates: u64,
    pub skipped: u64,
    /// Messages whose IDs had stray spaces, trimmed.
    pub trimmed: u64,
    pub invalid: Vec<InvalidRow>,
}

/// Prescan `path`, then open it for reading with the sender rule applied:
/// the reader a run (and `validate`) uses.
pub fn open_prescanned(path: &Path) -> Result<(InputReader<std::fs::File>, Prescan), InputError> {
    let mut scan = prescan(path)?;
    let reader = InputReader::open(path)?.with_senders(std::mem::take(&mut scan.senders));
    Ok((reader, scan))
}

/// Read a whole input without keeping its messages: counts and invalid rows.
pub fn validate<R: Read>(reader: InputReader<R>) -> Result<InputCounts, InputError> {
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
        let (reader, scan) = open_prescanned(&path).unwrap();
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
        assert!(matches!(read(b""), Err(InputError::NoHeader { .. })));
        let e = read(b"alice,bob,1_2_3\n").err().unwrap();
        assert!(
            matches!(
                e,
                InputError::MissingColumn {
                    column: "To_Account",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("in.csv: line 1:"), "{e}");
    }

    #[test]
    fn refed_errors_csv_skips_invalid_rows() {
        let input = b"From_Account,To_Account,MsgKey,error_code,error_info,attempts,line\n\
                      a,b,1,10002,internal,8,2\n\
                      a,,2,invalid_input,To_Account is empty,0,3\n";
        let items = read(input).unwrap();
        assert_eq!(
            items,
            vec![msg(Some("a"), "b", "1", 2), InputItem::Skipped { line: 3 }]
        );
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

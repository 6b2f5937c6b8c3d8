//! What makes a run safe to kill: the folder lock, the run's identity
//! (`run.json`), the write-ahead log of settled messages, and the ledger of
//! committed checkpoints, all under `OUT/_runs/<run_id>/`.
//!
//! A message is *settled* (exported, not found or failed) when its record is
//! in the WAL and the WAL is fsynced; from then on a crash does not make it
//! fetched again. A *checkpoint* seals the open part files under their hidden
//! temporary names, appends one ledger line naming them and the messages they
//! hold (the commit point), then renames them into place. Recovery rolls
//! committed checkpoints forward, deletes every other temporary file, and
//! replays the WAL of the checkpoint that did not commit: nothing is lost,
//! nothing is written twice, and only messages that were in flight are
//! fetched again.

mod lock;

use crate::api::pairs::{PairList, PairRef};
use crate::model::MessageId;
use crate::write::{FileInfo, LakeStore, sync_dir};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
pub use lock::{Holder, LockError, RunLock};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file of the run that does not read as msgext wrote it.
    #[error("{0}")]
    Corrupt(String),
    /// Writing, renaming or syncing a file failed (disk full, read-only, …).
    #[error(transparent)]
    Write(#[from] crate::write::WriteError),
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The version of the formats of `run.json`, the WAL and the ledger. A run
/// whose files carry another version is not resumed (or rolled forward) by
/// this msgext: it says so instead of guessing. Version 2: WAL and ledger
/// records name their message's kind (`"kind": "one_to_one"`, `"group"`).
pub(crate) const FORMAT_VERSION: u32 = 2;

/// What stays fixed for a run across attempts (`run.json`), and what a
/// resume checks: the same input, format, endpoint and app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunMeta {
    /// `FORMAT_VERSION` when written; 0 when missing (an older msgext).
    #[serde(default)]
    pub(crate) v: u32,
    pub(crate) run_id: String,
    pub(crate) started_at: String,
    /// The `dt` partition, from the first attempt's start.
    pub(crate) dt: String,
    pub(crate) format: String,
    /// The input file as it was named.
    pub(crate) input: String,
    #[serde(default)]
    pub(crate) input_bytes: u64,
    /// sha256 of the input file's bytes.
    #[serde(default)]
    pub(crate) input_sha256: String,
    /// The base URL called (a region's domain or `--endpoint`).
    #[serde(default)]
    pub(crate) endpoint: String,
    #[serde(default)]
    pub(crate) sdkappid: u64,
    /// The lake the run writes into (`--out`: an absolute folder or a URL);
    /// empty when an earlier msgext wrote `run.json`.
    #[serde(default)]
    pub(crate) out: String,
}

impl RunMeta {
    /// What differs between the run recorded here and the one `wanted`
    /// would start, in words; empty when `wanted` may resume this run.
    /// Only what decides the exported data counts (not the path the input
    /// is found at, not the run id or start time).
    pub(crate) fn differences(&self, wanted: &RunMeta) -> Vec<String> {
        let mut out = Vec::new();
        if self.v != FORMAT_VERSION {
            out.push(format!(
                "its files are in format version {} (this msgext writes {FORMAT_VERSION})",
                self.v
            ));
            return out;
        }
        if (self.input_bytes, &self.input_sha256) != (wanted.input_bytes, &wanted.input_sha256) {
            out.push(format!(
                "the input differs (then {} bytes from {}, sha256 {:.12}…; now {} bytes from {}, sha256 {:.12}…)",
                self.input_bytes,
                self.input,
                self.input_sha256,
                wanted.input_bytes,
                wanted.input,
                wanted.input_sha256
            ));
        }
        if self.format != wanted.format {
            out.push(format!(
                "the format differs (then {}, now {})",
                self.format, wanted.format
            ));
        }
        if self.endpoint != wanted.endpoint {
            out.push(format!(
                "the endpoint differs (then {}, now {})",
                self.endpoint, wanted.endpoint
            ));
        }
        if self.out != wanted.out {
            out.push(if self.out.is_empty() {
                format!(
                    "its lake is not recorded (an earlier msgext started it), and this run writes to {}",
                    wanted.out
                )
            } else {
                format!(
                    "it writes to another lake (then {}, now {})",
                    self.out, wanted.out
                )
            });
        }
        if self.sdkappid != wanted.sdkappid {
            out.push(format!(
                "the SDKAppID differs (then {}, now {})",
                self.sdkappid, wanted.sdkappid
            ));
        }
        out
    }
}

impl RunMeta {
    pub(crate) fn load(run_dir: &Path) -> Result<Option<RunMeta>, LedgerError> {
        let path = run_dir.join("run.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| LedgerError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    pub(crate) fn save(&self, run_dir: &Path) -> Result<(), LedgerError> {
        let json = serde_json::to_vec_pretty(self)?;
        let path = run_dir.join("run.json");
        Ok(crate::write::write_atomically(&path, &json)?)
    }
}

/// A settled message as the WAL keeps it: enough to write its rows again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WalRecord {
    /// `FORMAT_VERSION`.
    #[serde(default)]
    pub(crate) v: u32,
    #[serde(flatten)]
    pub(crate) msg: MessageId,
    pub(crate) line: u64,
    pub(crate) status: WalStatus,
    pub(crate) attempts: u32,
    pub(crate) pages: u32,
    /// When the message settled, µs since the epoch (0 in records of
    /// versions that did not keep it).
    #[serde(default)]
    pub(crate) at_us: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum WalStatus {
    Ok {
        latest_seq: i64,
        clear_seq: i64,
        /// `[[key, value, seq, fetched_at µs], …]` in the file.
        pairs: PairList,
        #[serde(default)]
        read: crate::incremental::Read,
    },
    NotFound {
        /// The API's code (23004; for groups also 10010, 10015).
        #[serde(default = "not_found_code")]
        code: String,
        info: String,
    },
    Failed {
        code: String,
        info: String,
    },
}

fn not_found_code() -> String {
    crate::codes::NOT_FOUND.to_string()
}

impl WalRecord {
    /// The pairs of an exported message, borrowed.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = PairRef<'_>> {
        match &self.status {
            WalStatus::Ok { pairs, .. } => pairs,
            _ => &crate::api::pairs::NO_PAIRS,
        }
        .iter()
    }
}

/// A row of errors.csv kept in the ledger (messages only; invalid input rows
/// are found again whenever the input is read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ErrorRow {
    #[serde(flatten)]
    pub(crate) msg: MessageId,
    pub(crate) code: String,
    pub(crate) info: String,
    pub(crate) attempts: u32,
    pub(crate) line: u64,
}

/// Counts of one checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Counts {
    pub(crate) ok: u64,
    pub(crate) not_found: u64,
    pub(crate) failed: u64,
    pub(crate) kv_rows: u64,
    pub(crate) requests: u64,
    pub(crate) retries: u64,
    pub(crate) rate_limited: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, o: &Counts) {
        self.ok += o.ok;
        self.not_found += o.not_found;
        self.failed += o.failed;
        self.kv_rows += o.kv_rows;
        self.requests += o.requests;
        self.retries += o.retries;
        self.rate_limited += o.rate_limited;
    }
}

/// One committed checkpoint: a ledger line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// `FORMAT_VERSION`.
    #[serde(default)]
    pub(crate) v: u32,
    pub(crate) seq: u32,
    pub(crate) files: Vec<FileInfo>,
    /// Fingerprints of the messages settled in it (base64, no padding).
    pub(crate) messages: Vec<String>,
    pub(crate) errors: Vec<ErrorRow>,
    pub(crate) counts: Counts,
}

pub(crate) fn encode_fingerprint(fp: u128) -> String {
    STANDARD_NO_PAD.encode(fp.to_le_bytes())
}

pub(crate) fn decode_fingerprint(s: &str) -> Option<u128> {
    let bytes = STANDARD_NO_PAD.decode(s).ok()?;
    Some(u128::from_le_bytes(bytes.try_into().ok()?))
}

/// Read a ledger line by line, handing each checkpoint to `each`: complete
/// lines are checkpoints; a torn last line (a crash while appending) is not.
/// Returns the byte length of the complete lines, so that the file can be
/// cut back to them. Streams: a long ledger is never held whole.
pub(crate) fn read_ledger<R: BufRead, E: From<LedgerError>>(
    path: &Path,
    mut r: R,
    mut each: impl FnMut(Checkpoint) -> Result<(), E>,
) -> Result<u64, E> {
    let mut good = 0u64;
    let mut line = Vec::new();
    let path_text = path.display();
    for i in 1.. {
        line.clear();
        let n = r.read_until(b'\n', &mut line).map_err(io(path))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        let c = match serde_json::from_slice::<Checkpoint>(&line) {
            Ok(c) if c.v != FORMAT_VERSION => {
                return Err(LedgerError::Corrupt(format!(
                    "{path_text}: line {i}: format version {} (this msgext reads {FORMAT_VERSION})",
                    c.v
                ))
                .into());
            }
            Ok(c) => c,
            Err(e) => {
                return Err(LedgerError::Corrupt(format!("{path_text}: line {i}: {e}")).into());
            }
        };
        each(c)?;
        good += n as u64;
    }
    Ok(good)
}

/// Every record of a WAL file, in order, until its torn tail (a crash
/// mid-append, never fsynced as settled). Streams.
pub(crate) fn read_wal<E: From<LedgerError>>(
    path: &Path,
    mut each: impl FnMut(WalRecord) -> Result<(), E>,
) -> Result<(), E> {
    let file = File::open(path).map_err(io(path))?;
    for line in BufReader::with_capacity(1 << 16, file).split(b'\n') {
        let line = line.map_err(io(path))?;
        let Ok(r) = serde_json::from_slice::<WalRecord>(&line) else {
            break;
        };
        if r.v != FORMAT_VERSION {
            return Err(LedgerError::Corrupt(format!(
                "{}: format version {} (this msgext reads {FORMAT_VERSION})",
                path.display(),
                r.v
            ))
            .into());
        }
        each(r)?;
    }
    Ok(())
}

/// A record's encoding buffer above this size is not kept for the next one.
const SCRATCH_KEPT: usize = 1 << 20;

/// The append-only files of a run: `ledger.jsonl` and `wal-<k>.jsonl`.
pub(crate) struct RunFiles {
    dir: PathBuf,
    ledger: File,
    wal: BufWriter<File>,
    wal_seq: u32,
    wal_dirty: bool,
    /// Bytes appended to the current WAL segment.
    wal_bytes: u64,
    /// fsyncs of the WAL so far.
    syncs: u64,
    /// The record being encoded: serde_json writes small pieces, cheaper
    /// into a vector than through the file's buffer (one copy a record).
    scratch: Vec<u8>,
}

/// What an earlier attempt left, once recovered.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Messages settled in committed checkpoints (counted before `settled` is handed on).
    pub(crate) committed_messages: u64,
    /// Messages settled in committed checkpoints or in the WAL.
    pub(crate) settled: crate::model::FingerprintSet,
    pub(crate) counts: Counts,
    pub(crate) files: Vec<FileInfo>,
    /// Files of settled messages that no checkpoint committed: to write
    /// again (streamed by `replay`), committed by the next checkpoint.
    pub(crate) replay: Vec<PathBuf>,
    /// Messages in `replay`.
    pub(crate) replay_messages: u64,
    /// Checkpoints committed so far.
    pub(crate) checkpoints: u32,
    /// The next free part number.
    pub(crate) next_part: u32,
}

impl Recovered {
    /// Messages an earlier attempt settled: skipped or written again, never fetched.
    pub(crate) fn resumed(&self) -> u64 {
        self.committed_messages + self.replay_messages
    }
}

fn wal_path(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("wal-{seq:06}.jsonl"))
}

/// A WAL file set aside for replay; checkpoint `seq` commits its messages.
fn replay_path(dir: &Path, seq: u32, k: u32) -> PathBuf {
    dir.join(format!("replay-{seq:06}-{k:06}.jsonl"))
}

/// `(seq, k)` of a name made by `replay_path`, or `(seq, None)` of one made by `wal_path`.
fn segment_of(name: &str) -> Option<(u32, Option<u32>)> {
    let stem = name.strip_suffix(".jsonl")?;
    if let Some(n) = stem.strip_prefix("wal-") {
        return Some((n.parse().ok()?, None));
    }
    let (seq, k) = stem.strip_prefix("replay-")?.split_once('-')?;
    Some((seq.parse().ok()?, Some(k.parse().ok()?)))
}

/// Roll every committed checkpoint of the ledger forward (its files
/// published), cut a torn last line, and tell what the checkpoints hold:
/// the settled messages, counts and files, and the committed file paths.
fn roll_forward(
    lake: &dyn LakeStore,
    ledger_path: &Path,
    ledger: &File,
) -> Result<(Recovered, HashSet<String>), LedgerError> {
    let mut rec = Recovered::default();
    let mut committed: HashSet<String> = HashSet::new();
    let good = read_ledger(ledger_path, BufReader::new(ledger), |c| {
        for f in &c.files {
            lake.roll_forward(&f.path)?;
            let name = f.path.rsplit('/').next().unwrap_or("");
            if let Some(n) = crate::write::part_number(name) {
                rec.next_part = rec.next_part.max(n + 1);
            }
            committed.insert(f.path.clone());
        }
        for m in &c.messages {
            let fp = decode_fingerprint(m)
                .ok_or_else(|| LedgerError::Corrupt(format!("ledger: bad fingerprint {m:?}")))?;
            rec.settled.insert(fp);
        }
        rec.checkpoints += 1;
        rec.counts.add(&c.counts);
        rec.committed_messages += c.messages.len() as u64;
        rec.files.extend(c.files);
        Ok::<_, LedgerError>(())
    })?;
    let len = ledger.metadata().map_err(io(ledger_path))?.len();
    if good < len {
        ledger.set_len(good).map_err(io(ledger_path))?;
        ledger.sync_all().map_err(io(ledger_path))?;
    }
    Ok((rec, committed))
}

/// The WAL segments after `checkpoints` committed ones, as replay files in
/// order: committed segments go, uncommitted ones are renamed for replay.
fn replay_segments(run_dir: &Path, checkpoints: u32) -> Result<Vec<PathBuf>, LedgerError> {
    let mut replay: Vec<(u32, PathBuf)> = Vec::new();
    let mut next_k = 0u32;
    let mut wals: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(run_dir).map_err(io(run_dir))? {
        let path = entry.map_err(io(run_dir))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some((seq, k)) = segment_of(&name) else {
            continue;
        };
        if seq < checkpoints {
            std::fs::remove_file(&path).map_err(io(&path))?;
        } else if let Some(k) = k {
            next_k = next_k.max(k + 1);
            replay.push((k, path));
        } else {
            wals.push(path);
        }
    }
    wals.sort();
    for path in wals {
        let to = replay_path(run_dir, checkpoints, next_k);
        next_k += 1;
        std::fs::rename(&path, &to).map_err(io(&path))?;
        replay.push((next_k - 1, to));
    }
    sync_dir(run_dir)?;
    replay.sort();
    Ok(replay.into_iter().map(|(_, p)| p).collect())
}

impl RunFiles {
    /// Open the run's files, recovering whatever an earlier attempt left in
    /// `run_dir` and in the lake below `out`.
    ///
    /// WAL segment `k` (and replay files tagged `k`) hold messages that
    /// checkpoint `k` commits: those below the number of committed
    /// checkpoints are done and removed. The others are set aside as replay
    /// files, read here once for their fingerprints and once more, streamed,
    /// by `replay`; they go when the next checkpoint commits.
    pub(crate) fn open(
        lake: &dyn LakeStore,
        run_dir: &Path,
    ) -> Result<(RunFiles, Recovered), LedgerError> {
        std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        let ledger_path = run_dir.join("ledger.jsonl");
        let ledger = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&ledger_path)
            .map_err(io(&ledger_path))?;
        let (mut rec, committed) = roll_forward(lake, &ledger_path, &ledger)?;
        rec.replay = replay_segments(run_dir, rec.checkpoints)?;
        for path in &rec.replay {
            read_wal(path, |r| {
                rec.settled.insert(r.msg.fingerprint());
                rec.replay_messages += 1;
                Ok::<_, LedgerError>(())
            })?;
        }
        let run_id = run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        lake.remove_strays(&run_id, &committed)?;
        let wal_seq = rec.checkpoints;
        let wal = open_wal(run_dir, wal_seq)?;
        let files = RunFiles {
            dir: run_dir.to_owned(),
            ledger,
            wal,
            wal_seq,
            wal_dirty: false,
            wal_bytes: 0,
            syncs: 0,
            scratch: Vec::new(),
        };
        Ok((files, rec))
    }

    /// Append a settled message (buffered; durable after `sync`).
    pub(crate) fn append(&mut self, r: &WalRecord) -> Result<(), LedgerError> {
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, r)?;
        self.scratch.push(b'\n');
        let path = wal_path(&self.dir, self.wal_seq);
        self.wal.write_all(&self.scratch).map_err(io(&path))?;
        self.wal_bytes += self.scratch.len() as u64;
        self.wal_dirty = true;
        if self.scratch.capacity() > SCRATCH_KEPT {
            self.scratch = Vec::new();
        }
        Ok(())
    }

    /// Bytes in the current WAL segment.
    pub(crate) fn wal_bytes(&self) -> u64 {
        self.wal_bytes
    }

    /// Make every appended record durable.
    pub(crate) fn sync(&mut self) -> Result<(), LedgerError> {
        if !self.wal_dirty {
            return Ok(());
        }
        let path = wal_path(&self.dir, self.wal_seq);
        self.wal.flush().map_err(io(&path))?;
        self.wal.get_ref().sync_data().map_err(io(&path))?;
        self.wal_dirty = false;
        self.syncs += 1;
        Ok(())
    }

    /// fsyncs of the WAL so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs
    }

    /// The commit point of a checkpoint whose files are sealed: append its
    /// ledger line and fsync it. The caller then publishes the files and
    /// calls `next_segment`.
    pub(crate) fn commit(&mut self, c: &Checkpoint) -> Result<(), LedgerError> {
        let path = self.dir.join("ledger.jsonl");
        let mut line = serde_json::to_vec(c)?;
        line.push(b'\n');
        self.ledger.write_all(&line).map_err(io(&path))?;
        self.ledger.sync_data().map_err(io(&path))?;
        Ok(())
    }

    /// Start the WAL of the next checkpoint and drop what the committed one
    /// held: its WAL segment and the replay files it committed.
    pub(crate) fn next_segment(&mut self, replayed: &[PathBuf]) -> Result<(), LedgerError> {
        let old = wal_path(&self.dir, self.wal_seq);
        self.wal_seq += 1;
        self.wal = open_wal(&self.dir, self.wal_seq)?;
        self.wal_dirty = false;
        self.wal_bytes = 0;
        std::fs::remove_file(&old).map_err(io(&old))?;
        for p in replayed {
            std::fs::remove_file(p).map_err(io(p))?;
        }
        Ok(sync_dir(&self.dir)?)
    }

    /// After the last checkpoint: the WAL is empty, remove it.
    pub(crate) fn close(self) -> Result<(), LedgerError> {
        if self.wal_dirty {
            return Err(LedgerError::Corrupt(
                "WAL closed with unsynced records".into(),
            ));
        }
        let path = wal_path(&self.dir, self.wal_seq);
        drop(self.wal);
        std::fs::remove_file(&path).map_err(io(&path))
    }

    /// Every error row of the committed checkpoints, in order, streamed.
    pub(crate) fn committed_errors<E: From<LedgerError>>(
        &self,
        mut each: impl FnMut(&ErrorRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let path = self.dir.join("ledger.jsonl");
        let file = File::open(&path).map_err(io(&path))?;
        read_ledger(&path, BufReader::new(file), |c| {
            c.errors.iter().try_for_each(&mut each)
        })?;
        Ok(())
    }
}

fn open_wal(dir: &Path, seq: u32) -> Result<BufWriter<File>, LedgerError> {
    let path = wal_path(dir, seq);
    let f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(io(&path))?;
    sync_dir(dir)?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_ledger` over a text, collecting the checkpoints.
    fn parse_ledger(text: &str) -> Result<(Vec<Checkpoint>, usize), LedgerError> {
        let mut out = Vec::new();
        let good = read_ledger(Path::new("ledger"), text.as_bytes(), |c| {
            out.push(c);
            Ok::<_, LedgerError>(())
        })?;
        Ok((out, good as usize))
    }

    #[test]
    fn a_resume_names_what_differs() {
        let then = RunMeta {
            v: FORMAT_VERSION,
            run_id: "r".into(),
            started_at: "2026-11-26T00:00:00Z".into(),
            dt: "2026-11-26".into(),
            format: "parquet".into(),
            input: "in.csv".into(),
            input_bytes: 100,
            input_sha256: "ab".repeat(32),
            endpoint: "https://adminapisgp.im.qcloud.com".into(),
            sdkappid: 1,
            out: "s3://lake/nightly".into(),
        };
        let now = |f: &dyn Fn(&mut RunMeta)| {
            let mut m = RunMeta {
                run_id: "other".into(),
                started_at: "2026-11-27T00:00:00Z".into(),
                input: "/elsewhere/in.csv".into(),
                ..then.clone()
            };
            f(&mut m);
            m
        };
        let table: Vec<(RunMeta, &[&str])> = vec![
            (now(&|_| {}), &[]),
            (now(&|m| m.input_bytes = 101), &["the input differs"]),
            (
                now(&|m| m.input_sha256 = "cd".repeat(32)),
                &["the input differs"],
            ),
            (now(&|m| m.format = "csv".into()), &["the format differs"]),
            (
                now(&|m| m.endpoint = "http://127.0.0.1:1".into()),
                &["the endpoint differs"],
            ),
            (
                now(&|m| {
                    m.sdkappid = 2;
                    m.format = "csv".into();
                }),
                &["the format differs", "the SDKAppID differs"],
            ),
            (
                now(&|m| m.out = "s3://lake/other".into()),
                &["it writes to another lake (then s3://lake/nightly, now s3://lake/other)"],
            ),
        ];
        for (wanted, want) in table {
            let got = then.differences(&wanted);
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!(g.starts_with(w), "{g} vs {w}");
            }
        }
        let old = RunMeta {
            v: 0,
            ..then.clone()
        };
        assert!(old.differences(&then)[0].contains("format version 0"));
        let unrecorded = RunMeta {
            out: String::new(),
            ..then.clone()
        };
        assert!(unrecorded.differences(&then)[0].contains("its lake is not recorded"));
    }

    #[test]
    fn fingerprints_round_trip() {
        for fp in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        ] {
            let s = encode_fingerprint(fp);
            assert_eq!(s.len(), 22);
            assert_eq!(decode_fingerprint(&s), Some(fp));
        }
        assert_eq!(decode_fingerprint("nope"), None);
    }

    fn cp(seq: u32) -> Checkpoint {
        Checkpoint {
            v: FORMAT_VERSION,
            seq,
            files: vec![],
            messages: vec![encode_fingerprint(seq as u128)],
            errors: vec![],
            counts: Counts {
                ok: 1,
                ..Counts::default()
            },
        }
    }

    #[test]
    fn a_torn_last_ledger_line_is_not_a_checkpoint() {
        let a = serde_json::to_string(&cp(0)).unwrap() + "\n";
        let b = serde_json::to_string(&cp(1)).unwrap() + "\n";
        let table: Vec<(String, usize, usize)> = vec![
            (String::new(), 0, 0),
            (a.clone(), 1, a.len()),
            (a.clone() + &b, 2, a.len() + b.len()),
            (a.clone() + &b[..b.len() / 2], 1, a.len()),
            (a.clone() + &b[..b.len() - 1], 1, a.len()),
        ];
        for (text, n, good) in table {
            let (cps, g) = parse_ledger(&text).unwrap();
            assert_eq!((cps.len(), g), (n, good), "{text:?}");
        }
        assert!(
            parse_ledger("garbage\n").is_err(),
            "a complete bad line is corruption, not a tear"
        );
        let other_version = serde_json::to_string(&Checkpoint { v: 1, ..cp(0) }).unwrap() + "\n";
        let e = parse_ledger(&other_version).unwrap_err();
        assert!(e.to_string().contains("format version 1"), "{e}");
    }

    #[test]
    fn the_lock_refuses_a_second_holder_and_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let me = Holder {
            run_id: "r1".into(),
            pid: 42,
            started_at: "2026-11-26T00:00:00Z".into(),
        };
        let held = RunLock::acquire(dir.path(), &me).unwrap();
        let other = Holder {
            run_id: "r2".into(),
            ..me.clone()
        };
        let e = RunLock::acquire(dir.path(), &other)
            .unwrap_err()
            .to_string();
        assert!(e.contains("run r1") && e.contains("pid 42"), "{e}");
        drop(held);
        RunLock::acquire(dir.path(), &other).unwrap();
    }

    /// Inputs lock apart; the state folder's whole lock (`runs drop`)
    /// waits for every one, and names the run that holds one, never a
    /// holder that is gone.
    #[test]
    fn each_input_locks_apart_and_a_released_lock_names_no_one() {
        let dir = tempfile::tempdir().unwrap();
        let who = |run: &str| Holder {
            run_id: run.into(),
            pid: 7,
            started_at: "2026-12-05T00:00:00Z".into(),
        };
        // A drop that came and went.
        drop(RunLock::acquire(dir.path(), &who("gone")).unwrap());
        let (a, b) = (Path::new("a.csv"), Path::new("b.csv"));
        let held = RunLock::acquire_input(dir.path(), a, &who("ra")).unwrap();
        let beside = RunLock::acquire_input(dir.path(), b, &who("rb")).unwrap();
        let again = RunLock::acquire_input(dir.path(), a, &who("rc")).unwrap_err();
        assert!(again.to_string().contains("run ra"), "{again}");
        let whole = RunLock::acquire(dir.path(), &who("dropper")).unwrap_err();
        let text = whole.to_string();
        assert!(text.contains("run ra") || text.contains("run rb"), "{text}");
        let mut running: Vec<String> = RunLock::holders(dir.path())
            .into_iter()
            .map(|h| h.run_id)
            .filter(|r| !r.is_empty())
            .collect();
        running.sort();
        assert_eq!(running, ["ra", "rb"]);
        drop((held, beside));
        assert!(RunLock::holders(dir.path()).is_empty());
        RunLock::acquire(dir.path(), &who("dropper")).unwrap();
    }

    #[test]
    fn wal_records_survive_a_reopen_and_committed_segments_are_dropped() {
        let out = tempfile::tempdir().unwrap();
        let run_dir = out.path().join("_runs/r");
        let rec = |i: u64| WalRecord {
            v: FORMAT_VERSION,
            msg: crate::kind::MessageRef::new(None, &format!("t{i}"), "k").into(),
            line: i + 2,
            status: WalStatus::Ok {
                latest_seq: 3,
                clear_seq: 0,
                pairs: [PairRef {
                    key: "k",
                    value: "v,\"\n",
                    seq: 3,
                    fetched_at_us: 7,
                }]
                .into_iter()
                .collect(),
                read: crate::incremental::Read::Incremental,
            },
            attempts: 1,
            pages: 1,
            at_us: 9,
        };
        {
            let (mut f, r) =
                RunFiles::open(&crate::write::LocalDir::new(out.path()), &run_dir).unwrap();
            assert!(r.settled.is_empty() && r.replay.is_empty());
            f.append(&rec(0)).unwrap();
            f.append(&rec(1)).unwrap();
            f.sync().unwrap();
            f.append(&rec(2)).unwrap(); // never synced: lost like a crash would lose it
            std::mem::forget(f);
        }
        // Simulate the torn tail of the unsynced record.
        let seg = wal_path(&run_dir, 0);
        let first = std::fs::read_to_string(&seg).unwrap();
        assert!(
            first.starts_with(
                "{\"v\":2,\"kind\":\"one_to_one\",\"from\":null,\"to\":\"t0\",\"msg_key\":\"k\",\"line\":2,"
            ),
            "the WAL keeps the message's kind and fields at the top level: {first}"
        );
        let mut text = std::fs::read_to_string(&seg).unwrap();
        text.push_str("{\"from\":null,\"to\":\"t9");
        std::fs::write(&seg, text).unwrap();
        let replayed = |r: &Recovered| {
            let mut out = Vec::new();
            for p in &r.replay {
                read_wal(p, |rec| {
                    out.push(rec);
                    Ok::<_, LedgerError>(())
                })
                .unwrap();
            }
            out
        };
        let (mut f, r) =
            RunFiles::open(&crate::write::LocalDir::new(out.path()), &run_dir).unwrap();
        let records = replayed(&r);
        let tos: Vec<_> = records.iter().map(|r| r.msg.to_string()).collect();
        assert_eq!(tos, ["-→t0 k", "-→t1 k"]);
        assert_eq!(r.replay_messages, 2);
        assert_eq!(records[0].pairs().next().unwrap().value, "v,\"\n");
        // A crash during the replay: the next attempt finds the same two to
        // replay, and the message settled meanwhile, each once.
        f.append(&rec(3)).unwrap();
        f.sync().unwrap();
        std::mem::forget(f);
        let (mut f, r) =
            RunFiles::open(&crate::write::LocalDir::new(out.path()), &run_dir).unwrap();
        let records = replayed(&r);
        let mut tos: Vec<_> = records.iter().map(|r| r.msg.to_string()).collect();
        tos.sort();
        assert_eq!(tos, ["-→t0 k", "-→t1 k", "-→t3 k"]);
        assert_eq!((r.replay_messages, r.settled.len()), (3, 3));
        f.commit(&Checkpoint {
            v: FORMAT_VERSION,
            seq: 0,
            files: vec![],
            messages: records
                .iter()
                .map(|m| encode_fingerprint(m.msg.fingerprint()))
                .collect(),
            errors: vec![],
            counts: Counts::default(),
        })
        .unwrap();
        // Killed after the commit, before the replay files went: they are
        // committed (tagged 0, one checkpoint committed) and go on reopen.
        std::mem::forget(f);
        let (f, r) = RunFiles::open(&crate::write::LocalDir::new(out.path()), &run_dir).unwrap();
        assert!(r.replay.is_empty(), "committed: nothing to replay");
        assert_eq!((r.settled.len(), r.checkpoints), (3, 1));
        drop(f);
        let left: Vec<_> = std::fs::read_dir(&run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("replay-") || n.starts_with("wal-"))
            .collect();
        assert_eq!(left, ["wal-000001.jsonl"], "only the open segment");
        assert!(!seg.exists());
    }
}

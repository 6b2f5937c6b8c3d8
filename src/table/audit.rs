//! What `msgext verify` proves of a lake, read-only: every msgext table's
//! log reads at its latest version and every file it references is there
//! with the size it gives; every finished run's manifest matches its files
//! byte for byte (sha256), and the run is in each of its tables exactly
//! once (its `txn`, exactly its files) with the rows its summary counts;
//! the current tables hold one row per (message, key) and one per message,
//! whose `kv_count` matches. Runs dropped by `vacuum --keep-history` (the
//! days before its `txn`'s) are not looked for. Each problem is one line
//! naming the file, run or message.

use super::catalog::{LakeTable, present};
use super::delta::{DeltaLake, LiveFile, app_id};
use super::read;
use super::vacuum::KEEP_HISTORY_APP;
use crate::kind::{Kind, MessageId};
use crate::write::{LakeStore, WriteError};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the audit found.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    pub(crate) tables: u64,
    /// Data files whose presence and size were checked against a log.
    pub(crate) files: u64,
    /// Files read whole for their sha256.
    pub(crate) hashed: u64,
    pub(crate) runs: u64,
    /// Finished runs' files not looked for: their days were dropped by
    /// `vacuum --keep-history`.
    pub(crate) dropped: u64,
    /// Runs without `_SUCCESS` (resumable, or to drop).
    pub(crate) unfinished: Vec<String>,
    /// Every problem found, one line each.
    pub(crate) damage: Vec<String>,
}

/// A table's live files by path, and the first day its history keeps.
struct Known {
    role: super::catalog::Role,
    live: HashMap<String, LiveFile>,
    first_day: Option<String>,
}

/// Audit the lake; `tell` hears of each stage (long lakes take a while).
pub(crate) fn audit(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    tell: &dyn Fn(String),
) -> Result<Audit, WriteError> {
    let mut audit = Audit::default();
    let found = present(lake, delta)?;
    for (table, e) in &found.unreadable {
        audit
            .damage
            .push(format!("{table}: the log cannot be read: {e}"));
    }
    let mut known = HashMap::new();
    for t in &found.tables {
        tell(format!("{}: checking its files", t.name));
        known.insert(t.name.clone(), table_files(lake, delta, t, &mut audit)?);
    }
    audit.tables = found.tables.len() as u64;
    tell("the runs' manifests".into());
    runs(lake, delta, &known, &mut audit)?;
    for kind in Kind::ALL {
        let [kv, messages] = super::names(kind);
        if let (Some(kv), Some(messages)) = (known.get(&kv), known.get(&messages)) {
            tell(format!("current tables of {}", kind.spec().name()));
            current(lake, kind, (kv, messages), &mut audit)?;
        }
    }
    Ok(audit)
}

/// A table's live files, each checked to be in the lake with its size.
fn table_files(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    t: &LakeTable,
    audit: &mut Audit,
) -> Result<Known, WriteError> {
    let snapshot = delta.snapshot(&t.name)?;
    let live = delta.files_under(&t.name, &snapshot, "")?;
    let listed: HashMap<String, u64> = (lake.list_meta(&t.name)?)
        .into_iter()
        .map(|f| (f.path, f.bytes))
        .collect();
    for f in &live {
        let rel = format!("{}/{}", t.name, f.path);
        audit.files += 1;
        match listed.get(&rel) {
            None => audit.damage.push(format!(
                "{}: missing (the log of {} references it)",
                lake.display(&rel),
                t.name
            )),
            Some(&b) if b != f.bytes => audit.damage.push(format!(
                "{}: {b} bytes, the log says {}",
                lake.display(&rel),
                f.bytes
            )),
            Some(_) => {}
        }
    }
    let first_day = match t.role.per_run() {
        true => (delta.txn_version(&t.name, &snapshot, KEEP_HISTORY_APP)?).map(day_of),
        false => None,
    };
    Ok(Known {
        role: t.role,
        live: live.into_iter().map(|f| (f.path.clone(), f)).collect(),
        first_day,
    })
}

/// `YYYY-MM-DD` of a count of days since 1970-01-01.
fn day_of(days: i64) -> String {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    (epoch + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

/// A manifest's file.
#[derive(Debug, serde::Deserialize)]
struct ManifestFile {
    path: String,
    rows: u64,
    bytes: u64,
    sha256: String,
}

#[derive(Debug, serde::Deserialize)]
struct Manifest {
    files: Vec<ManifestFile>,
}

/// The runs of the lake: unfinished ones listed, finished ones checked.
fn runs(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    known: &HashMap<String, Known>,
    audit: &mut Audit,
) -> Result<(), WriteError> {
    let mut runs: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for p in lake.list("_runs")? {
        if let Some((run, name)) = p.strip_prefix("_runs/").and_then(|r| r.split_once('/')) {
            runs.entry(run.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
    }
    for (run, files) in runs {
        if files.contains("_SUCCESS") {
            audit.runs += 1;
            finished_run(lake, delta, known, &run, audit)?;
        } else if files.contains("_CLAIM") || files.contains("summary.json") {
            audit.unfinished.push(run);
        }
    }
    Ok(())
}

/// One finished run: its manifest against its files and its tables.
fn finished_run(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    known: &HashMap<String, Known>,
    run_id: &str,
    audit: &mut Audit,
) -> Result<(), WriteError> {
    let at = format!("_runs/{run_id}/manifest.json");
    let manifest: Manifest = match lake.get(&at)?.map(|b| serde_json::from_slice(&b)) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            audit
                .damage
                .push(format!("{}: cannot be read: {e}", lake.display(&at)));
            return Ok(());
        }
        None => {
            audit.damage.push(format!(
                "{}: missing (the run has _SUCCESS)",
                lake.display(&at)
            ));
            return Ok(());
        }
    };
    let mut rows: BTreeMap<&str, u64> = BTreeMap::new();
    for f in &manifest.files {
        let (table, rel) = f.path.split_once('/').unwrap_or(("", &f.path));
        let day = rel.split('/').next().and_then(|d| d.strip_prefix("dt="));
        let t = known.get(table);
        if let (Some(first), Some(day)) = (t.and_then(|t| t.first_day.as_deref()), day)
            && day < first
        {
            audit.dropped += 1;
            continue;
        }
        *rows.entry(table).or_default() += f.rows;
        if let Some(t) = t {
            check_logged(lake, t, f, rel, run_id, audit);
        }
        check_bytes(lake, f, audit)?;
    }
    // The history tables the manifest names, and any holding a file of the run.
    let folder = format!("run_id={run_id}");
    let of_run = |t: &Known| (t.live.keys()).any(|p| p.split('/').nth(1) == Some(folder.as_str()));
    for (table, t) in known.iter().filter(|(n, t)| {
        t.role == super::catalog::Role::History && (rows.contains_key(n.as_str()) || of_run(t))
    }) {
        tables_of_run(lake, delta, (table, t), &manifest, run_id, audit)?;
    }
    summary_counts(lake, run_id, &rows, audit)
}

/// A manifest's file is live in its table's log with the manifest's rows.
fn check_logged(
    lake: &dyn LakeStore,
    t: &Known,
    f: &ManifestFile,
    rel: &str,
    run_id: &str,
    audit: &mut Audit,
) {
    match t.live.get(rel) {
        None => audit.damage.push(format!(
            "{}: run {run_id}'s manifest lists it, its table's log does not",
            lake.display(&f.path)
        )),
        Some(l) if l.rows.is_some_and(|r| r != f.rows) => audit.damage.push(format!(
            "{}: the log counts {} rows, run {run_id}'s manifest {}",
            lake.display(&f.path),
            l.rows.unwrap_or_default(),
            f.rows
        )),
        Some(_) => {}
    }
}

/// A manifest's file is in the lake byte for byte.
fn check_bytes(
    lake: &dyn LakeStore,
    f: &ManifestFile,
    audit: &mut Audit,
) -> Result<(), WriteError> {
    let Some((bytes, sha256)) = hash(lake, &f.path)? else {
        audit.damage.push(format!(
            "{}: missing (a finished run's file)",
            lake.display(&f.path)
        ));
        return Ok(());
    };
    audit.hashed += 1;
    if bytes != f.bytes || sha256 != f.sha256 {
        audit.damage.push(format!(
            "{}: changed since its run wrote it ({bytes} bytes, sha256 {sha256}; the manifest: {} bytes, {})",
            lake.display(&f.path),
            f.bytes,
            f.sha256
        ));
    }
    Ok(())
}

/// The size and sha256 of the file at `rel`, `None` if it is not there.
fn hash(lake: &dyn LakeStore, rel: &str) -> Result<Option<(u64, String)>, WriteError> {
    let mut h = Sha256::new();
    let bytes = match lake.local_path(rel) {
        Some(path) => match std::fs::File::open(&path) {
            Ok(file) => {
                hash_file(file, &mut h).map_err(|source| WriteError::Path { path, source })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(WriteError::Path { path, source }),
        },
        None => match lake.get(rel)? {
            Some(b) => {
                h.update(&b);
                b.len() as u64
            }
            None => return Ok(None),
        },
    };
    Ok(Some((bytes, hex(&h.finalize()))))
}

/// Feed a file to the hasher in 1 MiB reads; its size.
fn hash_file(mut file: std::fs::File, h: &mut Sha256) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match std::io::Read::read(&mut file, &mut buf)? {
            0 => return Ok(total),
            n => {
                h.update(&buf[..n]);
                total += n as u64;
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The run is in the table exactly once: its `txn`, and no file of its
/// partition the manifest does not list.
fn tables_of_run(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    (table, t): (&String, &Known),
    manifest: &Manifest,
    run_id: &str,
    audit: &mut Audit,
) -> Result<(), WriteError> {
    let snapshot = delta.snapshot(table)?;
    if !delta.has_transaction(table, &snapshot, &app_id(run_id))? {
        audit.damage.push(format!(
            "{table}: run {run_id}'s commit (txn {}) is not in its log",
            app_id(run_id)
        ));
    }
    let listed: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    let folder = format!("run_id={run_id}");
    for path in t.live.keys() {
        let rel = format!("{table}/{path}");
        if path.split('/').nth(1) == Some(folder.as_str()) && !listed.contains(rel.as_str()) {
            audit.damage.push(format!(
                "{}: in the log of {table} as run {run_id}'s, not in its manifest",
                lake.display(&rel)
            ));
        }
    }
    Ok(())
}

/// The summary's counts against the rows its manifest gives each table.
fn summary_counts(
    lake: &dyn LakeStore,
    run_id: &str,
    rows: &BTreeMap<&str, u64>,
    audit: &mut Audit,
) -> Result<(), WriteError> {
    let at = format!("_runs/{run_id}/summary.json");
    let Some(summary) = lake.get(&at)? else {
        audit.damage.push(format!(
            "{}: missing (the run has _SUCCESS)",
            lake.display(&at)
        ));
        return Ok(());
    };
    let s: serde_json::Value = serde_json::from_slice(&summary).unwrap_or_default();
    let count = |k: &str| s["messages"][k].as_u64().unwrap_or(0);
    for kind in Kind::ALL {
        let [kv, messages] = kind.spec().tables();
        let want = [
            (kv, s["kv_rows"].as_u64().unwrap_or(0)),
            (messages, count("ok") + count("not_found") + count("failed")),
        ];
        for (table, want) in want {
            if let Some(&got) = rows.get(table)
                && got != want
            {
                audit.damage.push(format!(
                    "run {run_id}: {table} holds {got} rows of it, its summary counts {want}"
                ));
            }
        }
    }
    Ok(())
}

/// One row per (message, key) and per message, `kv_count` matching.
/// Memory: a fingerprint per message and per pair, not the rows.
fn current(
    lake: &dyn LakeStore,
    kind: Kind,
    (kv, messages): (&Known, &Known),
    audit: &mut Audit,
) -> Result<(), WriteError> {
    let [kv_name, messages_name] = super::names(kind);
    let mut counts: HashMap<(u64, u128), (i64, i64)> = HashMap::new();
    let (mut damage, mut found) = (Vec::new(), Vec::new());
    let whole = each_batch(
        lake,
        kind,
        (&messages_name, messages),
        &mut damage,
        |app, ids, batch| {
            let kv_count = read::ints(batch, "kv_count")?;
            for (i, id) in ids.iter().enumerate() {
                let fp = id.state_fingerprint();
                if counts.insert((app, fp), (kv_count.value(i), 0)).is_some() {
                    found.push(format!("{messages_name}: app {app}: {id} has two rows"));
                }
            }
            Ok(())
        },
    )?;
    // A message's rows come together in its file: its keys are checked
    // there (a set of one message's keys); a message in two files, or a
    // key twice across them, shows as a kv_count that does not match.
    let mut run: (Option<(u64, u128)>, HashSet<String>) = (None, HashSet::new());
    let whole = whole
        & each_batch(
            lake,
            kind,
            (&kv_name, kv),
            &mut damage,
            |app, ids, batch| {
                let keys = read::strings(batch, "key")?;
                for (i, id) in ids.iter().enumerate() {
                    let fp = id.state_fingerprint();
                    if run.0 != Some((app, fp)) {
                        run = (Some((app, fp)), HashSet::new());
                    }
                    if !run.1.insert(keys.value(i).to_owned()) {
                        found.push(format!(
                            "{kv_name}: app {app}: {id} key {:?} has two rows",
                            keys.value(i)
                        ));
                    }
                    match counts.get_mut(&(app, fp)) {
                        Some(c) => c.1 += 1,
                        None => found.push(format!(
                            "{kv_name}: app {app}: {id} has pairs but no row in {messages_name}"
                        )),
                    }
                }
                Ok(())
            },
        )?;
    let wrong = counts.values().filter(|(want, got)| want != got).count();
    if wrong > 0 {
        found.push(format!(
            "{messages_name}: {wrong} messages' kv_count differs from their rows in {kv_name}"
        ));
    }
    audit.damage.extend(damage);
    // With a file unread the counts say nothing more.
    if whole {
        audit.damage.extend(found);
    }
    Ok(())
}

/// Each batch of a current table's live files, with its app (from the
/// file's `sdkappid=A/` folder) and each row's message; `false` when a file
/// could not be read (told in `damage`: the counts would not add up).
fn each_batch(
    lake: &dyn LakeStore,
    kind: Kind,
    (table, t): (&str, &Known),
    damage: &mut Vec<String>,
    mut each: impl FnMut(u64, &[MessageId], &arrow_array::RecordBatch) -> Result<(), WriteError>,
) -> Result<bool, WriteError> {
    let mut whole = true;
    for path in t.live.keys() {
        let app = (path.split('/'))
            .find_map(|p| p.strip_prefix("sdkappid="))
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let rel = format!("{table}/{path}");
        if !lake.exists(&rel)? {
            whole = false; // told by `table_files`
            continue;
        }
        let read = read::batches(lake, &rel).and_then(|batches| {
            for batch in batches {
                let batch = batch?;
                each(app, &read::ids(kind, &batch)?, &batch)?;
            }
            Ok(())
        });
        if let Err(e) = read {
            damage.push(format!("{}: cannot be read: {e}", lake.display(&rel)));
            whole = false;
        }
    }
    Ok(whole)
}

/// A message's pairs: key → (value, Seq).
pub(crate) type Pairs = BTreeMap<String, (String, i64)>;

/// Each message of the app's `current_messages`, with its status.
pub(crate) fn current_messages(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    sdkappid: u64,
    mut each: impl FnMut(MessageId, &str),
) -> Result<(), WriteError> {
    let [_, table] = super::names(kind);
    for path in app_files(lake, delta, &table, sdkappid)? {
        for batch in read::batches(lake, &path)? {
            let batch = batch?;
            let status = read::strings(&batch, "status")?;
            for (i, id) in read::ids(kind, &batch)?.into_iter().enumerate() {
                each(id, status.value(i));
            }
        }
    }
    Ok(())
}

/// The app's current pairs of the messages `wanted` names (by state fingerprint).
pub(crate) fn current_pairs(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    sdkappid: u64,
    wanted: &HashSet<u128>,
) -> Result<HashMap<u128, Pairs>, WriteError> {
    let [table, _] = super::names(kind);
    let mut out = HashMap::new();
    for path in app_files(lake, delta, &table, sdkappid)? {
        pairs_of_file(lake, kind, &path, wanted, &mut out)?;
    }
    Ok(out)
}

/// The pairs of the messages `wanted` names in a key-value file (history
/// or current: both have `key`, `value`, `seq`), added to `out`.
pub(crate) fn pairs_of_file(
    lake: &dyn LakeStore,
    kind: Kind,
    rel: &str,
    wanted: &HashSet<u128>,
    out: &mut HashMap<u128, Pairs>,
) -> Result<(), WriteError> {
    for batch in read::batches(lake, rel)? {
        let batch = batch?;
        let (keys, values) = (
            read::strings(&batch, "key")?,
            read::strings(&batch, "value")?,
        );
        let seqs = read::ints(&batch, "seq")?;
        for (i, fp) in read::fingerprints(kind, &batch)?.into_iter().enumerate() {
            if wanted.contains(&fp) {
                let pair = (values.value(i).to_owned(), seqs.value(i));
                out.entry(fp)
                    .or_default()
                    .insert(keys.value(i).to_owned(), pair);
            }
        }
    }
    Ok(())
}

/// The live files of the app's partition of a current table (paths in the lake).
fn app_files(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    table: &str,
    sdkappid: u64,
) -> Result<Vec<String>, WriteError> {
    let Some(snapshot) = super::latest(lake, delta, table)? else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}/", super::app_dir(sdkappid));
    Ok((delta.files_under(table, &snapshot, &prefix)?)
        .into_iter()
        .map(|f| format!("{table}/{}", f.path))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_day_kept_is_the_txn_version_in_days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(20_428), "2025-12-06");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}

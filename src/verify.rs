//! `msgext verify`: evidence for audits, read-only. The lake's part is
//! `table::audit`'s (logs, files, manifests, runs, current tables). With
//! `--sample`, some known messages of the app are read again in full from
//! the API (an export of them, with the same rate limit, retries and
//! UserSig, into a folder of its own that is removed after) and compared
//! with `current_key_values`: those that differ are drift (a lost callback
//! not yet swept, a change no Seq shows), named and written to a CSV that
//! is a valid `--input`.
//!
//! Exit: 0 sound; 3 only drift (or sampled messages whose calls failed);
//! 1 damage; 2 usage, a folder that is no lake, a table of another schema.

use crate::export::{ExportPlan, Tuning, Ui};
use crate::fetch::StopSignal;
use crate::kind::{Kind, MessageId};
use crate::table::audit::{self, Audit, Pairs};
use crate::table::delta::DeltaLake;
use crate::write::{LakeStore, WriteError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Which known messages `--sample` reads again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sample {
    /// This many (those whose fingerprints come first: spread over the app).
    Count(usize),
    /// About this share, in percent (by fingerprint).
    Share(f64),
    All,
}

impl Sample {
    /// `N`, `P%` or `all`.
    pub(crate) fn parse(text: &str) -> Option<Sample> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("all") {
            return Some(Sample::All);
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().ok()?;
            return (p > 0.0 && p <= 100.0).then_some(Sample::Share(p));
        }
        t.parse().ok().filter(|n| *n > 0).map(Sample::Count)
    }

    /// Whether a share takes the message of this fingerprint.
    fn takes(self, fp: u128) -> bool {
        match self {
            Sample::Share(p) => ((fp >> 64) as u64 % 1_000_000) < (p * 10_000.0) as u64,
            Sample::All | Sample::Count(_) => true,
        }
    }
}

/// What `msgext verify` was asked.
#[derive(Debug, Clone)]
pub(crate) struct VerifyPlan {
    /// With `--sample`: which messages, how to reach the API, where drift goes.
    pub(crate) sample: Option<SamplePlan>,
    pub(crate) quiet: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct SamplePlan {
    pub(crate) sample: Sample,
    pub(crate) api: crate::api::Connection,
    /// The drift CSVs go here (`drift-<kind>.csv`).
    pub(crate) drift_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    #[error("{0}: no msgext table here; give the lake as msgext export wrote it (--out)")]
    NotALake(String),
    #[error(transparent)]
    Lake(#[from] WriteError),
    #[error("the sample's read: {0}")]
    Export(#[from] crate::export::ExportError),
}

impl VerifyError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            VerifyError::NotALake(_) => 2,
            VerifyError::Lake(WriteError::Delta(d)) if d.is_wrong_lake() => 2,
            VerifyError::Lake(_) => 1,
            VerifyError::Export(e) => e.exit_code(),
        }
    }
}

/// What a sample found, per kind.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Drift {
    pub(crate) kind: String,
    pub(crate) sampled: usize,
    /// Messages whose pairs or status differ from a full read now.
    pub(crate) differ: Vec<String>,
    /// Messages whose read failed (not compared).
    pub(crate) failed: usize,
    /// Where the differing messages were written, as an input list.
    pub(crate) csv: Option<String>,
}

/// What verify found.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) audit: Audit,
    pub(crate) drift: Vec<Drift>,
}

impl Verdict {
    pub(crate) fn exit_code(&self) -> u8 {
        let drift = self
            .drift
            .iter()
            .any(|d| !d.differ.is_empty() || d.failed > 0);
        match (self.audit.damage.is_empty(), drift) {
            (false, _) => 1,
            (true, true) => 3,
            (true, false) => 0,
        }
    }

    /// The report, for people.
    pub(crate) fn report(&self) -> String {
        let a = &self.audit;
        let mut s = format!(
            "tables     {} (every file of their latest versions checked: {})\nruns       {} finished (files hashed: {}, dropped by --keep-history: {}), {} unfinished{}\n",
            a.tables,
            a.files,
            a.runs,
            a.hashed,
            a.dropped,
            a.unfinished.len(),
            match a.unfinished.is_empty() {
                true => String::new(),
                false => format!(" ({})", a.unfinished.join(", ")),
            }
        );
        for d in &a.damage {
            s.push_str(&format!("DAMAGE     {d}\n"));
        }
        for d in &self.drift {
            s.push_str(&format!(
                "sample     {}: {} read again, {} differ, {} failed{}\n",
                d.kind,
                d.sampled,
                d.differ.len(),
                d.failed,
                d.csv
                    .as_ref()
                    .map(|c| format!(" (listed in {c})"))
                    .unwrap_or_default()
            ));
            for m in &d.differ {
                s.push_str(&format!("DRIFT      {m}\n"));
            }
        }
        s.push_str(match self.exit_code() {
            0 => "verdict    sound\n",
            3 => "verdict    the lake is whole; some messages differ from the API now (drift)\n",
            _ => "verdict    DAMAGED\n",
        });
        s
    }

    /// The JSON summary line.
    pub(crate) fn json(&self) -> String {
        let a = &self.audit;
        serde_json::json!({
            "command": "verify",
            "exit": self.exit_code(),
            "tables": a.tables,
            "files": a.files,
            "hashed": a.hashed,
            "runs": a.runs,
            "dropped": a.dropped,
            "unfinished": a.unfinished,
            "damage": a.damage,
            "drift": self.drift,
        })
        .to_string()
    }
}

/// Verify the lake, and with a sample, the app's known messages against the API.
pub(crate) async fn run(
    lake: std::sync::Arc<dyn LakeStore>,
    plan: &VerifyPlan,
    stop: StopSignal,
    tell: &(dyn Fn(String) + Sync),
) -> Result<Verdict, VerifyError> {
    let delta = DeltaLake::open(lake.table_root()?).map_err(WriteError::Io)?;
    let audit = audit::audit(lake.as_ref(), &delta, tell)?;
    if audit.tables == 0 && audit.runs == 0 && audit.damage.is_empty() {
        return Err(VerifyError::NotALake(lake.display("")));
    }
    let mut verdict = Verdict {
        audit,
        drift: Vec::new(),
    };
    if let Some(sample) = &plan.sample {
        for kind in Kind::ALL {
            let picked = pick(lake.as_ref(), &delta, kind, sample)?;
            if picked.is_empty() {
                continue;
            }
            tell(format!(
                "reading {} {} messages again",
                picked.len(),
                kind.spec().name()
            ));
            let drift = compare(lake.as_ref(), &delta, kind, sample, picked, stop.clone()).await?;
            verdict.drift.push(drift);
        }
    }
    Ok(verdict)
}

/// The app's known messages the sample takes (ok or not found).
fn pick(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    plan: &SamplePlan,
) -> Result<Vec<MessageId>, WriteError> {
    // A count keeps the smallest fingerprints (at most twice the count held).
    let mut first: Vec<(u128, MessageId)> = Vec::new();
    let mut out = Vec::new();
    let keep = |v: &mut Vec<(u128, MessageId)>, n: usize| {
        if v.len() > n {
            v.select_nth_unstable_by_key(n, |e| e.0);
            v.truncate(n);
        }
    };
    audit::current_messages(lake, delta, kind, plan.api.sdkappid, |id, _| {
        let fp = id.state_fingerprint();
        match plan.sample {
            Sample::Count(n) => {
                first.push((fp, id));
                if first.len() >= 2 * n {
                    keep(&mut first, n);
                }
            }
            s if s.takes(fp) => out.push(id),
            _ => {}
        }
    })?;
    if let Sample::Count(n) = plan.sample {
        keep(&mut first, n);
    }
    out.extend(first.into_iter().map(|(_, id)| id));
    Ok(out)
}

/// Read the picked messages in full (an export into a folder of its own)
/// and compare them with the current tables.
async fn compare(
    lake: &dyn LakeStore,
    delta: &DeltaLake,
    kind: Kind,
    plan: &SamplePlan,
    picked: Vec<MessageId>,
    stop: StopSignal,
) -> Result<Drift, VerifyError> {
    let work = Scratch::new()?;
    let input = work.0.join("sample.csv");
    crate::write::write_input_list(&input, kind, &picked)?;
    let fresh_lake = work.0.join("lake");
    let export = ExportPlan {
        input,
        out: crate::write::Out::Dir(fresh_lake.clone()),
        state_dir: work.0.join("state"),
        format: crate::write::Format::Parquet,
        table_format: crate::write::TableFormat::Plain,
        api: plan.api.clone(),
        concurrency: None,
        run_id: Some("verify".into()),
        quiet: true,
        strict_input: false,
        write: crate::write::WriteOptions::default(),
        full: crate::table::FullReads {
            always: true,
            every: None,
        },
        changed: None,
    };
    let ui = Ui {
        progress: crate::report::ProgressMode::Off,
    };
    crate::export::run(export, ui, Tuning::default(), stop).await?;
    let fresh = Fresh::read(&fresh_lake, kind)?;
    let wanted: HashSet<u128> = picked.iter().map(|id| id.state_fingerprint()).collect();
    let stored = audit::current_pairs(lake, delta, kind, plan.api.sdkappid, &wanted)?;
    let mut statuses: HashMap<u128, String> = HashMap::new();
    audit::current_messages(lake, delta, kind, plan.api.sdkappid, |id, status| {
        let fp = id.state_fingerprint();
        if wanted.contains(&fp) {
            statuses.insert(fp, status.to_owned());
        }
    })?;
    let mut drift = Drift {
        kind: kind.spec().name().to_owned(),
        sampled: picked.len(),
        ..Drift::default()
    };
    let mut differ = Vec::new();
    for id in picked {
        let fp = id.state_fingerprint();
        let now = fresh.of(fp);
        let before = (statuses.get(&fp).map(String::as_str), stored.get(&fp));
        match differs(now, before) {
            None => drift.failed += 1,
            Some(true) => differ.push(id),
            Some(false) => {}
        }
    }
    drift.differ = differ.iter().map(|id| id.to_string()).collect();
    if !differ.is_empty() {
        let csv = plan
            .drift_dir
            .join(format!("drift-{}.csv", kind.spec().name()));
        crate::write::write_input_list(&csv, kind, &differ)?;
        drift.csv = Some(csv.display().to_string());
    }
    Ok(drift)
}

/// What a full read gives a message now: its status, and its pairs when found.
type Now<'a> = (Option<&'a str>, Option<&'a Pairs>);

/// Whether the message differs (`None`: its read failed, nothing to say).
fn differs(now: Now<'_>, (status, pairs): (Option<&str>, Option<&Pairs>)) -> Option<bool> {
    let empty = Pairs::new();
    match now.0? {
        "ok" => Some(status != Some("ok") || now.1.unwrap_or(&empty) != pairs.unwrap_or(&empty)),
        "not_found" => Some(status != Some("not_found") || pairs.is_some_and(|p| !p.is_empty())),
        _ => None,
    }
}

/// The sample's full read, from its plain folder.
struct Fresh {
    status: HashMap<u128, String>,
    pairs: HashMap<u128, Pairs>,
}

impl Fresh {
    fn read(root: &Path, kind: Kind) -> Result<Fresh, WriteError> {
        let lake = crate::write::LocalDir::new(root);
        let [kv, messages] = kind.spec().tables();
        let mut status = HashMap::new();
        for rel in lake
            .list(messages)?
            .iter()
            .filter(|p| p.ends_with(".parquet"))
        {
            for batch in crate::table::read::batches(&lake, rel)? {
                let batch = batch?;
                let s = crate::table::read::strings(&batch, "status")?;
                let fps = crate::table::read::fingerprints(kind, &batch)?;
                for (i, fp) in fps.into_iter().enumerate() {
                    status.insert(fp, s.value(i).to_owned());
                }
            }
        }
        let wanted: HashSet<u128> = status.keys().copied().collect();
        let mut pairs = HashMap::new();
        for rel in lake.list(kv)?.iter().filter(|p| p.ends_with(".parquet")) {
            audit::pairs_of_file(&lake, kind, rel, &wanted, &mut pairs)?;
        }
        Ok(Fresh { status, pairs })
    }

    fn of(&self, fp: u128) -> Now<'_> {
        (
            self.status.get(&fp).map(String::as_str),
            self.pairs.get(&fp),
        )
    }
}

/// A folder of the process's own under the system's temporary folder,
/// removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, WriteError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("msgext-verify-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| WriteError::Path {
            path: dir.clone(),
            source,
        })?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_sizes() {
        let cases = [
            ("all", Some(Sample::All)),
            ("ALL", Some(Sample::All)),
            ("100", Some(Sample::Count(100))),
            ("5%", Some(Sample::Share(5.0))),
            ("0.5%", Some(Sample::Share(0.5))),
            ("100%", Some(Sample::Share(100.0))),
            ("0", None),
            ("0%", None),
            ("101%", None),
            ("-3", None),
            ("some", None),
        ];
        for (text, want) in cases {
            assert_eq!(Sample::parse(text), want, "{text}");
        }
        assert!(Sample::Share(100.0).takes(u128::MAX));
        let taken = (0..10_000u128)
            .filter(|i| {
                Sample::Share(10.0).takes(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
            })
            .count();
        assert!((800..1200).contains(&taken), "{taken} of 10,000 at 10%");
    }

    #[test]
    fn a_message_differs_when_its_status_or_pairs_do() {
        let p = |kv: &[(&str, &str, i64)]| -> Pairs {
            kv.iter()
                .map(|(k, v, s)| (k.to_string(), (v.to_string(), *s)))
                .collect()
        };
        let a = p(&[("k", "v", 1)]);
        let b = p(&[("k", "w", 2)]);
        let none = Pairs::new();
        type Case<'a> = (Now<'a>, (Option<&'a str>, Option<&'a Pairs>), Option<bool>);
        let cases: [Case; 9] = [
            ((Some("ok"), Some(&a)), (Some("ok"), Some(&a)), Some(false)),
            ((Some("ok"), Some(&a)), (Some("ok"), Some(&b)), Some(true)),
            ((Some("ok"), None), (Some("ok"), None), Some(false)),
            ((Some("ok"), None), (Some("ok"), Some(&none)), Some(false)),
            ((Some("ok"), Some(&a)), (Some("ok"), None), Some(true)),
            (
                (Some("ok"), Some(&a)),
                (Some("not_found"), None),
                Some(true),
            ),
            (
                (Some("not_found"), None),
                (Some("not_found"), None),
                Some(false),
            ),
            (
                (Some("not_found"), None),
                (Some("ok"), Some(&a)),
                Some(true),
            ),
            ((Some("failed"), None), (Some("ok"), Some(&a)), None),
        ];
        for (i, (now, before, want)) in cases.into_iter().enumerate() {
            assert_eq!(differs(now, before), want, "case {i}");
        }
        // Never read at all (interrupted): nothing to say.
        assert_eq!(differs((None, None), (Some("ok"), Some(&a))), None);
    }
}

//! Which run an export is: a new one, or the newest unfinished run of the
//! same input that it resumes; the state folder's lock, and the run's claim
//! in the lake (`_runs/R/_CLAIM`) that keeps two exports off one run.

use super::{ExportError, ExportPlan, io_err};
use crate::write::LakeStore;
use std::path::Path;

/// The run id derived from its start time: sortable, UTC, to the
/// millisecond, with a random suffix so that two runs never share one; the
/// leading `r` keeps readers from taking the Hive `run_id` column for a date
/// or a number.
pub(crate) fn default_run_id(t: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "r{}-{:04x}",
        t.format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u16>()
    )
}

/// What `run.json` records for a run of `plan` on this input.
pub(super) fn run_meta(
    plan: &ExportPlan,
    scan: &crate::input::Prescan,
    started: chrono::DateTime<chrono::Utc>,
) -> crate::ledger::RunMeta {
    crate::ledger::RunMeta {
        v: crate::ledger::FORMAT_VERSION,
        run_id: String::new(),
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        dt: started.format("%Y-%m-%d").to_string(),
        format: plan.format.extension().to_owned(),
        input: plan.input.display().to_string(),
        input_bytes: scan.bytes,
        input_sha256: scan.sha256.clone(),
        endpoint: plan.api.base_url.clone(),
        sdkappid: plan.api.sdkappid,
        out: lake_identity(&plan.out),
    }
}

/// The lake as `run.json` records it: a URL, or the folder as an absolute
/// path (symbolic links resolved where it exists), so that `lake`,
/// `./lake` and `/home/u/lake` are one lake.
fn lake_identity(out: &crate::write::Out) -> String {
    match out {
        crate::write::Out::Url(u) => u.clone(),
        crate::write::Out::Dir(d) => std::fs::canonicalize(d)
            .or_else(|_| std::path::absolute(d))
            .unwrap_or_else(|_| d.clone())
            .display()
            .to_string(),
    }
}

/// The newest run in the state folder that did not finish and that
/// `wanted` may resume.
pub(super) fn unfinished_run(
    lake: &dyn LakeStore,
    state_dir: &Path,
    wanted: &crate::ledger::RunMeta,
) -> Result<Option<String>, ExportError> {
    let Ok(runs) = std::fs::read_dir(state_dir) else {
        return Ok(None);
    };
    let mut candidates: Vec<crate::ledger::RunMeta> = runs
        .flatten()
        .filter_map(|e| crate::ledger::RunMeta::load(&e.path()).ok().flatten())
        .filter(|m| m.differences(wanted).is_empty())
        .collect();
    candidates.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    for m in candidates {
        if !lake.exists(&format!("_runs/{}/_SUCCESS", m.run_id))? {
            return Ok(Some(m.run_id));
        }
    }
    Ok(None)
}

/// The line a run starts with: the run it resumes, or the lake's
/// unfinished runs it does not.
pub(super) fn tell_start(
    opened: &OpenedRun,
    run_id: &str,
    others: &[String],
    out: &crate::write::Out,
) {
    match opened.resumed {
        true => eprintln!(
            "msgext: resuming run {run_id} (started {}; {} messages already settled)",
            opened.meta.started_at,
            opened.recovered.resumed()
        ),
        false => note_unfinished_runs(others, out),
    }
}

/// A state folder that cannot be written is told as such (which folder,
/// why, and the setting that chooses it), not as a lock problem.
pub(super) fn unwritable_state(e: crate::ledger::LockError, state_dir: &Path) -> ExportError {
    use crate::ledger::{LedgerError, LockError};
    match e {
        LockError::Io(LedgerError::Io { source, .. }) => {
            ExportError::Lake(crate::write::WriteError::Unwritable {
                what: "the state folder (lock, run.json, write-ahead log)",
                path: state_dir.to_owned(),
                setting: "--state-dir (by default OUT/_runs for a folder)",
                source,
            })
        }
        e => ExportError::Busy(e),
    }
}

/// What `open_run` hands back: the run's fixed identity, and what an
/// earlier attempt left.
pub(super) struct OpenedRun {
    pub(super) meta: crate::ledger::RunMeta,
    pub(super) files: crate::ledger::RunFiles,
    pub(super) recovered: crate::ledger::Recovered,
    /// An earlier attempt of this run exists.
    pub(super) resumed: bool,
}

/// With the folder lock held: refuse a completed run or one started with
/// another input or settings, load or create `run.json`, claim the run id in
/// the lake, and recover what an earlier attempt of this run left.
pub(super) fn open_run(
    lake: &dyn LakeStore,
    run_id: &str,
    run_dir: &Path,
    wanted: &crate::ledger::RunMeta,
) -> Result<OpenedRun, ExportError> {
    let success = format!("_runs/{run_id}/_SUCCESS");
    if lake.exists(&success)? {
        return Err(ExportError::AlreadyComplete {
            run_id: run_id.to_owned(),
            path: lake.display(&success),
        });
    }
    let (meta, resumed) = match crate::ledger::RunMeta::load(run_dir)? {
        Some(meta) => {
            let differs = meta.differences(wanted);
            if !differs.is_empty() {
                return Err(ExportError::Usage(format!(
                    "run {run_id} cannot be resumed: {}; resume it with what it was started with, or give a new --run-id",
                    differs.join("; ")
                )));
            }
            (meta, true)
        }
        None => {
            // The claim is won before anything a later run would resume is
            // written: a refused claim leaves nothing behind.
            std::fs::create_dir_all(run_dir).map_err(|e| io_err(run_dir, e))?;
            let meta = crate::ledger::RunMeta {
                run_id: run_id.to_owned(),
                ..wanted.clone()
            };
            if let Err(e) = claim_run(lake, run_id, run_dir, &meta.started_at) {
                let _ = std::fs::remove_file(run_dir.join(CLAIM_COPY));
                let _ = std::fs::remove_dir(run_dir);
                return Err(e);
            }
            meta.save(run_dir)?;
            (meta, false)
        }
    };
    if resumed {
        claim_run(lake, run_id, run_dir, &meta.started_at)?;
    }
    let (files, recovered) = crate::ledger::RunFiles::open(lake, run_dir)?;
    Ok(OpenedRun {
        meta,
        files,
        recovered,
        resumed,
    })
}

/// Claim the run id in the lake: `_runs/<id>/_CLAIM` is created only if
/// absent (a conditional create), and this state folder keeps a copy
/// (`claim.json`, written first). A later attempt finds its own claim and
/// goes on; an export elsewhere with another claim is refused, so that two
/// machines never both write one run.
fn claim_run(
    lake: &dyn LakeStore,
    run_id: &str,
    run_dir: &Path,
    started_at: &str,
) -> Result<(), ExportError> {
    let local = run_dir.join(CLAIM_COPY);
    let mine = match std::fs::read(&local) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let state = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_owned());
            let claim = serde_json::json!({
                "run_id": run_id,
                "host": hostname(),
                "pid": std::process::id(),
                "state": state.display().to_string(),
                "started_at": started_at,
                "token": format!("{:032x}", rand::random::<u128>()),
            });
            let mut bytes = serde_json::to_vec_pretty(&claim).unwrap_or_default();
            bytes.push(b'\n');
            crate::write::write_atomically(&local, &bytes)?;
            bytes
        }
        Err(e) => return Err(io_err(&local, e)),
    };
    let rel = format!("_runs/{run_id}/_CLAIM");
    if lake.create(&rel, &mine)? {
        return Ok(());
    }
    match lake.get(&rel)? {
        Some(theirs) if theirs == mine => Ok(()),
        theirs => {
            let holder = theirs
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .map(|v| {
                    format!(
                        "host {}, pid {}, state folder {}, started {}",
                        v["host"].as_str().unwrap_or("?"),
                        v["pid"],
                        v["state"].as_str().unwrap_or("?"),
                        v["started_at"].as_str().unwrap_or("?")
                    )
                })
                .unwrap_or_else(|| "unreadable claim".to_owned());
            Err(ExportError::Claimed {
                run_id: run_id.to_owned(),
                holder,
                path: lake.display(&rel),
                lake: lake.display("").trim_end_matches('/').to_owned(),
            })
        }
    }
}

/// The state folder's copy of the run's claim in the lake.
const CLAIM_COPY: &str = "claim.json";

/// One line when the lake holds unfinished runs that this new run does not
/// resume (another input, another state folder): their rows are in the
/// folder, and a plain `SELECT *` counts them.
fn note_unfinished_runs(others: &[String], out: &crate::write::Out) {
    if let Some(first) = others.first() {
        let lake = crate::report::shell_quote(&out.display());
        eprintln!(
            "msgext: note: {lake} holds {} unfinished run(s) that this run does not resume ({}{}); \
             `msgext runs --out {lake}` lists them, `msgext runs drop {first} --out {lake}` removes one",
            others.len(),
            others
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if others.len() > 3 { ", …" } else { "" }
        );
    }
}

/// This machine's name, for the claim.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

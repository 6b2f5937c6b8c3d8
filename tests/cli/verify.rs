//! `msgext verify`: a sound lake exits 0; changes behind the log (the API
//! moved on, no export since) exit 3 naming exactly the changed messages,
//! listed in a CSV an export takes as --input; a flipped byte in a history
//! file, a missing data file, a run committed twice's extra file exit 1
//! naming them; a vacuumed lake (old runs dropped) is still sound; the
//! lake is never written.

use crate::common::changed::Nights;
use crate::common::listener::APP;
use crate::common::{files_on_disk, live_files, run_msgext, show};
use msgext::kind::MessageId;
use msgext::mock::DEMO_SECRET_KEY;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `msgext verify --out LAKE` with `extra`, exit `want`; (report, JSON line).
async fn verify(
    out: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    want: i32,
) -> (String, serde_json::Value) {
    let mut args = vec![
        "verify".to_owned(),
        "--out".into(),
        out.to_string_lossy().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = run_msgext(args, DEMO_SECRET_KEY, env).await;
    assert_eq!(o.status.code(), Some(want), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no report: {}", show(&o)));
    let json = serde_json::from_str(last).unwrap();
    (stdout, json)
}

/// Every file of a folder with its bytes: to see that nothing was written.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_on_disk(dir)
        .into_keys()
        .map(|p| {
            let bytes = std::fs::read(dir.join(&p)).unwrap();
            (p, bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_lake_then_changes_behind_its_log_are_drift_named_exactly() {
    let mut n = Nights::backfill().await;
    let before = snapshot(&n.out);
    let (report, json) = verify(&n.out, &[], &[], 0).await;
    assert!(report.contains("verdict    sound"), "{report}");
    assert_eq!(json["runs"], 2, "{json}");
    assert_eq!(
        json["tables"], 10,
        "history, current and changes of both kinds: {json}"
    );
    assert_eq!(
        snapshot(&n.out),
        before,
        "verify writes nothing to the lake"
    );

    // The API moves on; no export reads it.
    let events = n.change(500, 0.3).await;
    let changed: BTreeSet<String> = events.iter().map(|e| e.message.to_string()).collect();
    let drift_dir = n.dir.path().join("drift");
    let url = n.server.url();
    let app = APP.to_string();
    let drift_dir_s = drift_dir.to_string_lossy().into_owned();
    let sample = [
        "--sample",
        "all",
        "--endpoint",
        &url,
        "--sdkappid",
        &app,
        "--rate",
        "0",
        "--drift-dir",
        &drift_dir_s,
    ];
    let (report, json) = verify(&n.out, &sample, &[], 3).await;
    assert!(report.contains("drift"), "{report}");
    let named: BTreeSet<String> = json["drift"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            d["differ"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_owned())
        })
        .collect();
    // Every message whose pairs or status a full read now finds moved is
    // named, and no other (a change may leave a message as it was; a
    // message that vanished sends no callback, yet is drift).
    assert!(!named.is_empty() && !changed.is_empty());
    let moved: BTreeSet<String> = moved_messages(&n);
    assert_eq!(
        named, moved,
        "exactly the messages a full read finds different"
    );
    assert_eq!(
        snapshot(&n.out),
        before,
        "verify --sample writes nothing to the lake"
    );

    // The drift lists are inputs: exporting them makes the lake sound again.
    for (i, kind) in ["one-to-one", "group"].into_iter().enumerate() {
        let csv = drift_dir.join(format!("drift-{kind}.csv"));
        if !csv.exists() {
            continue;
        }
        let args =
            crate::common::export_args(&url, &csv, &n.out, "parquet", &format!("repair{i}"), 4);
        let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    }
    verify(&n.out, &sample, &[], 0).await;
    // A count: that many messages read.
    let (_, json) = verify(
        &n.out,
        &[
            "--sample",
            "7",
            "--endpoint",
            &url,
            "--sdkappid",
            &app,
            "--rate",
            "0",
        ],
        &[],
        0,
    )
    .await;
    let sampled: u64 = json["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["sampled"].as_u64().unwrap())
        .sum();
    assert_eq!(sampled, 14, "7 of each kind: {json}");
}

/// The messages whose current rows differ from what the simulator holds now.
fn moved_messages(n: &Nights) -> BTreeSet<String> {
    let (c2c, group) = n.current();
    let mut out = BTreeSet::new();
    for m in &n.store.messages {
        let differs = match &m.id {
            MessageId::OneToOne(r) => {
                let want_c2c = crate::common::expected_rows(std::iter::once(m));
                let have: Vec<_> = c2c
                    .iter()
                    .filter(|k| k.to == r.to && k.msg_key == r.msg_key)
                    .cloned()
                    .collect();
                have != want_c2c
            }
            MessageId::Group(g) => {
                let want_group = crate::common::expected_group_rows(std::iter::once(m));
                let have: Vec<_> = group
                    .iter()
                    .filter(|k| k.group_id == g.group_id && k.msg_seq == g.msg_seq)
                    .cloned()
                    .collect();
                have != want_group
            }
        };
        if differs {
            out.insert(m.id.to_string());
        }
    }
    // Messages that vanished (no callback tells it): found at the backfill, not found now.
    let stored: BTreeSet<String> = n.store.messages.iter().map(|m| m.id.to_string()).collect();
    out.extend(
        crate::common::changed::ids()
            .iter()
            .map(|id| id.to_string())
            .filter(|id| !stored.contains(id)),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_a_missing_file_and_a_vacuumed_lake() {
    let n = Nights::backfill().await;
    let lake = n.dir.path().join("copy");
    copy_tree(&n.out, &lake);

    // A flipped byte in a history file: named, exit 1.
    let kv = lake.join("key_values");
    let (path, _) = live_files(&kv).into_iter().next().unwrap();
    let file = kv.join(&path);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let (report, json) = verify(&lake, &[], &[], 1).await;
    assert!(
        report.contains("DAMAGE") && report.contains(&path) && report.contains("changed since"),
        "{report}"
    );
    assert_eq!(json["damage"].as_array().unwrap().len(), 1, "{json}");

    // A missing data file of a current table: named, exit 1.
    copy_tree(&n.out, &lake);
    let cur = lake.join("current_messages");
    let (path, _) = live_files(&cur).into_iter().next().unwrap();
    std::fs::remove_file(cur.join(&path)).unwrap();
    let (report, _) = verify(&lake, &[], &[], 1).await;
    assert!(
        report.contains(&path) && report.contains("missing"),
        "{report}"
    );

    // A file of a finished run not in its manifest (added to the log by hand): exit 1.
    copy_tree(&n.out, &lake);
    let manifest = lake.join("_runs/backfill0/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["files"]
        .as_array_mut()
        .unwrap()
        .retain(|f| !f["path"].as_str().unwrap().starts_with("messages/"));
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let (report, _) = verify(&lake, &[], &[], 1).await;
    assert!(
        report.contains("not in its manifest") && report.contains("backfill0"),
        "{report}"
    );

    // Vacuumed, old runs dropped: still sound.
    copy_tree(&n.out, &lake);
    let later = [("MSGEXT_TEST_VACUUM_DAYS_AHEAD", "100")];
    let args: Vec<String> = [
        "vacuum",
        "--out",
        &lake.to_string_lossy(),
        "--keep-history",
        "90d",
        "--retain",
        "0h",
        "--force",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let o = run_msgext(args, DEMO_SECRET_KEY, &later).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let (_, json) = verify(&lake, &[], &[], 0).await;
    assert!(json["dropped"].as_u64().unwrap() >= 4, "{json}");
}

/// `msgext verify` with `args` exits 2 saying `text`.
async fn refused(args: &[&str], text: &str) {
    let args: Vec<String> = std::iter::once("verify")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(show(&o).contains(text), "{}", show(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_string_lossy().into_owned();
    refused(&["--out", &out], "no msgext table").await;
    for sample in ["0", "150%", "some"] {
        let api = ["--sdkappid", "1", "--endpoint", "http://127.0.0.1:9"];
        refused(
            &[&["--out", &out, "--sample", sample][..], &api].concat(),
            "--sample",
        )
        .await;
    }
    refused(&["--out", &out, "--sample", "10"], "--sdkappid").await;
}

/// `to` made a copy of `from` (emptied first).
fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let mut dirs = vec![from.to_owned()];
    while let Some(d) = dirs.pop() {
        let target = to.join(d.strip_prefix(from).unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            match e.file_type().unwrap().is_dir() {
                true => dirs.push(e.path()),
                false => {
                    std::fs::copy(e.path(), target.join(e.file_name())).unwrap();
                }
            }
        }
    }
}

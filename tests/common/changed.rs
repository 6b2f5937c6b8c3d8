//! A lake through nights of changes for `export --changed`: a store of
//! both kinds backfilled, changes with their callbacks, the simulator
//! serving each night's store, the current tables compared with a full read.

use super::listener::APP;
use super::{GroupKvRow, KvRow, expected_group_rows, expected_rows, run_msgext, show, start_mock};
use msgext::kind::{GroupMessageRef, Kind, MessageId, MessageRef};
use msgext::mock::store::Store;
use msgext::mock::{DEMO_SECRET_KEY, Faults, MockServer};
use std::collections::HashSet;
use std::path::PathBuf;

pub struct Nights {
    pub dir: tempfile::TempDir,
    pub out: PathBuf,
    pub store: Store,
    pub server: MockServer,
}

/// 40 one-to-one messages, 20 group messages.
pub fn ids() -> Vec<MessageId> {
    let mut ids: Vec<MessageId> = (0..40)
        .map(|i| MessageRef::new(Some("s"), &format!("u{i}"), &format!("{i}_1_1")).into())
        .collect();
    ids.extend((1..=20).map(|i| GroupMessageRef::new(&format!("@TGS#g{}", i % 4), i).into()));
    ids
}

impl Nights {
    /// The store, and a first export of every message of both kinds.
    pub async fn backfill() -> Nights {
        let store = Store::generate(&ids(), 11, 0);
        let server = start_mock(store.clone(), Faults::default(), 1).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("lake");
        let n = Nights {
            dir,
            out,
            store,
            server,
        };
        for (i, kind) in [Kind::OneToOne, Kind::Group].into_iter().enumerate() {
            let input = n.dir.path().join(format!("all{i}.csv"));
            std::fs::write(&input, n.store.input_csv(kind)).unwrap();
            let args = crate::common::export_args(
                &n.server.url(),
                &input,
                &n.out,
                "parquet",
                &format!("backfill{i}"),
                8,
            );
            let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
            assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        }
        n
    }

    /// `export --changed` (with `extra`), exit 0; its stderr.
    pub async fn changed(&self, extra: &[&str]) -> String {
        self.changed_env(extra, &[], Some(0)).await
    }

    /// `export --changed` with `extra` flags and `env`, ending with `want`
    /// (none: killed); its stderr.
    pub async fn changed_env(
        &self,
        extra: &[&str],
        env: &[(&str, &str)],
        want: Option<i32>,
    ) -> String {
        let mut args: Vec<String> = [
            "export",
            "--changed",
            "--out",
            &self.out.to_string_lossy(),
            "--endpoint",
            &self.server.url(),
            "--sdkappid",
            &APP.to_string(),
            "--rate",
            "0",
            "--concurrency",
            "8",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = run_msgext(args, DEMO_SECRET_KEY, env).await;
        assert_eq!(o.status.code(), want, "{}", show(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// A night of changes to `share` of the messages, served from now on;
    /// their callbacks.
    pub async fn change(
        &mut self,
        seed: u64,
        share: f64,
    ) -> Vec<msgext::api::callback::ExtensionEvent> {
        let changes = self.store.random_changes(seed, share);
        let events = self.store.apply_with_events(&changes, 1_764_688_415_000);
        self.server = start_mock(self.store.clone(), Faults::default(), 1).await;
        events
    }

    /// Messages the simulator was called for since it started.
    pub fn called(&self) -> HashSet<MessageId> {
        (0..self.store.messages.len())
            .filter(|&i| self.server.stats().calls_for(i) > 0)
            .map(|i| self.store.messages[i].id.clone())
            .collect()
    }

    /// Current pairs by message, for both kinds: (one-to-one, group).
    pub fn current(&self) -> (Vec<KvRow>, Vec<GroupKvRow>) {
        let c2c = crate::common::local_delta_batches(&self.out.join("current_key_values"))
            .iter()
            .flat_map(crate::common::kv_rows_of)
            .collect::<Vec<_>>();
        let group = crate::common::local_delta_batches(&self.out.join("current_group_key_values"))
            .iter()
            .flat_map(crate::common::group_kv_rows_of)
            .collect::<Vec<_>>();
        (sorted(c2c), sorted(group))
    }

    /// The current tables hold a full read of the messages `only` names (all: none).
    pub fn assert_full_read(&self, only: Option<&HashSet<MessageId>>, what: &str) {
        let keep = |id: &MessageId| only.is_none_or(|o| o.contains(id));
        let (c2c, group) = self.current();
        let c2c: Vec<KvRow> = c2c
            .into_iter()
            .filter(|r| keep(&MessageRef::new(Some("s"), &r.to, &r.msg_key).into()))
            .collect();
        let group: Vec<GroupKvRow> = group
            .into_iter()
            .filter(|r| keep(&GroupMessageRef::new(&r.group_id, r.msg_seq).into()))
            .collect();
        let stored = self.store.messages.iter().filter(|m| keep(&m.id));
        let (one, other): (Vec<_>, Vec<_>) =
            stored.partition(|m| matches!(m.id, MessageId::OneToOne(_)));
        assert_eq!(c2c, expected_rows(one), "{what}: one-to-one");
        assert_eq!(group, expected_group_rows(other), "{what}: group");
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The current pairs of both kinds by (message, key): (value, Seq). A
/// message is named without its sender (`c2c:to/msg_key`, `group:id/seq`).
pub type PairMap = std::collections::BTreeMap<(String, String), (String, i64)>;

/// A row of a changes table: (change, old value, old Seq, new value, new Seq).
pub type ChangeMap = std::collections::BTreeMap<
    (String, String),
    (
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    ),
>;

impl Nights {
    pub fn pairs(&self) -> PairMap {
        let (c2c, group) = self.current();
        let mut m = PairMap::new();
        for r in c2c {
            m.insert(
                (format!("c2c:{}/{}", r.to, r.msg_key), r.key),
                (r.value, r.seq),
            );
        }
        for r in group {
            m.insert(
                (format!("group:{}/{}", r.group_id, r.msg_seq), r.key),
                (r.value, r.seq),
            );
        }
        m
    }

    /// The rows of both changes tables of the runs not in `seen` (then added to it).
    pub fn new_changes(&self, seen: &mut HashSet<String>) -> ChangeMap {
        use arrow_array::Array;
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int64Type;
        let mut out = ChangeMap::new();
        let mut runs = HashSet::new();
        for (table, group) in [
            ("key_value_changes", false),
            ("group_key_value_changes", true),
        ] {
            let path = self.out.join(table);
            if !path.join("_delta_log").exists() {
                continue;
            }
            for b in super::local_delta_batches(&path) {
                let text = |n: &str, i: usize| {
                    let a = b.column_by_name(n).unwrap().as_string::<i32>();
                    a.is_valid(i).then(|| a.value(i).to_owned())
                };
                let int = |n: &str, i: usize| {
                    let a = b.column_by_name(n).unwrap().as_primitive::<Int64Type>();
                    a.is_valid(i).then(|| a.value(i))
                };
                for i in 0..b.num_rows() {
                    let run = text("run_id", i).unwrap();
                    if seen.contains(&run) {
                        continue;
                    }
                    runs.insert(run);
                    let id = match group {
                        false => format!(
                            "c2c:{}/{}",
                            text("to_account", i).unwrap(),
                            text("msg_key", i).unwrap()
                        ),
                        true => format!(
                            "group:{}/{}",
                            text("group_id", i).unwrap(),
                            int("msg_seq", i).unwrap()
                        ),
                    };
                    let row = (
                        text("change", i).unwrap(),
                        text("old_value", i),
                        int("old_seq", i),
                        text("new_value", i),
                        int("new_seq", i),
                    );
                    let key = (id, text("key", i).unwrap());
                    assert!(
                        out.insert(key.clone(), row).is_none(),
                        "{key:?} changed twice by one night's runs"
                    );
                }
            }
        }
        seen.extend(runs);
        out
    }
}

/// What changed between two states of the current pairs, as the changes
/// table should tell it.
pub fn difference(before: &PairMap, after: &PairMap) -> ChangeMap {
    let mut out = ChangeMap::new();
    for k in before.keys().chain(after.keys()) {
        let (old, new) = (before.get(k), after.get(k));
        let change = match (old, new) {
            (None, Some(_)) => "insert",
            (Some(_), None) => "delete",
            (Some(o), Some(n)) if o != n => "update",
            _ => continue,
        };
        out.insert(
            k.clone(),
            (
                change.to_owned(),
                old.map(|o| o.0.clone()),
                old.map(|o| o.1),
                new.map(|n| n.0.clone()),
                new.map(|n| n.1),
            ),
        );
    }
    out
}

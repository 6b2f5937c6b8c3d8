//! `export --changed`: nights of changes whose callbacks reach a listener
//! (a tenth lost, some twice, the listener killed once) keep the current
//! tables equal to a full read for every message a callback named, call
//! only those and the sweep's share, and after K quiet runs every known
//! message equals a full read. Both kinds.

use crate::common::listener::{self, APP};
use crate::common::{
    GroupKvRow, KvRow, expected_group_rows, expected_rows, run_msgext, show, start_mock,
};
use msgext::kind::{GroupMessageRef, Kind, MessageId, MessageRef};
use msgext::mock::store::Store;
use msgext::mock::{DEMO_SECRET_KEY, Faults, MockServer};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const K: u32 = 3;

struct Nights {
    dir: tempfile::TempDir,
    out: PathBuf,
    store: Store,
    server: MockServer,
}

fn ids() -> Vec<MessageId> {
    let mut ids: Vec<MessageId> = (0..40)
        .map(|i| MessageRef::new(Some("s"), &format!("u{i}"), &format!("{i}_1_1")).into())
        .collect();
    ids.extend((1..=20).map(|i| GroupMessageRef::new(&format!("@TGS#g{}", i % 4), i).into()));
    ids
}

impl Nights {
    /// The store, and a first export of every message of both kinds.
    async fn backfill() -> Nights {
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
    async fn changed(&self, extra: &[&str]) -> String {
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
        let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// A night of changes to `share` of the messages, served from now on;
    /// their callbacks.
    async fn change(
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
    fn called(&self) -> HashSet<MessageId> {
        (0..self.store.messages.len())
            .filter(|&i| self.server.stats().calls_for(i) > 0)
            .map(|i| self.store.messages[i].id.clone())
            .collect()
    }

    /// Current pairs by message, for both kinds: (one-to-one, group).
    fn current(&self) -> (Vec<KvRow>, Vec<GroupKvRow>) {
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
    fn assert_full_read(&self, only: Option<&HashSet<MessageId>>, what: &str) {
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

fn state(dir: &Path) -> PathBuf {
    listener::state(dir, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nights_of_callbacks_keep_what_they_name_a_full_read_and_the_sweep_the_rest() {
    let mut n = Nights::backfill().await;
    // Already exported: nothing new, no sweep: nothing is called.
    let err = n.changed(&["--sweep-runs", "0"]).await;
    assert!(err.contains("nothing to read"), "{err}");
    for night in 1..=3u64 {
        let events = n.change(100 + night, 0.3).await;
        let l = listener::start(&n.out, &state(n.dir.path()), &["--commit-every", "1h"], &[]);
        let mut delivery = l.delivery();
        (delivery.loss, delivery.twice, delivery.seed) = (0.1, 0.1, night);
        let d = msgext::mock::callbacks::deliver(&delivery, &events).await;
        assert!(
            d.lost > 0 || events.len() < 10,
            "night {night}: {}",
            d.one_line()
        );
        let l = match night {
            // Killed once: what it acknowledged is committed by the next start.
            2 => {
                l.signal("-KILL").await;
                listener::start(&n.out, &state(n.dir.path()), &[], &[])
            }
            _ => l,
        };
        l.stop().await;
        let named: HashSet<MessageId> = d
            .arrived
            .iter()
            .map(|&i| events[i].message.clone())
            .collect();
        let err = n.changed(&["--sweep-runs", &K.to_string()]).await;
        n.assert_full_read(Some(&named), &format!("night {night}"));
        // Calls went to the named messages and the sweep's share of each kind only.
        let called = n.called();
        let sweep = 40usize.div_ceil(K as usize) + 20usize.div_ceil(K as usize);
        let extra: Vec<_> = called.difference(&named).collect();
        assert!(
            extra.len() <= sweep,
            "night {night}: {} calls beyond the callbacks:\n{err}",
            extra.len()
        );
        let stored: HashSet<&MessageId> = n.store.messages.iter().map(|m| &m.id).collect();
        for id in named.iter().filter(|id| stored.contains(id)) {
            assert!(
                called.contains(id),
                "night {night}: {id} named by a callback but not read"
            );
        }
    }
    // K quiet runs: every known message is read once more, and equals a full read.
    n.server = start_mock(n.store.clone(), Faults::default(), 1).await;
    for _ in 0..K {
        n.changed(&["--sweep-runs", &K.to_string()]).await;
    }
    n.assert_full_read(None, "after K quiet runs");
    let called = n.called();
    assert_eq!(
        called.len(),
        n.store.messages.len(),
        "each known message read once in K runs"
    );
}

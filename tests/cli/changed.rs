//! `export --changed`: nights of changes whose callbacks reach a listener
//! (a tenth lost, some twice, the listener killed once) keep the current
//! tables equal to a full read for every message a callback named, call
//! only those and the sweep's share, and after K quiet runs every known
//! message equals a full read. Both kinds.

use crate::common::changed::{Nights, PairMap, difference};
use crate::common::listener;
use crate::common::start_mock;
use msgext::kind::MessageId;
use msgext::mock::Faults;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const K: u32 = 3;

fn state(dir: &Path) -> PathBuf {
    listener::state(dir, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nights_of_callbacks_keep_what_they_name_a_full_read_and_the_sweep_the_rest() {
    let mut n = Nights::backfill().await;
    // The backfill inserted every pair.
    let mut seen = HashSet::new();
    assert_eq!(
        n.new_changes(&mut seen),
        difference(&PairMap::new(), &n.pairs())
    );
    let mut changes_seen: HashSet<String> = HashSet::new();
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
        let before = n.pairs();
        let err = n.changed(&["--sweep-runs", &K.to_string()]).await;
        n.assert_full_read(Some(&named), &format!("night {night}"));
        // key_value_changes tells the night's difference, row for row.
        let told = n.new_changes(&mut seen);
        let want = difference(&before, &n.pairs());
        if told != want {
            let differ: Vec<_> = want
                .keys()
                .chain(told.keys())
                .filter(|k| told.get(*k) != want.get(*k))
                .take(3)
                .collect();
            panic!(
                "night {night}: key_value_changes differs from the tables' difference at {differ:?}"
            );
        }
        changes_seen.extend(told.into_values().map(|c| c.0));
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
    assert_eq!(
        changes_seen.len(),
        3,
        "inserts, updates and deletes: {changes_seen:?}"
    );
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

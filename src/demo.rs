//! `msgext demo`: a real export with no account. Starts the simulator on a free
//! port with data matching `sample-input/messages.csv` and
//! `sample-input/group-messages.csv` (embedded in the binary), answering 5%
//! of calls with 10002 so that retries show, exports both kinds into a
//! folder, then discovers the groups' messages of the last 7 days from the
//! simulated history and exports that list too (the nightly pair), and
//! prints the summaries and a DuckDB query for each.

use crate::api::Secret;
use crate::cli::DemoArgs;
use crate::export::ExportPlan;
use crate::export::{self, Tuning, Ui};
use crate::fetch::StopSignal;
use crate::input::{InputItem, InputReader};
use crate::mock::store::{Op, Store};
use crate::mock::{DEMO_SDKAPPID, DEMO_SECRET_KEY, Faults, MockConfig, MockServer};
use crate::model::MessageId;
use crate::report::Summary;
use crate::write::WriteOptions;
use std::path::Path;

/// The demo's inputs, as shipped in `sample-input/`.
pub(crate) const SAMPLE_INPUT: &str = include_str!("../sample-input/messages.csv");
pub(crate) const SAMPLE_GROUP_INPUT: &str = include_str!("../sample-input/group-messages.csv");

/// The seed of the demo data: the same data on every machine.
pub(crate) const DEMO_SEED: u64 = 2026;

/// The use case's messages (polls, reactions, sign-up lists), as shipped
/// in `sample-input/polls.csv`; their store is `sample-input/store.json`
/// (`use_case_store`), which `msgext mock --store` serves.
pub(crate) const POLLS_INPUT: &str = include_str!("../sample-input/polls.csv");

/// The people of the use case's team chat.
const TEAM: [&str; 12] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "oscar",
];

/// Polls, reactions and sign-up lists as an app keeps them in message
/// extensions, each built operation by operation as the service would
/// have applied them (so Seqs, tombstones and ClearSeq are real): a poll
/// holds `poll:question`, `poll:options` and a `vote:<user>` per voter
/// (some changed their vote, some took it back); a message's reactions are
/// `reaction:<emoji>:<user>` (some taken back); a sign-up list holds
/// `signup:<user>` (one list was cleared and started again).
pub(crate) fn use_case_store() -> Store {
    use crate::mock::store::{SplitMix64, StoredMessage};
    let ids = crate::input::InputReader::new(Path::new("polls.csv"), POLLS_INPUT.as_bytes())
        .map(|r| {
            r.filter_map(|item| match item {
                Ok(InputItem::Message(m)) => Some(m.msg),
                _ => None,
            })
            .collect::<Vec<MessageId>>()
        })
        .unwrap_or_default();
    let mut rng = SplitMix64::new(DEMO_SEED);
    let mut pick = |n: usize| rng.below(n as u64) as usize;
    let mut messages = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let mut m = StoredMessage::new(id, 0, Vec::new());
        let ops = match i % 3 {
            0 => poll_ops(i, &mut pick),
            1 => reaction_ops(&mut pick),
            _ => signup_ops(i, &mut pick),
        };
        for op in &ops {
            m.apply(op, crate::mock::store::Deletes::Tombstone);
        }
        messages.push(m);
    }
    Store::new(messages)
}

fn set(key: String, value: &str) -> Op {
    Op::Set {
        key,
        value: value.to_owned(),
    }
}

/// A poll: its question and options, then votes (some changed, some taken back).
fn poll_ops(i: usize, pick: &mut impl FnMut(usize) -> usize) -> Vec<Op> {
    let polls = [
        (
            "Where do we eat on Friday?",
            ["noodles", "dumplings", "pizza"],
        ),
        (
            "Which day for the offsite?",
            ["Tuesday", "Wednesday", "Thursday"],
        ),
        ("Name of the new service?", ["Lark", "Heron", "Kestrel"]),
    ];
    let (question, options) = polls[(i / 3) % polls.len()];
    let mut ops = vec![
        set("poll:question".into(), question),
        set("poll:options".into(), &options.join("|")),
    ];
    for _ in 0..4 + pick(16) {
        let who = TEAM[pick(TEAM.len())];
        match pick(10) {
            // Took the vote back.
            0 => ops.push(Op::Delete {
                key: format!("vote:{who}"),
            }),
            // A vote, or a changed one (the same key again).
            _ => ops.push(set(format!("vote:{who}"), options[pick(options.len())])),
        }
    }
    ops
}

/// Reactions, a few taken back.
fn reaction_ops(pick: &mut impl FnMut(usize) -> usize) -> Vec<Op> {
    let emojis = ["👍", "🎉", "😂", "❤️"];
    let mut ops = Vec::new();
    for _ in 0..3 + pick(20) {
        let key = format!(
            "reaction:{}:{}",
            emojis[pick(emojis.len())],
            TEAM[pick(TEAM.len())]
        );
        match pick(6) {
            0 => ops.push(Op::Delete { key }),
            _ => ops.push(set(key, "1")),
        }
    }
    ops
}

/// A sign-up list; every third one was cleared and started again.
fn signup_ops(i: usize, pick: &mut impl FnMut(usize) -> usize) -> Vec<Op> {
    let mut ops = vec![set("signup:title".into(), "Badminton, Thursday 7 pm")];
    for _ in 0..2 + pick(8) {
        let who = TEAM[pick(TEAM.len())];
        ops.push(set(
            format!("signup:{who}"),
            &format!("{} seat(s)", 1 + pick(3)),
        ));
    }
    if i % 9 == 2 {
        ops.push(Op::Clear);
        ops.push(set(
            "signup:title".into(),
            "Badminton, moved to Friday 7 pm",
        ));
        ops.push(set(
            format!("signup:{}", TEAM[pick(TEAM.len())]),
            "1 seat(s)",
        ));
    }
    ops
}

/// The use case's store as `sample-input/store.json` holds it.
#[cfg(test)]
fn use_case_store_json() -> String {
    let mut text = serde_json::to_string_pretty(&use_case_store()).unwrap_or_default();
    text.push('\n');
    text
}

/// The simulator's store for the sample input: about one message in 30 does
/// not exist (23004), the rest carry 0 to 300 pairs.
pub(crate) fn demo_store() -> Store {
    let read = |name: &str, text: &str| -> Vec<MessageId> {
        InputReader::new(Path::new(name), text.as_bytes())
            .map(|r| {
                r.filter_map(|item| match item {
                    Ok(InputItem::Message(m)) => Some(m.msg),
                    _ => None,
                })
                .collect()
            })
            .unwrap_or_default()
    };
    let mut msgs = read("sample-input/messages.csv", SAMPLE_INPUT);
    msgs.extend(read("sample-input/group-messages.csv", SAMPLE_GROUP_INPUT));
    // The app's history for `discover`: a third of its messages carry
    // extensions, the rest answer with an empty list.
    let history = crate::mock::history::sample(chrono::Utc::now().timestamp(), DEMO_SEED);
    msgs.extend(history.message_ids().step_by(3));
    let mut store = Store::generate(&msgs, DEMO_SEED, 30).with_history(history);
    store.messages.extend(use_case_store().messages);
    store
}

pub(crate) fn demo_mock_config() -> MockConfig {
    MockConfig {
        faults: Faults {
            p_10002: 0.05,
            ..Faults::default()
        },
        seed: DEMO_SEED,
        ..MockConfig::default()
    }
}

/// Run the demo: one export of each kind; returns their summaries.
pub(crate) async fn run(
    args: &DemoArgs,
    ui: Ui,
    stop: StopSignal,
) -> Result<(Vec<Summary>, String), export::ExportError> {
    let server = MockServer::start(demo_store(), demo_mock_config(), ([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| export::ExportError::Output(format!("cannot start the simulator: {e}")))?;
    let input_dir = args.out.join("_demo");
    std::fs::create_dir_all(&input_dir)
        .map_err(|e| export::ExportError::Output(format!("{}: {e}", input_dir.display())))?;
    let mut summaries = Vec::new();
    for (name, text) in [
        ("messages.csv", SAMPLE_INPUT),
        ("polls.csv", POLLS_INPUT),
        ("group-messages.csv", SAMPLE_GROUP_INPUT),
    ] {
        if stop.reason().is_some() {
            break;
        }
        let input = input_dir.join(name);
        std::fs::write(&input, text)
            .map_err(|e| export::ExportError::Output(format!("{}: {e}", input.display())))?;
        let plan = demo_plan(args, input, server.url());
        summaries.push(export::run(plan, ui, Tuning::default(), stop.clone()).await?);
    }
    if stop.reason().is_none() {
        summaries.push(discover_and_export(args, ui, &server.url(), &stop).await?);
    }
    if stop.reason().is_none() && args.format == crate::write::Format::Parquet {
        let (night, server) = a_night_of_callbacks(args, ui, &stop).await?;
        summaries.extend(night);
        return Ok((summaries, server.url()));
    }
    Ok((summaries, server.url()))
}

/// The demo's webhook token (the listener's and the simulator's).
const DEMO_CALLBACK_TOKEN: &str = "msgext-demo-webhook-token";

/// Change capture: a tenth of the messages change (the use case's polls
/// left as shipped); their callbacks go to a listener, a tenth of them
/// lost; `export --changed` reads what they name and the sweep's share.
async fn a_night_of_callbacks(
    args: &DemoArgs,
    ui: Ui,
    stop: &StopSignal,
) -> Result<(Vec<Summary>, MockServer), export::ExportError> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| export::ExportError::Output(format!("{what}: {e}"));
    let mut store = demo_store();
    let kept: std::collections::HashSet<MessageId> = use_case_store()
        .messages
        .into_iter()
        .map(|m| m.id)
        .collect();
    let changes: Vec<_> = (store.random_changes(DEMO_SEED + 1, 0.1).into_iter())
        .filter(|c| !kept.contains(&c.id))
        .collect();
    let events = store.apply_with_events(&changes, chrono::Utc::now().timestamp_millis());
    let server = MockServer::start(store, demo_mock_config(), ([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| fail("cannot start the simulator", &e))?;
    let listening = StopSignal::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let plan = crate::listen::ListenPlan {
        out: crate::write::Out::Dir(args.out.clone()),
        sdkappid: DEMO_SDKAPPID,
        bind: ([127, 0, 0, 1], 0).into(),
        state_dir: args.out.join("_listen"),
        commit_every: std::time::Duration::from_secs(3600),
        token: Some(DEMO_CALLBACK_TOKEN.into()),
        quiet: true,
        store_timeout: crate::write::WriteOptions::default().store_timeout,
    };
    let listener = tokio::spawn(crate::listen::run(plan, listening.clone(), move |a| {
        let _ = tx.send(a);
    }));
    let addr = rx
        .await
        .map_err(|e| fail("the listener did not start", &e))?;
    let delivery = crate::mock::callbacks::Delivery {
        url: format!("http://{addr}/im/callback"),
        token: Some(DEMO_CALLBACK_TOKEN.into()),
        sdkappid: DEMO_SDKAPPID,
        loss: 0.1,
        twice: 0.0,
        seed: DEMO_SEED,
    };
    let delivered = crate::mock::callbacks::deliver(&delivery, &events).await;
    listening.trigger(crate::fetch::StopReason::Interrupted);
    let counters = match listener.await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(fail("the listener", &e)),
        Err(e) => return Err(fail("the listener", &e)),
    };
    eprintln!(
        "msgext demo: a night later: {} changes, their callbacks to `msgext listen` ({}; {} committed to extension_events); now `export --changed`",
        events.len(),
        delivered.one_line(),
        counters
            .committed
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    let plan = export::changed::ChangedPlan {
        base: demo_plan(args, std::path::PathBuf::new(), server.url()),
        sweep_runs: crate::job::DEFAULT_SWEEP_RUNS,
        kinds: crate::kind::Kind::ALL.to_vec(),
        input: None,
    };
    let summaries = export::changed::run(plan, ui, Tuning::default(), stop.clone()).await?;
    Ok((summaries, server))
}

/// The nightly pair: discover the groups' messages of the last 7 days,
/// then export that list.
async fn discover_and_export(
    args: &DemoArgs,
    ui: Ui,
    url: &str,
    stop: &StopSignal,
) -> Result<Summary, export::ExportError> {
    let list = args.out.join("_demo").join("discovered-group-messages.csv");
    let plan = crate::discover::DiscoverPlan {
        api: demo_connection(url.to_owned()),
        source: crate::discover::Source::Groups {
            types: crate::job::group_types(None).unwrap_or_default(),
        },
        since: chrono::Utc::now().timestamp() - crate::job::DEFAULT_SINCE.as_secs() as i64,
        out: crate::discover::ListOut::File(list.clone()),
        quiet: true,
    };
    let tuning = Tuning::default();
    let found = crate::discover::run(
        plan,
        ui.progress,
        tuning.retry,
        tuning.timeout,
        stop.clone(),
    )
    .await
    .map_err(|e| export::ExportError::Output(format!("discover: {e}")))?;
    eprintln!(
        "msgext demo: discovered {} group messages of the last 7 days in {} groups ({} calls) into {}; exporting them",
        found.messages,
        found.sources,
        found.requests,
        list.display()
    );
    let plan = demo_plan(args, list, url.to_owned());
    export::run(plan, ui, Tuning::default(), stop.clone()).await
}

/// The simulator at `url`, as the demo calls it.
pub(crate) fn demo_connection(url: String) -> crate::api::Connection {
    crate::api::Connection {
        base_url: url,
        sdkappid: DEMO_SDKAPPID,
        identifier: "administrator".into(),
        rate: crate::job::DEFAULT_RATE,
        max_attempts: crate::job::DEFAULT_MAX_ATTEMPTS,
        secret: Secret::Key(DEMO_SECRET_KEY.into()),
        give_up_after: std::time::Duration::from_secs_f64(crate::job::DEFAULT_GIVE_UP_MIN * 60.0),
    }
}

/// The export of one demo input against the simulator at `url`.
fn demo_plan(args: &DemoArgs, input: std::path::PathBuf, url: String) -> ExportPlan {
    ExportPlan {
        input,
        out: crate::write::Out::Dir(args.out.clone()),
        state_dir: args.out.join("_runs"),
        format: args.format,
        table_format: match args.format {
            crate::write::Format::Parquet => crate::write::TableFormat::Delta,
            crate::write::Format::Csv => crate::write::TableFormat::Plain,
        },
        api: demo_connection(url),
        concurrency: None,
        run_id: None,
        quiet: false,
        strict_input: false,
        write: WriteOptions::default(),
        full: crate::table::FullReads {
            always: false,
            every: Some(crate::job::DEFAULT_FULL_EVERY),
        },
        changed: None,
    }
}

/// A poll as the current tables hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Poll {
    pub(crate) msg_key: String,
    pub(crate) question: String,
    /// Votes by option, most first.
    pub(crate) votes: Vec<(String, u64)>,
}

impl Poll {
    pub(crate) fn total(&self) -> u64 {
        self.votes.iter().map(|(_, n)| n).sum()
    }
}

/// One question answered from `current_key_values`: the poll with the
/// most votes now (a vote taken back is a pair with an empty value).
pub(crate) fn most_voted_poll(out: &Path) -> Result<Option<Poll>, crate::write::WriteError> {
    use crate::table::read;
    use std::collections::BTreeMap;
    let lake = crate::write::Out::Dir(out.to_owned())
        .open(&out.join("_runs"), WriteOptions::default().store_timeout)?;
    let delta = crate::table::delta::DeltaLake::open(lake.table_root()?)
        .map_err(crate::write::WriteError::Io)?;
    let mut polls: BTreeMap<String, Poll> = BTreeMap::new();
    crate::table::current_pairs(
        &*lake,
        &delta,
        crate::kind::Kind::OneToOne,
        crate::mock::DEMO_SDKAPPID,
        |batch| {
            let msg_key = read::strings(batch, "msg_key")?;
            let (key, value) = (read::strings(batch, "key")?, read::strings(batch, "value")?);
            for i in 0..batch.num_rows() {
                let (k, v) = (key.value(i), value.value(i));
                if k != "poll:question" && !k.starts_with("vote:") {
                    continue;
                }
                let poll = polls.entry(msg_key.value(i).to_owned()).or_default();
                if k == "poll:question" {
                    poll.question = v.to_owned();
                } else if k.starts_with("vote:") && !v.is_empty() {
                    match poll.votes.iter_mut().find(|(o, _)| o == v) {
                        Some((_, n)) => *n += 1,
                        None => poll.votes.push((v.to_owned(), 1)),
                    }
                }
            }
            Ok(())
        },
    )?;
    let best = polls
        .into_iter()
        .filter(|(_, p)| !p.question.is_empty())
        .map(|(msg_key, mut p)| {
            p.msg_key = msg_key;
            p.votes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            p
        })
        .max_by(|a, b| a.total().cmp(&b.total()).then(b.msg_key.cmp(&a.msg_key)));
    Ok(best)
}

/// What to type to look at the demo's result: the Delta tables through
/// DuckDB's `delta_scan`, CSV through `read_csv`.
pub(crate) fn duckdb_hint(out: &Path, format: crate::write::Format) -> String {
    let out = out.display();
    let from = |table: &str| match format {
        crate::write::Format::Parquet => format!("delta_scan('{out}/{table}')"),
        // A CSV null is an empty field and an empty string is "": DuckDB
        // keeps them apart only with allow_quoted_nulls = false.
        crate::write::Format::Csv => format!(
            "read_csv('{out}/{table}/dt=*/run_id=*/*.csv', hive_partitioning=true, allow_quoted_nulls=false)"
        ),
    };
    format!(
        "Look at it with DuckDB:\n  duckdb -c \"SELECT msg_key, count(*) AS pairs, max(latest_seq) AS latest_seq \
         FROM {} GROUP BY msg_key ORDER BY pairs DESC LIMIT 10\"\n  \
         duckdb -c \"SELECT status, count(*) FROM {} GROUP BY status\"\n  \
         duckdb -c \"SELECT group_id, msg_seq, count(*) AS pairs FROM {} \
         GROUP BY ALL ORDER BY pairs DESC LIMIT 10\"\n",
        // With Delta, the latest state; CSV runs are full snapshots.
        from(match format {
            crate::write::Format::Parquet => "current_key_values",
            crate::write::Format::Csv => "key_values",
        }),
        from("messages"),
        from("group_key_values"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example store is the demo's use case, and it holds what
    /// the use case says: polls with one vote a voter, votes changed and
    /// taken back, reactions taken back, a list cleared and started again.
    #[test]
    fn the_example_store_is_the_use_case_the_demo_serves() {
        let shipped = include_str!("../sample-input/store.json");
        assert!(
            shipped == use_case_store_json(),
            "sample-input/store.json is stale: write demo::use_case_store_json() to it"
        );
        let store = Store::load(Path::new("sample-input/store.json")).unwrap();
        assert_eq!(store.messages.len(), 24);
        let live = |m: &crate::mock::store::StoredMessage, prefix: &str| {
            m.live_pairs()
                .into_iter()
                .filter(|p| p.key.starts_with(prefix))
                .collect::<Vec<_>>()
        };
        let polls: Vec<_> = store
            .messages
            .iter()
            .filter(|m| !live(m, "poll:question").is_empty())
            .collect();
        assert_eq!(polls.len(), 8);
        for p in &polls {
            let options = live(p, "poll:options")[0].value.clone();
            for v in live(p, "vote:").iter().filter(|v| !v.value.is_empty()) {
                assert!(options.split('|').any(|o| o == v.value), "{v:?}");
            }
        }
        // A vote changed: a voter's key at a later Seq than the poll's own
        // keys, with ops skipped in between; a vote taken back: a tombstone.
        let all: Vec<_> = store.messages.iter().flat_map(|m| m.live_pairs()).collect();
        assert!(
            all.iter()
                .any(|p| p.key.starts_with("vote:") && p.value.is_empty())
        );
        assert!(
            all.iter()
                .any(|p| p.key.starts_with("reaction:") && p.value.is_empty())
        );
        assert!(store.messages.iter().any(|m| m.clear_seq > 0));
        assert!(
            store
                .messages
                .iter()
                .any(|m| m.latest_seq() as usize > m.pairs.len()),
            "some keys were set more than once"
        );
    }

    #[test]
    fn demo_data_matches_the_sample_input() {
        let store = demo_store();
        let counts = crate::input::validate(
            InputReader::new(Path::new("sample"), SAMPLE_INPUT.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (counts.rows, counts.duplicates, counts.invalid.len()),
            (612, 12, 0)
        );
        use crate::model::MessageRef;
        let input: std::collections::HashSet<MessageRef> = SAMPLE_INPUT
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                MessageRef::new(Some(f[0]), f[1], f[2])
            })
            .collect();
        assert_eq!(input.len() as u64, counts.distinct);
        // The history's messages all answer get_key_values (a third with
        // pairs); the rest of the store is the sample's.
        let history: std::collections::HashSet<MessageId> = store.history.message_ids().collect();
        let stored: std::collections::HashSet<&MessageId> =
            store.messages.iter().map(|m| &m.id).collect();
        assert!(history.len() > 100 && history.iter().all(|id| stored.contains(id)));
        let with_pairs = store
            .messages
            .iter()
            .filter(|m| history.contains(&m.id) && !m.pairs.is_empty())
            .count();
        assert!(
            (history.len() / 5..history.len() / 2).contains(&with_pairs),
            "{with_pairs}"
        );
        // The use case's messages (polls.csv) are the store's last.
        let polls = use_case_store().messages.len();
        assert_eq!(
            store.messages[store.messages.len() - polls..],
            use_case_store().messages
        );
        let (groups, one_to_one): (Vec<_>, Vec<_>) = store.messages[..store.messages.len() - polls]
            .iter()
            .filter(|m| !history.contains(&m.id))
            .partition(|m| m.id.kind() == crate::kind::Kind::Group);
        assert!(
            one_to_one
                .iter()
                .all(|m| matches!(&m.id, crate::kind::MessageId::OneToOne(r) if input.contains(r))),
            "every stored message is one of the sample's"
        );
        let missing = input.len() - one_to_one.len();
        assert!(
            (10..=30).contains(&missing),
            "about one in 30 is not found: {missing}"
        );
        assert!(store.messages.iter().any(|m| m.pairs.len() > 200));
        // The group sample: 203 rows, 3 duplicates, about one in 30 missing.
        let group_counts = crate::input::validate(
            InputReader::new(Path::new("g"), SAMPLE_GROUP_INPUT.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                group_counts.rows,
                group_counts.duplicates,
                group_counts.distinct
            ),
            (203, 3, 200)
        );
        let group_missing = 200 - groups.len();
        assert!((2..=15).contains(&group_missing), "{group_missing}");
    }
}

//! Values that break naive writers go through both formats and come back
//! byte for byte, read with the arrow/parquet and csv readers.

use crate::common::KvRow;
use msgext::api::pairs::{PairList, PairRef};
use msgext::kind::Kind;
use msgext::model::{MessageId, MessageRef};
use msgext::write::schema::MessageRow;
use msgext::write::{
    FileInfo, Format, LakeStore, LocalDir, RunKey, RunTables, Sealed, WriteOptions,
};

fn publish(dir: &LocalDir, sealed: Vec<Sealed>) -> Vec<FileInfo> {
    sealed
        .into_iter()
        .map(|s| {
            dir.publish(&s).unwrap();
            s.info
        })
        .collect()
}

fn tricky() -> Vec<String> {
    vec![
        String::new(),
        "a,b,c".into(),
        "say \"hi\"".into(),
        "line one\nline two".into(),
        "crlf\r\ninside".into(),
        "tab\there".into(),
        "ünïcødé 中文 🚀".into(),
        "é".repeat(500), // 1000 bytes
        "null".into(),
        "NULL".into(),
        "\\N".into(),
        " padded ".into(),
        "\"".into(),
        "'single'".into(),
        "=cmd|' /C calc'!A0".into(),
    ]
}

fn write_lake(out: &std::path::Path, format: Format, opts: WriteOptions) -> Vec<KvRow> {
    let values = tricky();
    assert_eq!(values[7].len(), 1000);
    let msgs: [MessageId; 2] = [
        MessageRef::new(None, "to, \"quoted\"", "1_2_3").into(),
        MessageRef::new(Some("中文 sender"), "b", "k\n2").into(),
    ];
    let mut lake = RunTables::new(
        std::sync::Arc::new(LocalDir::new(out)),
        Kind::OneToOne,
        RunKey {
            sdkappid: 1400000000,
            dt: "2026-11-26",
            run_id: "r1",
        },
        format,
        opts,
        0,
    );
    let dir = LocalDir::new(out);
    let mut files = Vec::new();
    let mut want = Vec::new();
    for (mi, msg) in msgs.iter().enumerate() {
        let keys: Vec<String> = (0..values.len())
            .map(|i| {
                format!(
                    "{} key {i}",
                    values[(i + mi) % values.len()].replace('\n', " ")
                )
            })
            .collect();
        let pairs: PairList = values
            .iter()
            .zip(&keys)
            .enumerate()
            .map(|(i, (v, key))| PairRef {
                key,
                value: v,
                seq: i as i64 + 1,
                fetched_at_us: 1_764_115_200_123_456,
            })
            .collect();
        lake.add_pairs(msg, pairs.iter(), 99, 0).unwrap();
        lake.add_message(&MessageRow {
            msg,
            status: "ok",
            kv_count: pairs.len() as i64,
            pages: 1,
            attempts: 1,
            latest_seq: Some(99),
            clear_seq: Some(0),
            error_code: None,
            error_info: None,
            read: Some("full"),
            fetched_at_us: Some(1_764_115_200_123_456),
        })
        .unwrap();
        // As the export's writer does: a full part is sealed and published.
        if lake.part_full() {
            files.extend(publish(&dir, lake.seal().unwrap()));
        }
        let m = crate::common::one_to_one(msg);
        for p in pairs.iter() {
            want.push(KvRow {
                from: m.from.clone(),
                to: m.to.clone(),
                msg_key: m.msg_key.clone(),
                key: p.key.to_owned(),
                value: p.value.to_owned(),
                seq: p.seq,
                latest_seq: 99,
                clear_seq: 0,
            });
        }
    }
    files.extend(publish(&dir, lake.seal().unwrap()));
    assert_eq!(
        files.iter().map(|f| f.rows).sum::<u64>(),
        want.len() as u64 + 2
    );
    want.sort();
    want
}

#[test]
fn parquet_round_trips_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let want = write_lake(dir.path(), Format::Parquet, WriteOptions::default());
    assert_eq!(crate::common::kv_from_parquet(dir.path()), want);
}

#[test]
fn csv_round_trips_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let want = write_lake(dir.path(), Format::Csv, WriteOptions::default());
    assert_eq!(crate::common::kv_from_csv(dir.path()), want);
    let raw =
        std::fs::read_to_string(&crate::common::files(&dir.path().join("key_values"), "csv")[0])
            .unwrap();
    assert!(raw.starts_with(
        "sdkappid,from_account,to_account,msg_key,key,value,seq,latest_seq,clear_seq,fetched_at\r\n"
    ));
    assert!(
        raw.contains(",2025-11-26T00:00:00.123456Z\r\n"),
        "RFC 3339 µs timestamps"
    );
}

#[test]
fn files_roll_past_the_size_limit_and_nothing_is_left_staged() {
    for format in [Format::Parquet, Format::Csv] {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriteOptions {
            max_file_bytes: 2_000,
            batch_rows: 5,
            ..WriteOptions::default()
        };
        let want = write_lake(dir.path(), format, opts);
        let parts = crate::common::files(&dir.path().join("key_values"), format.extension());
        assert!(parts.len() >= 2, "{format:?}: {} parts", parts.len());
        let got = match format {
            Format::Parquet => crate::common::kv_from_parquet(dir.path()),
            Format::Csv => crate::common::kv_from_csv(dir.path()),
        };
        assert_eq!(got, want);
        let staged: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.contains(".inprogress"))
            .collect();
        assert!(staged.is_empty(), "{staged:?}");
    }
}

#[test]
fn partition_folders_are_hive_style_and_columns_are_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    write_lake(dir.path(), Format::Parquet, WriteOptions::default());
    let f = &crate::common::files(&dir.path().join("key_values"), "parquet")[0];
    let rel = f
        .strip_prefix(dir.path())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        rel,
        "key_values/dt=2026-11-26/run_id=r1/part-00000-r1.parquet"
    );
    let b = &crate::common::parquet_batches(f)[0];
    let names: Vec<_> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "sdkappid",
            "from_account",
            "to_account",
            "msg_key",
            "key",
            "value",
            "seq",
            "latest_seq",
            "clear_seq",
            "fetched_at"
        ]
    );
    assert!(!names.iter().any(|n| n == "dt" || n == "run_id"));
}

#[test]
fn a_table_without_rows_gets_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut lake = RunTables::new(
        std::sync::Arc::new(LocalDir::new(dir.path())),
        Kind::OneToOne,
        RunKey {
            sdkappid: 1400000000,
            dt: "2026-11-26",
            run_id: "r0",
        },
        Format::Parquet,
        WriteOptions::default(),
        0,
    );
    let files = publish(&LocalDir::new(dir.path()), lake.seal().unwrap());
    assert!(files.is_empty(), "{files:?}");
    assert!(walk(dir.path()).is_empty(), "nothing published");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

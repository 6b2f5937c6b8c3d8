//! Every Delta table msgext writes in a lake, by kind and role, with the
//! schema its log must hold: what `msgext vacuum` and `msgext verify` go
//! over. A table of another schema is refused by name, as exports do.

use super::delta::{DeltaLake, TableSpec, has_log};
use crate::kind::Kind;
use crate::write::{LakeStore, WriteError};

/// What a table holds, which decides what vacuum and verify do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `key_values`, `messages`: one partition per run (`dt`, `run_id`).
    History,
    /// `current_key_values`, `current_messages`: rows replaced by each run.
    Current,
    /// `key_value_changes`: one partition per run, like the history.
    Changes,
    /// `extension_events`: the listener's, partitioned by app and day.
    Events,
}

impl Role {
    /// Whether its partitions are runs' (`dt=…/run_id=…/`), dropped by
    /// `--keep-history` when their day is old.
    pub(crate) fn per_run(self) -> bool {
        matches!(self, Role::History | Role::Changes)
    }
}

/// One table of the lake.
#[derive(Debug, Clone)]
pub(crate) struct LakeTable {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) spec: TableSpec,
}

/// Every table msgext may have written, whether or not the lake has it.
pub(crate) fn every_table() -> Result<Vec<LakeTable>, WriteError> {
    let bad = |e: delta_kernel::KernelError| WriteError::Store(format!("msgext's schema: {e}"));
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let mut add = |name: String, role, spec| out.push(LakeTable { name, role, spec });
        for (name, spec) in super::history::specs(kind).map_err(bad)? {
            add(name.to_owned(), Role::History, spec);
        }
        let current = super::specs(kind).map_err(bad)?;
        for (name, spec) in super::names(kind).into_iter().zip(current) {
            add(name, Role::Current, spec);
        }
        let changes = super::current::changes::spec(kind).map_err(bad)?;
        add(
            kind.spec().changes_table().to_owned(),
            Role::Changes,
            changes,
        );
        let events = super::events::spec(kind).map_err(bad)?;
        add(kind.spec().events_table().to_owned(), Role::Events, events);
    }
    Ok(out)
}

/// The lake's msgext tables (those with a log), each checked to hold
/// msgext's schema, and those whose log cannot be read.
#[derive(Debug, Default)]
pub(crate) struct Present {
    pub(crate) tables: Vec<LakeTable>,
    pub(crate) unreadable: Vec<(String, WriteError)>,
}

/// The lake's tables. Another schema (another tool's table under msgext's
/// name) is an error naming it, before anything is read or deleted; a log
/// that cannot be read leaves its table out, told.
pub(crate) fn present(lake: &dyn LakeStore, delta: &DeltaLake) -> Result<Present, WriteError> {
    let mut out = Present::default();
    for t in every_table()? {
        if !has_log(lake, &t.name)? {
            continue;
        }
        match delta.snapshot(&t.name) {
            Ok(s) => {
                delta.check_schema(&t.name, &s, &t.spec.schema)?;
                out.tables.push(t);
            }
            Err(e) => out.unreadable.push((t.name.clone(), e.into())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_named_once_with_its_role() {
        let tables = every_table().unwrap();
        let names: std::collections::BTreeSet<&str> =
            tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), tables.len(), "a name twice");
        let role = |n: &str| tables.iter().find(|t| t.name == n).map(|t| t.role);
        let cases = [
            ("key_values", Role::History),
            ("group_messages", Role::History),
            ("current_key_values", Role::Current),
            ("current_group_messages", Role::Current),
            ("key_value_changes", Role::Changes),
            ("group_key_value_changes", Role::Changes),
            ("extension_events", Role::Events),
            ("group_extension_events", Role::Events),
        ];
        for (name, want) in cases {
            assert_eq!(role(name), Some(want), "{name}");
        }
        assert_eq!(tables.len(), 12);
        for t in &tables {
            let run_partitioned = t.spec.partitions.contains(&"run_id");
            assert_eq!(t.role.per_run(), run_partitioned, "{}", t.name);
        }
    }
}

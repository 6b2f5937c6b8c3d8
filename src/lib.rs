//! msgext exports the key-value extensions of Tencent Cloud Chat one-to-one
//! and group messages (`get_key_values`, `group_get_key_values`) into a
//! Parquet or CSV data-lake folder.
//!
//! Pipeline: [`input`] → [`fetch`] (with [`api`]) → [`write`] + [`report`],
//! put together by [`export`]; [`kind`] is the seam of a message's identity.
//! [`mock`] is the simulated API used by the demo and the tests. [`cli`],
//! [`job`] and [`app`] are the command line.

pub mod api;
pub mod app;
pub(crate) mod cli;
pub(crate) mod codes;
pub(crate) mod columns;
pub(crate) mod demo;
pub(crate) mod discover;
pub mod export;
pub mod failpoint;
pub mod fetch;
pub(crate) mod incremental;
pub mod input;
pub mod job;
pub(crate) mod journal;
pub mod kind;
pub mod ledger;
pub(crate) mod listen;
pub mod mock;
pub mod model;
pub mod report;
pub(crate) mod runs;
pub mod table;
pub(crate) mod vacuum;
pub(crate) mod verify;
pub mod write;

//! The API's error codes: the ones the client and the simulator both name,
//! and what each means to an export (`Action`). A kind whose API reads some
//! codes differently says so itself (`kind::KindSpec::classify_code`). A
//! pure table, in the ground: the kinds read it as the protocol does.

pub(crate) const INTERNAL: i64 = 10002;
pub(crate) const INVALID_PARAM: i64 = 10004;
pub(crate) const NOT_FOUND: i64 = 23004;
/// The group does not exist or was dismissed (group API).
pub(crate) const GROUP_NOT_FOUND: i64 = 10010;
pub(crate) const BAD_URL: i64 = 60002;
pub(crate) const FREQ_LIMIT: i64 = 60007;
/// The simulator's answer to a non-admin identifier (the real code is not documented).
pub(crate) const ADMIN_REQUIRED: i64 = 60016;
pub(crate) const SIG_EXPIRED: i64 = 70001;
pub(crate) const SIG_EMPTY: i64 = 70002;
pub(crate) const SIG_INVALID: i64 = 70003;
pub(crate) const SIG_IDENTIFIER_MISMATCH: i64 = 70013;
pub(crate) const SIG_SDKAPPID_MISMATCH: i64 = 70014;
pub(crate) const SDKAPPID_NOT_FOUND: i64 = 70020;

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The answer carries data.
    Success,
    /// Transient: try again after a backoff.
    Retry,
    /// Over the quota: try again after a longer wait, and slow the whole run down.
    RateLimited,
    /// UserSig expired: sign anew (if the secret is known) and try again.
    RenewSignature,
    /// The message does not exist (23004): recorded as `not_found`, not retried.
    NotFound,
    /// This message cannot be exported; the run goes on.
    FailMessage,
    /// Every later call would fail too: stop the run.
    FailRun,
}

/// The common reading of every code of the API notes' table.
pub(crate) fn classify_code(code: i64) -> Action {
    match code {
        0 => Action::Success,
        10002 | 60008 | 60013 | 60014 => Action::Retry,
        60007 | 60011 | 60018 | 60019 | 10006 => Action::RateLimited,
        70001 => Action::RenewSignature,
        23004 => Action::NotFound,
        10004 => Action::FailMessage,
        10008 => Action::FailRun,
        60002..=60006 | 60009 | 60010 | 60012 | 60015..=60017 | 60020 | 60021 => Action::FailRun,
        70002..=70020 | 70050 | 70051 => Action::FailRun,
        // A code the notes do not list: fail this message (it lands in
        // errors.csv with its code) rather than retry blindly or stop the run.
        _ => Action::FailMessage,
    }
}

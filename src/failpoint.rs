//! Crash points: named places in a run (`settled`, `sealed`, `committed`,
//! `published`, `before_success`, …) where the crash-recovery tests make the
//! process die as `kill -9` would, or make a thread panic. The library only
//! names the places; what happens at them is up to a [`Hook`], and only the
//! test-only binary `msgext-crashtest` (`tests/bin/crashtest.rs`, built by
//! `cargo test` alone) installs one. The `msgext` binary users run installs
//! none: there every point is a look at an empty `OnceLock`, and no
//! environment variable changes what it does.

use std::sync::OnceLock;

/// What happens at the crash points, when installed.
pub trait Hook: Send + Sync {
    /// Passing the point `name` (the hook may end the process here).
    fn hit(&self, name: &str);
    /// Passing a point where a bug would panic (the hook may panic here).
    fn panic_at(&self, name: &str);
    /// A size to use instead of `name`'s default (tests shrink part sizes
    /// so that small files take the paths large ones take).
    fn size(&self, name: &str) -> Option<usize>;
}

static HOOK: OnceLock<Box<dyn Hook>> = OnceLock::new();

/// Install the hook for this process; `false` if one already was.
pub fn install(hook: Box<dyn Hook>) -> bool {
    HOOK.set(hook).is_ok()
}

/// The crash point `name`.
#[inline]
pub(crate) fn hit(name: &str) {
    if let Some(h) = HOOK.get() {
        h.hit(name);
    }
}

/// The panic point `name`.
#[inline]
pub(crate) fn panic_at(name: &str) {
    if let Some(h) = HOOK.get() {
        h.panic_at(name);
    }
}

/// `default`, unless a hook gives another size for `name`.
#[inline]
pub(crate) fn size(name: &str, default: usize) -> usize {
    HOOK.get().and_then(|h| h.size(name)).unwrap_or(default)
}

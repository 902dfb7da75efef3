//! What the shell completion offers for a value: the names that exist right now. Called by
//! clap_complete when a completion script calls sbx back (see `meta`).

use clap_complete::CompletionCandidate;

/// Completion candidates: profile names (built-in, user and system).
pub fn profile_names() -> Vec<CompletionCandidate> {
    crate::profile::load::known_names()
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

/// Completion candidates: named sandboxes of this user.
pub fn sandbox_names() -> Vec<CompletionCandidate> {
    crate::instance::Dirs::from_env()
        .and_then(|d| d.names())
        .unwrap_or_default()
        .into_iter()
        .map(CompletionCandidate::new)
        .collect()
}

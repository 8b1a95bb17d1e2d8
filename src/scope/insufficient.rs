//! What a token lacks for a request: the 403 diagnostics and the `scope=` hint.

use std::fmt;

use crate::need::{Need, Permissions, TypeScope};

/// What a token lacks for a request: the needs no granted scope covers, why no scope could
/// help, or, for a batch, which entries were denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsufficientScope {
    missing: Vec<Need>,
    reason: Option<&'static str>,
    entries: Vec<(usize, InsufficientScope)>,
}

impl InsufficientScope {
    /// A denial that no scope can lift (an interaction this guard never allows).
    #[must_use]
    pub fn unconditional() -> Self {
        Self {
            missing: Vec::new(),
            reason: None,
            entries: Vec::new(),
        }
    }

    pub(crate) fn never(reason: &'static str) -> Self {
        Self {
            reason: Some(reason),
            ..Self::unconditional()
        }
    }

    pub(crate) fn missing_needs(missing: Vec<Need>) -> Self {
        Self {
            missing: smallest(missing.iter().copied()),
            ..Self::unconditional()
        }
    }

    pub(crate) fn entries(entries: Vec<(usize, InsufficientScope)>) -> Self {
        let liftable = entries.iter().all(|(_, e)| !e.missing.is_empty());
        let missing = if liftable {
            smallest(entries.iter().flat_map(|(_, e)| e.missing.iter().copied()))
        } else {
            Vec::new()
        };
        Self {
            missing,
            reason: None,
            entries,
        }
    }

    /// The unmet needs, each reduced to its missing letters (for a batch, the union over its
    /// denied entries, with what a `*` need covers left out); empty when no scope would help.
    #[must_use]
    pub fn missing(&self) -> &[Need] {
        &self.missing
    }

    /// Why no scope could help (GraphQL, an operation that is not allow-listed, …).
    #[must_use]
    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// For a batch or transaction: each denied entry's index and its own denial.
    #[must_use]
    pub fn denied_entries(&self) -> &[(usize, InsufficientScope)] {
        &self.entries
    }

    /// The space-separated v2 scopes that would have sufficed (the 403 `scope=` hint).
    #[must_use]
    pub fn scope_hint(&self) -> String {
        self.missing
            .iter()
            .map(Need::as_scope_hint)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// How many denied Bundle entries the 403 diagnostics name.
const LISTED_ENTRIES: usize = 20;

impl fmt::Display for InsufficientScope {
    /// The 403 diagnostics: what is missing, why nothing helps, or per denied batch entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.entries.is_empty() {
            // A Bundle may deny thousands of entries: name the first few, count the rest, so
            // the answer stays small whatever the request.
            for (i, (index, denial)) in self.entries.iter().take(LISTED_ENTRIES).enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write!(f, "entry {index}: {denial}")?;
            }
            let more = self.entries.len().saturating_sub(LISTED_ENTRIES);
            if more > 0 {
                write!(f, "; and {more} more denied entries")?;
            }
            return Ok(());
        }
        match (self.reason, self.missing.is_empty()) {
            (Some(reason), _) => f.write_str(reason),
            (None, true) => f.write_str("this interaction is not allowed by the guard"),
            (None, false) => write!(
                f,
                "the access token's scopes do not cover this request; it would need: {}",
                self.scope_hint()
            ),
        }
    }
}

/// Merges needs per type and drops letters a `*` need already asks for: the smallest set of
/// scopes that would suffice.
fn smallest(needs: impl Iterator<Item = Need>) -> Vec<Need> {
    let mut merged: Vec<Need> = Vec::new();
    for need in needs {
        match merged.iter_mut().find(|n| n.resource == need.resource) {
            Some(existing) => existing.permissions |= need.permissions,
            None => merged.push(need),
        }
    }
    let wildcard = merged
        .iter()
        .find(|n| n.resource == TypeScope::Wildcard)
        .map_or(Permissions::NONE, |n| n.permissions);
    for need in &mut merged {
        if need.resource != TypeScope::Wildcard {
            need.permissions = need.permissions.without(wildcard);
        }
    }
    merged.retain(|n| !n.permissions.is_empty());
    merged
}

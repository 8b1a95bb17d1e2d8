//! How much analysis one request may ask of the guard: the limits, and the budget that counts
//! one request's work against them.
//!
//! Every search parameter the guard reads (query, `POST _search` form, `If-None-Exist`, batch
//! entry url, conditional reference, `$export` `_typeFilter`) costs work that grows with what
//! the client sent. These limits keep that work bounded and flat: no recursion follows a client's
//! nesting, and a request past a limit is refused with 400 before more work is done.

use std::{cell::Cell, fmt};

/// The analysis limits (see the crate docs' settings table for the environment variables).
///
/// ```
/// use smart_guard::AnalysisLimits;
///
/// let limits = AnalysisLimits::default().with_max_search_depth(2);
/// assert_eq!(limits.max_search_depth(), 2);
/// assert_eq!(limits.max_search_params(), 100);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct AnalysisLimits {
    search_params: usize,
    includes: usize,
    search_depth: usize,
    bundle_entries: usize,
    steps: usize,
}

impl Default for AnalysisLimits {
    fn default() -> Self {
        Self {
            search_params: 100,
            includes: 32,
            search_depth: 4,
            bundle_entries: 10_000,
            steps: 100_000,
        }
    }
}

impl AnalysisLimits {
    /// Most search parameters in one parameter list: a query and `POST _search` form together,
    /// an `If-None-Exist`, a batch entry url, a conditional reference, a `_typeFilter` query
    /// (default 100).
    pub fn with_max_search_params(mut self, n: usize) -> Self {
        self.search_params = n;
        self
    }

    /// Most `_include` and `_revinclude` parameters in one parameter list (default 32).
    pub fn with_max_includes(mut self, n: usize) -> Self {
        self.includes = n;
        self
    }

    /// Most reference hops in one parameter: each chain link and each `_has` is one, so
    /// `subject:Patient.organization.name` has 2 and `_has:Observation:patient:_has:...` one per
    /// `_has` (default 4).
    pub fn with_max_search_depth(mut self, n: usize) -> Self {
        self.search_depth = n;
        self
    }

    /// Most entries in a batch or transaction Bundle (default 10,000).
    pub fn with_max_bundle_entries(mut self, n: usize) -> Self {
        self.bundle_entries = n;
        self
    }

    /// Most analysis steps for a whole request (default 100,000): one per search parameter, per
    /// reference hop, per Bundle entry and per conditional reference.
    pub fn with_max_analysis_steps(mut self, n: usize) -> Self {
        self.steps = n;
        self
    }

    /// See [`Self::with_max_search_params`].
    #[must_use]
    pub fn max_search_params(&self) -> usize {
        self.search_params
    }

    /// See [`Self::with_max_includes`].
    #[must_use]
    pub fn max_includes(&self) -> usize {
        self.includes
    }

    /// See [`Self::with_max_search_depth`].
    #[must_use]
    pub fn max_search_depth(&self) -> usize {
        self.search_depth
    }

    /// See [`Self::with_max_bundle_entries`].
    #[must_use]
    pub fn max_bundle_entries(&self) -> usize {
        self.bundle_entries
    }

    /// See [`Self::with_max_analysis_steps`].
    #[must_use]
    pub fn max_analysis_steps(&self) -> usize {
        self.steps
    }
}

/// Which analysis limit a request went past.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// [`AnalysisLimits::with_max_search_params`].
    SearchParams,
    /// [`AnalysisLimits::with_max_includes`].
    Includes,
    /// [`AnalysisLimits::with_max_search_depth`].
    SearchDepth,
    /// [`AnalysisLimits::with_max_bundle_entries`].
    BundleEntries,
    /// [`AnalysisLimits::with_max_analysis_steps`].
    AnalysisSteps,
}

impl Limit {
    /// The environment variable that sets this limit (the `ENV_MAX_*` constants of
    /// [`config::env`](crate::config::env) are these).
    #[must_use]
    pub const fn env_var(self) -> &'static str {
        match self {
            Self::SearchParams => "SMART_GUARD_MAX_SEARCH_PARAMS",
            Self::Includes => "SMART_GUARD_MAX_INCLUDES",
            Self::SearchDepth => "SMART_GUARD_MAX_SEARCH_DEPTH",
            Self::BundleEntries => "SMART_GUARD_MAX_BUNDLE_ENTRIES",
            Self::AnalysisSteps => "SMART_GUARD_MAX_ANALYSIS_STEPS",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::SearchParams => "too many search parameters in one list",
            Self::Includes => "too many _include and _revinclude parameters",
            Self::SearchDepth => "a chain or _has nests too deeply",
            Self::BundleEntries => "too many Bundle entries",
            Self::AnalysisSteps => "the request needs too much analysis",
        };
        write!(f, "{what} (limit: {})", self.env_var())
    }
}

/// One request's analysis work, counted against its limits. Shared by reference through the
/// classifier (a `Cell`: the classifier is single-threaded per request).
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) limits: AnalysisLimits,
    steps: Cell<usize>,
}

impl Budget {
    pub(crate) fn new(limits: AnalysisLimits) -> Self {
        Self {
            limits,
            steps: Cell::new(0),
        }
    }

    /// Spends `n` steps; past the request's limit, [`Limit::AnalysisSteps`].
    #[inline]
    pub(crate) fn spend(&self, n: usize) -> Result<(), Limit> {
        let spent = self.steps.get().saturating_add(n);
        self.steps.set(spent);
        if spent > self.limits.steps {
            Err(Limit::AnalysisSteps)
        } else {
            Ok(())
        }
    }

    /// Checks a count against a per-list limit.
    #[inline]
    pub(crate) fn within(count: usize, max: usize, limit: Limit) -> Result<(), Limit> {
        if count > max { Err(limit) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_the_step_past_its_limit() {
        let budget = Budget::new(AnalysisLimits::default().with_max_analysis_steps(3));
        assert_eq!(budget.spend(2), Ok(()));
        assert_eq!(budget.spend(1), Ok(()));
        assert_eq!(budget.spend(1), Err(Limit::AnalysisSteps));
        assert_eq!(budget.spend(usize::MAX), Err(Limit::AnalysisSteps));
    }

    #[test]
    fn a_limit_names_its_environment_variable() {
        assert_eq!(
            Limit::SearchDepth.to_string(),
            "a chain or _has nests too deeply (limit: SMART_GUARD_MAX_SEARCH_DEPTH)"
        );
    }
}

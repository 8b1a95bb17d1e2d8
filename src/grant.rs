//! The scope check: which granted scope meets each need of a classified request
//! (docs/AUTHORIZATION.md §3). Reads the classification, never writes it: what it found travels
//! as [`Grants`], next to the request, into the [`VerifiedClaims`](crate::VerifiedClaims).

use std::{fmt, sync::Arc};

use crate::{
    classify::{BundleEntry, FhirRequest, Incoming, Needs, Params},
    fhir::search_param::decode,
    need::{Need, Permissions, TypeScope},
    scope::{InsufficientScope, ScopeSet},
};

/// Which granted scope met each letter of one need: indices into [`ScopeSet::scopes`], in `cruds`
/// order; [`NO_GRANT`] where the letter was not needed.
type LetterGrants = [u16; 5];
const NO_GRANT: u16 = u16::MAX;

/// Which granted scope met each need of an authorized request: the audit record that
/// [`ScopeSet::authorize`] returns. Read it with [`Grants::list`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Grants(Kind);

#[derive(Clone, Debug, PartialEq, Eq, Default)]
enum Kind {
    /// Nothing was needed, or the request was not authorized.
    #[default]
    None,
    One(LetterGrants),
    Many(Arc<[LetterGrants]>),
    /// One record per Bundle entry, in entry order.
    Bundle(Arc<[Grants]>),
}

/// Which granted scope met (part of) one need: one line of the audit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The batch or transaction entry the need belongs to; `None` for the request itself.
    pub entry: Option<usize>,
    /// The need, reduced to the letters this scope met.
    pub need: Need,
    /// The index of the scope in [`ScopeSet::scopes`].
    pub scope: usize,
}

impl Grants {
    /// The record of a request that was not authorized (or needed nothing).
    #[must_use]
    pub fn none() -> Self {
        Self(Kind::None)
    }

    /// Each need of `request` with the scope that met it, letter by letter merged per scope;
    /// Bundle entries carry their index. `request` must be the one these grants are for.
    #[must_use]
    pub fn list(&self, request: &FhirRequest) -> Vec<Grant> {
        let mut out = Vec::new();
        self.push(request, None, &mut out);
        out
    }

    fn push(&self, request: &FhirRequest, entry: Option<usize>, out: &mut Vec<Grant>) {
        let letters: &[LetterGrants] = match &self.0 {
            Kind::None => return,
            Kind::One(one) => std::slice::from_ref(one),
            Kind::Many(many) => many,
            Kind::Bundle(entries) => {
                for (index, (grants, entry)) in entries.iter().zip(request.entries()).enumerate() {
                    grants.push(entry, Some(index), out);
                }
                return;
            }
        };
        for (need, by) in request.needs().iter().zip(letters) {
            let start = out.len();
            for (letter, scope) in Permissions::EACH.iter().zip(by) {
                if *scope == NO_GRANT {
                    continue;
                }
                let scope = usize::from(*scope);
                match out[start..].iter_mut().find(|g| g.scope == scope) {
                    Some(grant) => grant.need.permissions |= *letter,
                    None => out.push(Grant {
                        entry,
                        need: Need {
                            resource: need.resource,
                            permissions: *letter,
                        },
                        scope,
                    }),
                }
            }
        }
    }

    /// A token-free, one-line description for logs: the interaction's needs and the scopes that
    /// met them (`Observation.s<-system/Observation.rs`). Formatting costs nothing until used.
    #[must_use]
    pub fn audit<'a>(&'a self, request: &'a FhirRequest, scopes: &'a ScopeSet) -> Audit<'a> {
        Audit {
            request,
            grants: self,
            scopes,
        }
    }
}

/// The log line of [`Grants::audit`].
#[derive(Clone, Copy, Debug)]
pub struct Audit<'a> {
    request: &'a FhirRequest,
    grants: &'a Grants,
    scopes: &'a ScopeSet,
}

impl fmt::Display for Audit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let request = self.request;
        write!(f, "{} needs [", request.interaction())?;
        for (i, need) in request.needs().iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}.{}", need.resource, need.permissions)?;
        }
        if let Some(why) = request.denial_reason() {
            return write!(f, "] never: {why}");
        }
        f.write_str("] granted [")?;
        for (i, grant) in self.grants.list(request).iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            f.write_str(sep)?;
            if let Some(entry) = grant.entry {
                write!(f, "#{entry}:")?;
            }
            write!(f, "{}.{}<-", grant.need.resource, grant.need.permissions)?;
            match self.scopes.scopes().get(grant.scope) {
                Some(scope) => write!(f, "{scope}")?,
                None => f.write_str("?")?,
            }
        }
        f.write_str("]")
    }
}

impl ScopeSet {
    /// Checks a classified request against these scopes (docs/AUTHORIZATION.md §3-§7):
    /// unconstrained `system/` scopes for every need; a granular scope only for the searched
    /// type of a search that restates every constraint (same name, no modifier, same value
    /// after percent-decoding, no comma-OR) in its query or form body; every entry of a batch
    /// on its own. Returns which scope met each need.
    ///
    /// `incoming` must be what `request` was classified from.
    ///
    /// ```
    /// use http::Method;
    /// use smart_guard::{Incoming, Policy, ScopeSet};
    ///
    /// let scopes = ScopeSet::parse("system/Observation.rs?category=laboratory");
    /// let incoming = Incoming::new(&Method::GET, "/Observation").with_query("category=laboratory&code=1");
    /// let request = Policy::default().classify(&incoming).unwrap();
    /// let grants = scopes.authorize(&request, &incoming).unwrap();
    /// assert_eq!(grants.list(&request)[0].scope, 0);
    ///
    /// let wider = Incoming::new(&Method::GET, "/Observation").with_query("code=1");
    /// let request = Policy::default().classify(&wider).unwrap();
    /// assert!(scopes.authorize(&request, &wider).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`InsufficientScope`] naming what is missing (per entry for a batch).
    pub fn authorize(
        &self,
        request: &FhirRequest,
        incoming: &Incoming<'_>,
    ) -> Result<Grants, InsufficientScope> {
        check(self, request, incoming.params(request.form_params()))
    }
}

fn check(
    scopes: &ScopeSet,
    request: &FhirRequest,
    params: Params<'_>,
) -> Result<Grants, InsufficientScope> {
    let primary = request.primary();
    match request.needs_kind() {
        Needs::Nothing => Ok(Grants::none()),
        Needs::Never(why) => Err(InsufficientScope::never(why)),
        Needs::One(need) => letters(scopes, need, primary > 0, params)
            .map(|granted| Grants(Kind::One(granted)))
            .map_err(|lacking| InsufficientScope::missing_needs(vec![lacking])),
        Needs::Many(needs) => {
            let mut grants = Vec::with_capacity(needs.len());
            let mut missing = Vec::new();
            for (index, need) in needs.iter().enumerate() {
                match letters(scopes, need, index < primary, params) {
                    Ok(granted) => grants.push(granted),
                    Err(lacking) => missing.push(lacking),
                }
            }
            if !missing.is_empty() {
                return Err(InsufficientScope::missing_needs(missing));
            }
            Ok(Grants(Kind::Many(grants.into())))
        }
        Needs::Bundle(bundle) => {
            let mut grants = Vec::with_capacity(bundle.entries.len());
            let mut denied = Vec::new();
            for (index, BundleEntry { request, query }) in bundle.entries.iter().enumerate() {
                let params = Params {
                    query: query.as_deref(),
                    form: None,
                };
                match check(scopes, request, params) {
                    Ok(granted) => grants.push(granted),
                    Err(why) => denied.push((index, why)),
                }
            }
            if denied.is_empty() {
                Ok(Grants(Kind::Bundle(grants.into())))
            } else {
                Err(InsufficientScope::entries(denied))
            }
        }
    }
}

/// Which scope meets each letter of `need`, or the letters nothing meets.
fn letters(
    scopes: &ScopeSet,
    need: &Need,
    primary: bool,
    params: Params<'_>,
) -> Result<LetterGrants, Need> {
    let mut by = [NO_GRANT; 5];
    let mut lacking = Permissions::NONE;
    for (slot, letter) in by.iter_mut().zip(Permissions::EACH) {
        if !need.permissions.contains(letter) {
            continue;
        }
        let found = scopes.plain.iter().find(|scope| {
            scope.permissions.contains(letter)
                && (scope.resource == TypeScope::Wildcard || scope.resource == need.resource)
        });
        match found {
            Some(scope) => *slot = scope.index,
            None => lacking |= letter,
        }
    }
    if lacking == Permissions::SEARCH && primary && !scopes.granular.is_empty() {
        let restated = scopes.granular.iter().copied().find(|&index| {
            scopes
                .scopes()
                .get(usize::from(index))
                .is_some_and(|scope| {
                    scope.resource() == need.resource && restates(scope.constraints(), params)
                })
        });
        if let Some(index) = restated {
            by[4] = index;
            lacking = Permissions::NONE;
        }
    }
    if lacking.is_empty() {
        Ok(by)
    } else {
        Err(Need {
            resource: need.resource,
            permissions: lacking,
        })
    }
}

/// Whether the request's own parameters restate every constraint: same name (no modifier), same
/// value after percent-decoding, and no comma-OR in that value (docs/AUTHORIZATION.md §3.6).
fn restates(constraints: &[(Box<str>, Box<str>)], params: Params<'_>) -> bool {
    constraints.iter().all(|(name, value)| {
        !name.contains([':', '.'])
            && params.raw_pairs().any(|(raw_name, raw_value)| {
                decode(raw_name) == **name && {
                    let decoded = decode(raw_value);
                    decoded == **value && !has_unescaped_comma(&decoded)
                }
            })
    })
}

/// A `,` not escaped as `\,` ORs values in FHIR search.
fn has_unescaped_comma(value: &str) -> bool {
    let mut escaped = false;
    for c in value.chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, ',') => return true,
            _ => escaped = false,
        }
    }
    false
}

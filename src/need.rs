//! What a request needs and what a scope grants, in the same terms: SMART permission letters
//! ([`Permissions`]) on a resource type or on `*` ([`TypeScope`]). The classifier speaks of
//! [`Need`]s; scopes and the grant check read them.

use std::fmt;

use crate::fhir::ResourceType;

/// A set of SMART permission letters, a subset of `cruds`.
///
/// ```
/// use smart_guard::Permissions;
///
/// let rs = Permissions::READ | Permissions::SEARCH;
/// assert_eq!(rs.to_string(), "rs");
/// assert!(Permissions::ALL.contains(rs));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// No letters.
    pub const NONE: Self = Self(0);
    /// `c`: type-level create.
    pub const CREATE: Self = Self(1);
    /// `r`: read, vread, instance history.
    pub const READ: Self = Self(2);
    /// `u`: update (also update-as-create) and patch.
    pub const UPDATE: Self = Self(4);
    /// `d`: delete.
    pub const DELETE: Self = Self(8);
    /// `s`: type, system and compartment search; type and system history.
    pub const SEARCH: Self = Self(16);
    /// `cruds`, which v1 `.*` also means.
    pub const ALL: Self = Self(31);

    const LETTERS: [(u8, Self); 5] = [
        (b'c', Self::CREATE),
        (b'r', Self::READ),
        (b'u', Self::UPDATE),
        (b'd', Self::DELETE),
        (b's', Self::SEARCH),
    ];

    /// The five letters, one flag each, in `cruds` order.
    pub(crate) const EACH: [Self; 5] = [
        Self::CREATE,
        Self::READ,
        Self::UPDATE,
        Self::DELETE,
        Self::SEARCH,
    ];

    /// Whether every letter of `other` is in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no letter is set.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The letters of `self` that `other` lacks.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Parses v2 letters: a non-empty subset of `cruds`, in that order, each at most once.
    pub(crate) fn parse_v2(letters: &str) -> Option<Self> {
        let mut next = 0; // index into LETTERS of the earliest letter still allowed
        let mut set = Self::NONE;
        for byte in letters.bytes() {
            let offset = Self::LETTERS[next..].iter().position(|(l, _)| *l == byte)?;
            set |= Self::LETTERS[next + offset].1;
            next += offset + 1;
        }
        (!set.is_empty()).then_some(set)
    }
}

impl std::ops::BitOr for Permissions {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Permissions {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (letter, flag) in Self::LETTERS {
            if self.contains(flag) {
                fmt::Write::write_char(f, char::from(letter))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Permissions({self})")
    }
}

/// Which resource types a scope, or a requirement, is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeScope {
    /// `*`: every type, now and in the future. As a requirement: only a `*` scope will do.
    Wildcard,
    /// One resource type.
    Type(ResourceType),
}

impl fmt::Display for TypeScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wildcard => f.write_str("*"),
            Self::Type(ty) => f.write_str(ty.as_str()),
        }
    }
}

/// One need of a request: these letters on this type (or on `*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Need {
    /// The type the letters are needed on; [`TypeScope::Wildcard`] means only a `*` scope will do.
    pub resource: TypeScope,
    /// The letters needed.
    pub permissions: Permissions,
}

impl Need {
    /// The smallest v2 `system/` scope that meets this need, e.g. `system/Observation.rs`.
    #[must_use]
    pub fn as_scope_hint(&self) -> String {
        format!("system/{}.{}", self.resource, self.permissions)
    }
}

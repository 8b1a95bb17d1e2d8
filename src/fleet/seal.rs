//! What a shared entry holds, and how it is sealed: AES-256-GCM under the fleet's sealing key,
//! a fresh random nonce on every write, the key prefix and the entry's [`SharedKey`] as
//! associated data (so an entry moved under another name or prefix does not open). Nothing in a value is readable without the
//! fleet key, and a value changed by one bit does not open.
//!
//! Sealed value: `1` (format) | nonce (12 bytes) | ciphertext | tag (16 bytes).
//! Plaintext: kind (`A` active, `I` inactive, `R` revoked) | until (unix ms, 8 bytes big-endian)
//! | for `A`, the introspection answer as the AS sent it (checked again on every read).

use aws_lc_rs::{
    aead::{Aad, NONCE_LEN, Nonce},
    rand::{SecureRandom, SystemRandom},
};

use super::key::{FleetKey, SharedKey};

const FORMAT: u8 = 1;
const TAG_LEN: usize = 16;
const HEADER: usize = 1 + NONCE_LEN;

/// A shared entry, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The AS called the token active: its answer, and until when (unix ms) a replica may cache
    /// it (min(`exp`, first answer + max TTL), fixed when the AS answered).
    Active { answer: Vec<u8>, until_ms: u64 },
    /// The AS called the token inactive.
    Inactive,
    /// Revoked through the fleet: refused until the entry expires.
    Revoked,
}

impl Entry {
    fn plaintext(&self) -> Vec<u8> {
        let (kind, until_ms, answer): (u8, u64, &[u8]) = match self {
            Self::Active { answer, until_ms } => (b'A', *until_ms, answer),
            Self::Inactive => (b'I', 0, &[]),
            Self::Revoked => (b'R', 0, &[]),
        };
        let mut out = Vec::with_capacity(HEADER + 9 + answer.len() + TAG_LEN);
        out.push(kind);
        out.extend_from_slice(&until_ms.to_be_bytes());
        out.extend_from_slice(answer);
        out
    }

    fn from_plaintext(plain: &[u8]) -> Option<Self> {
        let (&kind, rest) = plain.split_first()?;
        let until: [u8; 8] = rest.get(..8)?.try_into().ok()?;
        let answer = &rest[8..];
        match kind {
            b'A' => Some(Self::Active {
                answer: answer.to_vec(),
                until_ms: u64::from_be_bytes(until),
            }),
            b'I' if answer.is_empty() => Some(Self::Inactive),
            b'R' if answer.is_empty() => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// The associated data of a value: the key prefix, a 0 byte, the digest.
fn associated(prefix: &str, key: &SharedKey) -> Vec<u8> {
    let mut aad = Vec::with_capacity(prefix.len() + 33);
    aad.extend_from_slice(prefix.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key.as_bytes());
    aad
}

/// `entry` sealed for the name `key` under `prefix`.
///
/// # Errors
///
/// When the system's random generator fails (no nonce, no value written).
pub(crate) fn seal(
    fleet: &FleetKey,
    prefix: &str,
    key: &SharedKey,
    entry: &Entry,
) -> Result<Vec<u8>, ()> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| ())?;
    let mut body = entry.plaintext();
    fleet
        .sealing_key()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated(prefix, key)),
            &mut body,
        )
        .map_err(|_| ())?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(FORMAT);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The entry sealed in `value` under the name `key` and `prefix`; `None` when it does not open
/// (another fleet key, name or prefix, changed bytes, an unknown format).
pub(crate) fn open(fleet: &FleetKey, prefix: &str, key: &SharedKey, value: &[u8]) -> Option<Entry> {
    if value.len() < HEADER + TAG_LEN || value[0] != FORMAT {
        return None;
    }
    let nonce: [u8; NONCE_LEN] = value[1..HEADER].try_into().ok()?;
    let mut body = value[HEADER..].to_vec();
    let plain = fleet
        .sealing_key()
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated(prefix, key)),
            &mut body,
        )
        .ok()?;
    Entry::from_plaintext(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(byte: u8) -> FleetKey {
        FleetKey::new(&[byte; 32]).unwrap()
    }

    #[test]
    fn entries_open_as_they_were_sealed() {
        let fleet = fleet(1);
        let key = fleet.digest(b"token");
        for entry in [
            Entry::Active {
                answer: br#"{"active":true,"scope":"system/Patient.rs","client_id":"app"}"#
                    .to_vec(),
                until_ms: 1_700_000_000_123,
            },
            Entry::Inactive,
            Entry::Revoked,
        ] {
            let value = seal(&fleet, "p:", &key, &entry).unwrap();
            assert_eq!(open(&fleet, "p:", &key, &value), Some(entry));
        }
    }

    #[test]
    fn a_value_shows_no_scope_client_or_answer_and_two_seals_differ() {
        let fleet = fleet(1);
        let key = fleet.digest(b"token");
        let entry = Entry::Active {
            answer: br#"{"active":true,"scope":"system/Patient.rs","client_id":"app-1"}"#.to_vec(),
            until_ms: 5,
        };
        let a = seal(&fleet, "p:", &key, &entry).unwrap();
        let b = seal(&fleet, "p:", &key, &entry).unwrap();
        assert_ne!(a, b, "a fresh nonce each write");
        for clear in [&b"Patient"[..], b"app-1", b"active", b"scope"] {
            assert!(!a.windows(clear.len()).any(|w| w == clear), "{clear:?}");
        }
    }

    #[test]
    fn a_changed_byte_another_name_or_another_fleet_key_does_not_open() {
        let fleet1 = fleet(1);
        let key = fleet1.digest(b"token");
        let value = seal(&fleet1, "p:", &key, &Entry::Inactive).unwrap();
        for i in 0..value.len() {
            let mut tampered = value.clone();
            tampered[i] ^= 0x01;
            assert_eq!(open(&fleet1, "p:", &key, &tampered), None, "byte {i}");
        }
        assert_eq!(open(&fleet1, "p:", &fleet1.digest(b"other"), &value), None);
        assert_eq!(open(&fleet(2), "p:", &key, &value), None);
        assert_eq!(open(&fleet1, "p:", &key, &value[..value.len() - 1]), None);
        assert_eq!(open(&fleet1, "p:", &key, b""), None);
        assert_eq!(open(&fleet1, "q:", &key, &value), None, "another prefix");
    }
}

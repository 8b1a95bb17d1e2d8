//! The path of a FHIR request: its segments, refused where they are ambiguous
//! (docs/AUTHORIZATION.md §8).

use super::request::ClassifyError;
use crate::fhir::ResourceType;

/// Splits a relative path (without its leading `/`) into its segments, the first `out.len()` of
/// them into `out`, in one pass over the bytes; returns how many there are.
///
/// Rejects the path traps of docs/AUTHORIZATION.md §8: empty segments (`//`, trailing `/`), `.` and `..`,
/// any percent-encoding (encoded `/`, `.`, `$`, or an encoded letter in a type or id), a
/// backslash, and `;` (a servlet container drops `;…` from a segment before resolving `..`, so
/// `/bulk/..;/Patient/1` would reach `Patient/1`; no FHIR type, id or operation contains it).
pub(crate) fn split_segments<'p>(
    path: &'p str,
    out: &mut [&'p str],
) -> Result<usize, ClassifyError> {
    if path.is_empty() {
        return Ok(0);
    }
    let mut count = 0;
    let mut push = |segment: Option<&'p str>| {
        let segment = segment.ok_or(ClassifyError::MalformedPath)?;
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(ClassifyError::MalformedPath);
        }
        if let Some(slot) = out.get_mut(count) {
            *slot = segment;
        }
        count += 1;
        Ok(())
    };
    let mut start = 0;
    for (i, &byte) in path.as_bytes().iter().enumerate() {
        match byte {
            // `/` is ASCII, so `start..i` always lies on character boundaries.
            b'/' => {
                push(path.get(start..i))?;
                start = i + 1;
            }
            b'%' | b'\\' | b';' => return Err(ClassifyError::MalformedPath),
            _ => {}
        }
    }
    push(path.get(start..))?;
    Ok(count)
}

pub(crate) fn is_operation(segment: &str) -> bool {
    segment.len() > 1 && segment.starts_with('$')
}

pub(crate) fn resource_type(segment: &str) -> Result<ResourceType, ClassifyError> {
    ResourceType::parse(segment).ok_or(ClassifyError::Undefined)
}

/// FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`, and never `.` or `..` (checked earlier).
pub(crate) fn resource_id(segment: &str) -> Result<(), ClassifyError> {
    let valid = (1..=64).contains(&segment.len())
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(ClassifyError::Undefined)
    }
}

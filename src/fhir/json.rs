//! Streaming readers for the JSON bodies the guard authorizes (batch and transaction Bundles,
//! `$export` Parameters): they keep only the members the guard reads and skip the rest, so a
//! body costs its own bytes and a few strings, never a tree of values many times its size.
//!
//! Pure logic on `serde`'s visitor API. Every object read here refuses a member name it has
//! already seen: a parser that keeps the first of two `"method"` members and one that keeps the
//! last would disagree on what the request does.

use std::{borrow::Cow, collections::HashSet, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The member names of one object, to refuse a repeated one.
#[derive(Debug, Default)]
pub(crate) struct Members<'de>(HashSet<Cow<'de, str>>);

impl<'de> Members<'de> {
    /// Records `name`; an error when the object already had it.
    pub(crate) fn insert<E: de::Error>(&mut self, name: Cow<'de, str>) -> Result<(), E> {
        if self.0.contains(&name) {
            return Err(E::custom(format_args!("repeated member {name:?}")));
        }
        self.0.insert(name);
        Ok(())
    }
}

/// The next member name of an object, borrowed from the body where it has no escapes.
pub(crate) fn next_name<'de, A: MapAccess<'de>>(
    map: &mut A,
    members: &mut Members<'de>,
) -> Result<Option<Cow<'de, str>>, A::Error> {
    let Some(Name(name)) = map.next_key::<Name<'de>>()? else {
        return Ok(None);
    };
    members.insert::<A::Error>(name.clone())?;
    Ok(Some(name))
}

struct Name<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// A member's value where the guard expects a string: the string, `null`, or anything else
/// (read through, with every object in it checked for repeated members).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Text {
    Null,
    String(String),
    Other,
}

impl Text {
    /// The string, if it is one.
    pub(crate) fn into_string(self) -> Option<String> {
        match self {
            Text::String(s) => Some(s),
            Text::Null | Text::Other => None,
        }
    }
}

impl<'de> de::Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Walk::new(&mut |_: &str| {}).capturing())
    }
}

/// Walks any JSON value, calling `on_reference` with the string value of every `reference`
/// member in it (at any depth), and refusing repeated member names in every object. Returns the
/// value itself as [`Text`] when asked to capture a string.
///
/// Recursive on the value's nesting, which the caller bounds before parsing (`too_deep`);
/// `serde_json` also stops at 128 levels.
pub(crate) struct Walk<'f> {
    on_reference: &'f mut dyn FnMut(&str),
    capture: bool,
}

impl<'f> Walk<'f> {
    pub(crate) fn new(on_reference: &'f mut dyn FnMut(&str)) -> Self {
        Self {
            on_reference,
            capture: false,
        }
    }

    /// Returns a string value as [`Text::String`] instead of dropping it.
    pub(crate) fn capturing(mut self) -> Self {
        self.capture = true;
        self
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Text;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Text, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(if self.capture {
            Text::String(v.to_owned())
        } else {
            Text::Other
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
        Ok(Text::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
        Ok(Text::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
        Ok(Text::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
        Ok(Text::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
        while seq
            .next_element_seed(Walk::new(&mut *self.on_reference))?
            .is_some()
        {}
        Ok(Text::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
        let mut members = Members::default();
        while let Some(name) = next_name(&mut map, &mut members)? {
            let walk = Walk::new(&mut *self.on_reference);
            if name == "reference" {
                if let Text::String(reference) = map.next_value_seed(walk.capturing())? {
                    (self.on_reference)(&reference);
                }
            } else {
                map.next_value_seed(walk)?;
            }
        }
        Ok(Text::Other)
    }
}

/// The `visit_*` methods of a visitor for every JSON value that is neither an object nor an
/// array (a string, a boolean, a number, `null`), each answering `$value`, with `$this` bound to
/// the visitor.
macro_rules! scalars {
    (|$this:ident| $value:expr) => {
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            #[allow(unused_mut)]
            let mut $this = self;
            Ok($value)
        }

        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            #[allow(unused_mut)]
            let mut $this = self;
            Ok($value)
        }

        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            #[allow(unused_mut)]
            let mut $this = self;
            Ok($value)
        }

        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            #[allow(unused_mut)]
            let mut $this = self;
            Ok($value)
        }

        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            #[allow(unused_mut)]
            let mut $this = self;
            Ok($value)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            #[allow(unused_mut)]
            let mut $this = self;
            Ok($value)
        }
    };
}
pub(crate) use scalars;

/// Skips a value whose content the guard does not read, still refusing repeated members.
pub(crate) fn skip<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value_seed(Walk::new(&mut |_: &str| {}))
        .map(|_| ())
}

/// Reads through a sequence's remaining elements.
pub(crate) fn drain<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn references(json: &str) -> Result<Vec<String>, serde_json::Error> {
        let mut found = Vec::new();
        let mut de = serde_json::Deserializer::from_str(json);
        Walk::new(&mut |r: &str| found.push(r.to_owned())).deserialize(&mut de)?;
        de.end()?;
        Ok(found)
    }

    #[test]
    fn a_walk_finds_every_reference_at_any_depth() {
        let json = r#"{"subject":{"reference":"Patient?identifier=1"},
            "performer":[{"reference":"Practitioner/1"},{"x":{"reference":"Group?name=a"}}],
            "reference":{"reference":"List?code=z"}, "n": [1, true, null, 2.5, "s"]}"#;
        assert_eq!(
            references(json).expect("valid"),
            [
                "Patient?identifier=1",
                "Practitioner/1",
                "Group?name=a",
                "List?code=z"
            ]
        );
    }

    #[test]
    fn a_repeated_member_name_is_refused_in_any_object() {
        assert!(references(r#"{"a":1,"a":2}"#).is_err());
        assert!(references(r#"{"x":[{"reference":"A/1","reference":"B?c=d"}]}"#).is_err());
        assert!(
            references(r#"{"a":1,"\u0061":2}"#).is_err(),
            "escaped spelling"
        );
        assert!(references(r#"{"a":{"b":1},"b":{"b":2}}"#).is_ok());
    }

    #[test]
    fn text_tells_strings_from_null_and_other_values() {
        let text = |json: &str| serde_json::from_str::<Text>(json).expect("valid");
        assert_eq!(text(r#""GET""#), Text::String("GET".to_owned()));
        assert_eq!(text("null"), Text::Null);
        assert_eq!(text("1"), Text::Other);
        assert_eq!(text(r#"{"a":"b"}"#), Text::Other);
        assert!(serde_json::from_str::<Text>(r#"[{"a":1,"a":1}]"#).is_err());
    }
}

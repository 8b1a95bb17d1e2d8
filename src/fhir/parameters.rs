//! The `Parameters` body of a `POST $export` kick-off, streamed: each parameter's `name` and
//! `valueString`, nothing else kept.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{
    bundle::too_deep,
    json::{self, Members, Text},
};

/// One parameter: its name, and its `valueString` when it has one (`None` for another value
/// type, which the caller treats as unreadable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parameter {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
}

/// A body that is not JSON the guard can read: not JSON, nested deeper than the limit, not an
/// object, a parameter list that is not a list of objects, or an object with a repeated member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The parameters of a `Parameters` resource; `Ok(None)` for JSON of another resource type.
pub(crate) fn parse(body: &[u8], max_depth: usize) -> Result<Option<Vec<Parameter>>, Malformed> {
    if too_deep(body, max_depth) {
        return Err(Malformed);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let (resource_type, parameters) = deserializer
        .deserialize_map(Resource)
        .map_err(|_| Malformed)?;
    deserializer.end().map_err(|_| Malformed)?;
    Ok((resource_type.as_deref() == Some("Parameters")).then_some(parameters))
}

struct Resource;

impl<'de> Visitor<'de> for Resource {
    type Value = (Option<String>, Vec<Parameter>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Parameters resource")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::default();
        let (mut resource_type, mut parameters) = (None, Vec::new());
        while let Some(name) = json::next_name(&mut map, &mut members)? {
            match &*name {
                "resourceType" => resource_type = map.next_value::<Text>()?.into_string(),
                "parameter" => parameters = map.next_value_seed(List)?,
                _ => json::skip(&mut map)?,
            }
        }
        Ok((resource_type, parameters))
    }
}

struct List;

impl<'de> DeserializeSeed<'de> for List {
    type Value = Vec<Parameter>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for List {
    type Value = Vec<Parameter>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of parameters")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(parameter) = seq.next_element_seed(One)? {
            out.extend(parameter);
        }
        Ok(out)
    }
}

/// One parameter object; one without a string `name` is left out.
struct One;

impl<'de> DeserializeSeed<'de> for One {
    type Value = Option<Parameter>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for One {
    type Value = Option<Parameter>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parameter")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::default();
        let (mut name, mut value) = (None, None);
        while let Some(member) = json::next_name(&mut map, &mut members)? {
            match &*member {
                "name" => name = map.next_value::<Text>()?.into_string(),
                "valueString" => value = map.next_value::<Text>()?.into_string(),
                _ => json::skip(&mut map)?,
            }
        }
        Ok(name.map(|name| Parameter { name, value }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_string_values_are_read_and_the_rest_skipped() {
        let body = br#"{"resourceType":"Parameters","id":"x","parameter":[
            {"name":"_type","valueString":"Patient,Observation"},
            {"name":"_since","valueInstant":"2020-01-01T00:00:00Z"},
            {"valueString":"no name"},
            {"name":"_typeFilter","valueString":"Patient?active=true","part":[{"a":1}]}]}"#;
        let parameters = parse(body, 64).expect("JSON").expect("Parameters");
        let pairs: Vec<(&str, Option<&str>)> = parameters
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("_type", Some("Patient,Observation")),
                ("_since", None),
                ("_typeFilter", Some("Patient?active=true")),
            ]
        );
    }

    #[test]
    fn other_resources_are_not_parameters_and_unreadable_bodies_are_malformed() {
        assert_eq!(
            parse(br#"{"resourceType":"Patient","parameter":[]}"#, 64),
            Ok(None)
        );
        for body in [
            &br#"[{"resourceType":"Parameters"}]"#[..],
            br#"{"resourceType":"Parameters","parameter":{}}"#,
            br#"{"resourceType":"Parameters","parameter":[{"name":"_type","name":"x"}]}"#,
            br#"{"resourceType":"Parameters","resourceType":"Parameters"}"#,
            b"not json",
            &[b'['; 100],
        ] {
            assert_eq!(
                parse(body, 64),
                Err(Malformed),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

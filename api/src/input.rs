//! Strict request input: JSON bodies read field by field, so that a wrong JSON type is refused
//! (never coerced: poem-openapi reads `"account_id": 123` as the string `"123"`) and every
//! problem names its field; and query strings that hold only known parameters, each once.
//!
//! The documented schema stays the `Object` derive's (the spec is generated from it); only the
//! parsing is ours. Problems travel as [`ApiError::Validation`] and become a problem document
//! in `error.rs`, like every other error.

use poem::{Request, RequestBody};
use poem_openapi::{
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde_json::{Map, Value};
use shared::statement::FieldError;

use crate::error::ApiError;

/// A JSON body parsed by [`FromJsonFields`] instead of poem-openapi's lenient `ParseFromJSON`,
/// documented with `T`'s schema.
#[derive(Debug)]
pub(crate) struct StrictJson<T>(pub T);

/// A body type read from a JSON object field by field.
pub(crate) trait FromJsonFields: Sized {
    /// Takes the type's fields from `fields`; `None` when any was missing or invalid (the
    /// problems are recorded in `fields`).
    fn from_fields(fields: &mut JsonFields) -> Option<Self>;
}

impl<T: Type> Payload for StrictJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    /// `application/json` or any `application/*+json`, like poem-openapi's `Json`.
    fn check_content_type(content_type: &str) -> bool {
        <poem_openapi::payload::Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: FromJsonFields + Send> ParsePayload for StrictJson<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        // Bounded here too, whatever the connection layer does (no extractor reads more).
        let data = body
            .take()?
            .into_bytes_limit(crate::MAX_BODY_BYTES)
            .await
            .map_err(|_| poem::Error::from_status(poem::http::StatusCode::PAYLOAD_TOO_LARGE))?;
        parse_body(&data).map(Self).map_err(|errors| ApiError::Validation(errors).into())
    }
}

poem_openapi::impl_apirequest_for_payload!(StrictJson<T>, T: FromJsonFields + Type + Send);

/// Parses a whole body: a JSON object whose fields `T` takes, nothing else in it.
pub(crate) fn parse_body<T: FromJsonFields>(data: &[u8]) -> Result<T, Vec<FieldError>> {
    let body_error = |message: String| vec![FieldError::new("body", message)];
    if data.iter().all(u8::is_ascii_whitespace) {
        return Err(body_error("is required: a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    let read =
        serde::Deserializer::deserialize_map(&mut de, ObjectReader).and_then(|read| de.end().map(|()| read));
    let (object, repeated) = match read {
        Ok(read) => read,
        // Valid JSON, but not an object: say what it is.
        Err(e) if e.is_data() => {
            let kind = serde_json::from_slice::<Value>(data).map_or("valid JSON", |other| json_kind(&other));
            return Err(body_error(format!("must be a JSON object, not {kind}")));
        }
        // serde_json says what it expected and where ("expected `:` at line 1 column 14").
        Err(e) => return Err(body_error(format!("is not valid JSON: {e}"))),
    };
    let mut fields = JsonFields { object, errors: Vec::new() };
    // A reader that keeps the first of a repeated name would see another request than one
    // that keeps the last, so a repeat is refused.
    for name in repeated {
        fields.errors.push(FieldError::new(name, "may be given at most once"));
    }
    let value = T::from_fields(&mut fields);
    for name in fields.object.keys() {
        fields.errors.push(FieldError::new(name.clone(), "is not a field of this request"));
    }
    match value {
        Some(value) if fields.errors.is_empty() => Ok(value),
        _ => Err(fields.errors),
    }
}

/// A JSON object's fields, taken one by one; what is left at the end is unknown.
#[derive(Debug)]
pub(crate) struct JsonFields {
    object: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl JsonFields {
    /// A required string field.
    pub(crate) fn string(&mut self, name: &'static str) -> Option<String> {
        match self.object.remove(name) {
            None => {
                self.errors.push(FieldError::new(name, "is required"));
                None
            }
            Some(value) => self.as_string(name, value),
        }
    }

    /// An optional string field; `null` is refused (leave the field out instead).
    pub(crate) fn optional_string(&mut self, name: &'static str) -> Option<Option<String>> {
        match self.object.remove(name) {
            None => Some(None),
            Some(value) => self.as_string(name, value).map(Some),
        }
    }

    /// An optional string field that `parse` turns into a value (an enum); `parse`'s error
    /// names the field.
    pub(crate) fn optional_parsed<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Option<Option<T>> {
        match self.optional_string(name)? {
            None => Some(None),
            Some(raw) => parse(&raw).map(Some).map_err(|e| self.errors.push(e)).ok(),
        }
    }

    /// An optional array of strings, each turned into a value by `parse` (whose error names the
    /// field); `null` is refused.
    pub(crate) fn optional_strings<T>(
        &mut self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, FieldError>,
    ) -> Option<Option<Vec<T>>> {
        let items = match self.object.remove(name) {
            None => return Some(None),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.errors
                    .push(FieldError::new(name, format!("must be a JSON array, not {}", json_kind(&other))));
                return None;
            }
        };
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::String(raw) => match parse(&raw) {
                    Ok(value) => values.push(value),
                    Err(e) => {
                        self.errors.push(e);
                        return None;
                    }
                },
                other => {
                    let message = format!("must hold JSON strings, not {}", json_kind(&other));
                    self.errors.push(FieldError::new(name, message));
                    return None;
                }
            }
        }
        Some(Some(values))
    }

    /// A required string field that `parse` turns into a value (an enum); `parse`'s error names
    /// the field.
    pub(crate) fn parsed<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Option<T> {
        let raw = self.string(name)?;
        parse(&raw).map_err(|e| self.errors.push(e)).ok()
    }

    /// An optional whole number (within `i64`); `null`, a fraction or a string is refused.
    /// Its range is the caller's to check, with its own words.
    pub(crate) fn optional_integer(&mut self, name: &'static str) -> Option<Option<i64>> {
        match self.object.remove(name) {
            None => Some(None),
            Some(Value::Number(n)) if n.is_i64() => Some(n.as_i64()),
            Some(Value::Number(n)) if n.is_u64() => {
                self.errors.push(FieldError::new(name, "is too large"));
                None
            }
            Some(other) => {
                let kind = if other.is_number() { "a fraction" } else { json_kind(&other) };
                self.errors.push(FieldError::new(name, format!("must be a whole number, not {kind}")));
                None
            }
        }
    }

    /// Refuses a field this request may not give (one fixed when the resource was made), with
    /// `message` saying why, rather than the generic "is not a field of this request".
    pub(crate) fn refuse_present(&mut self, name: &'static str, message: &str) {
        if self.object.remove(name).is_some() {
            self.errors.push(FieldError::new(name, message.to_owned()));
        }
    }

    /// An optional boolean field; `null` is refused.
    pub(crate) fn optional_bool(&mut self, name: &'static str) -> Option<Option<bool>> {
        match self.object.remove(name) {
            None => Some(None),
            Some(Value::Bool(b)) => Some(Some(b)),
            Some(other) => {
                self.errors
                    .push(FieldError::new(name, format!("must be true or false, not {}", json_kind(&other))));
                None
            }
        }
    }

    fn as_string(&mut self, name: &'static str, value: Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.errors
                    .push(FieldError::new(name, format!("must be a JSON string, not {}", json_kind(&other))));
                None
            }
        }
    }
}

/// "a number", "null", … : what a client sent, in words.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refuses a query string naming a parameter the operation does not have (a typo such as
/// `acount_id` would otherwise silently widen the result), or naming one twice.
pub(crate) fn check_query_names(query: Option<&str>, known: &[&str]) -> Result<(), Vec<FieldError>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| vec![FieldError::new("query", "is not a valid URL query string")])?;
    let mut errors = Vec::new();
    let mut seen = Vec::new();
    for (name, _) in pairs {
        if !known.contains(&name.as_str()) {
            errors.push(FieldError::new(
                name,
                match known {
                    [] => "is not a parameter of this operation (it takes none)".to_owned(),
                    _ => format!("is not a parameter of this operation (known: {})", known.join(", ")),
                },
            ));
        } else if seen.contains(&name) {
            errors.push(FieldError::new(name, "may be given at most once"));
        } else {
            seen.push(name);
        }
    }
    errors.dedup();
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Reads a JSON object in one pass, with the names it gives more than once (a `Map` keeps only
/// the last of them).
struct ObjectReader;

impl<'de> serde::de::Visitor<'de> for ObjectReader {
    type Value = (Map<String, Value>, Vec<String>);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut object, mut repeated) = (Map::new(), Vec::new());
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            if object.insert(name.clone(), value).is_some() && !repeated.contains(&name) {
                repeated.push(name);
            }
        }
        Ok((object, repeated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Body {
        name: String,
        flag: Option<bool>,
        note: Option<String>,
        size: Option<u8>,
    }

    impl FromJsonFields for Body {
        fn from_fields(fields: &mut JsonFields) -> Option<Self> {
            let name = fields.string("name");
            let flag = fields.optional_bool("flag");
            let note = fields.optional_string("note");
            let size = fields.optional_parsed("size", |raw| match raw {
                "small" => Ok(1),
                "large" => Ok(9),
                _ => Err(FieldError::new("size", "must be small or large")),
            });
            Some(Self { name: name?, flag: flag?, note: note?, size: size? })
        }
    }

    fn errors(body: &str) -> Vec<(String, String)> {
        parse_body::<Body>(body.as_bytes())
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field.into_owned(), e.message))
            .collect()
    }

    #[test]
    fn well_typed_bodies_parse_with_absent_optional_fields() {
        let body: Body = parse_body(br#"{"name": "a"}"#).unwrap();
        assert_eq!(body, Body { name: "a".into(), flag: None, note: None, size: None });
        let body: Body = parse_body(br#"{"name": "a", "flag": true, "note": "n", "size": "large"}"#).unwrap();
        assert_eq!(body, Body { name: "a".into(), flag: Some(true), note: Some("n".into()), size: Some(9) });
    }

    #[test]
    fn wrong_types_nulls_missing_and_unknown_fields_are_each_named() {
        let got = errors(r#"{"name": 123, "flag": "yes", "note": null, "extra": 1}"#);
        assert_eq!(
            got,
            [
                ("name".into(), "must be a JSON string, not a number".into()),
                ("flag".into(), "must be true or false, not a string".into()),
                ("note".into(), "must be a JSON string, not null".into()),
                ("extra".into(), "is not a field of this request".into()),
            ]
        );
        assert_eq!(errors("{}"), [("name".into(), "is required".into())]);
        assert_eq!(
            errors(r#"{"name": "a", "size": "huge"}"#),
            [("size".into(), "must be small or large".into())]
        );
        assert_eq!(
            errors(r#"{"name": "a", "size": 3}"#),
            [("size".into(), "must be a JSON string, not a number".into())]
        );
        assert_eq!(errors(r#"{"name": true, "flag": 1}"#)[1].1, "must be true or false, not a number");
    }

    #[test]
    fn whole_numbers_are_read_as_such_and_nothing_else_is() {
        #[derive(Debug)]
        struct Numbered(Option<i64>);
        impl FromJsonFields for Numbered {
            fn from_fields(fields: &mut JsonFields) -> Option<Self> {
                fields.refuse_present("fixed", "cannot be changed");
                Some(Self(fields.optional_integer("n")?))
            }
        }
        let read = |body: &str| parse_body::<Numbered>(body.as_bytes()).map(|n| n.0);
        assert_eq!(read(r#"{"n": -3}"#).unwrap(), Some(-3));
        assert_eq!(read("{}").unwrap(), None);
        let message = |body: &str| read(body).unwrap_err()[0].message.clone();
        assert_eq!(message(r#"{"n": 1.5}"#), "must be a whole number, not a fraction");
        assert_eq!(message(r#"{"n": "1"}"#), "must be a whole number, not a string");
        assert_eq!(message(r#"{"n": null}"#), "must be a whole number, not null");
        assert_eq!(message(r#"{"n": 18446744073709551615}"#), "is too large");
        assert_eq!(read(r#"{"fixed": 1}"#).unwrap_err(), [FieldError::new("fixed", "cannot be changed")]);
    }

    #[test]
    fn a_field_given_twice_is_refused_rather_than_the_last_one_taken() {
        assert_eq!(
            errors(r#"{"name": "a", "name": "b"}"#),
            [("name".into(), "may be given at most once".into())]
        );
    }

    #[test]
    fn bodies_that_are_not_json_objects_name_the_body() {
        assert_eq!(errors("")[0], ("body".into(), "is required: a JSON object".into()));
        assert_eq!(errors("[1]")[0], ("body".into(), "must be a JSON object, not an array".into()));
        let (field, message) = &errors("{not json")[0];
        assert_eq!(field, "body");
        assert!(message.starts_with("is not valid JSON: key must be a string at line 1"), "{message}");
    }

    #[test]
    fn query_strings_hold_known_parameters_once() {
        let known = ["limit", "status"];
        assert!(check_query_names(None, &known).is_ok());
        assert!(check_query_names(Some("limit=5&status=PENDING"), &known).is_ok());
        let err = check_query_names(Some("limt=5"), &known).unwrap_err();
        assert_eq!(err[0].field, "limt");
        assert_eq!(err[0].message, "is not a parameter of this operation (known: limit, status)");
        let err = check_query_names(Some("limit=5"), &[]).unwrap_err();
        assert_eq!(err[0].message, "is not a parameter of this operation (it takes none)");
        let err = check_query_names(Some("limit=5&limit=6&limit=7"), &known).unwrap_err();
        assert_eq!(err, [FieldError::new("limit", "may be given at most once")]);
    }
}

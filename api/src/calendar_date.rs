//! A calendar day in the API's JSON, documented as OpenAPI `type: string, format: date`.
//!
//! poem-openapi documents `time::Date` as `format: naive-date`, which no validator or client
//! generator knows; this type says `date`, so generated clients type it as a date and
//! validators check it.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef},
    types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type},
};
use serde_json::Value;

/// `YYYY-MM-DD`: as a client sent it (a request's `date_from`/`date_to`, checked by
/// `shared::statement::DateRange` with messages of its own) or as the API shows a stored date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarDate(pub String);

impl From<time::Date> for CalendarDate {
    fn from(date: time::Date) -> Self {
        // `Date`'s `Display` is ISO 8601 (`2024-01-31`) for years 0 to 9999.
        Self(date.to_string())
    }
}

impl Type for CalendarDate {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_date".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "date")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for CalendarDate {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(text) => Ok(Self(text)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for CalendarDate {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_date_is_shown_in_iso_form() {
        let date = CalendarDate::from(time::macros::date!(2024 - 01 - 05));
        assert_eq!(date.to_json(), Some(Value::String("2024-01-05".into())));
    }
}

//! JSON Lines encoding of source rows: one JSON object per row, typed from the result set's
//! metadata, into an internal buffer handed out in chunks (the API of
//! [`crate::csv_out::CsvEncoder`]; [`crate::csv_out::FileBytes`] gzips and hashes either).
//!
//! Conventions (also in the README):
//! - UTF-8, one object per line, each line ending in `\n` (no CR, no trailing comma, no array
//!   around the lines). Keys are the configured column names, in the configured order, in
//!   every object (a NULL is `null`, never a missing key).
//! - Integers (TINYINT … BIGINT, MEDIUMINT, YEAR) are JSON numbers (`-12`, `2024`; ZEROFILL's
//!   leading zeros dropped). A BIGINT beyond ±2^53 is exact in the file, but a reader that
//!   parses every number as a double (JavaScript) rounds it.
//! - DECIMAL is a string holding the value exactly as stored (`"-12.30"`): no reader rounds it.
//! - FLOAT and DOUBLE are JSON numbers, written as the server printed them (`1.5`, `1e20`);
//!   a value that is not a valid JSON number is written as a string.
//! - BIT is a JSON number (its bits, big-endian: `b'101'` is `5`).
//! - DATE and TIME are strings as stored (`"2024-01-31"`, `"-838:59:59"`); DATETIME and
//!   TIMESTAMP take ISO 8601's `T` like the CSV (`"2024-01-01T08:15:30.123456"`).
//! - JSON columns are embedded as JSON values when the stored text is valid JSON, else strings.
//! - Every other column (CHAR, VARCHAR, TEXT, ENUM, SET, and BINARY, VARBINARY, BLOB, spatial)
//!   is a JSON string when its bytes are UTF-8 (control characters, quotes and backslashes
//!   escaped by serde_json), and otherwise `{"base64": "…"}` with the bytes in standard base64
//!   (RFC 4648, padded): an object, so no reader mistakes bytes for text.

use std::io::Write as _;

use base64::Engine as _;
use bytes::Bytes;
use mysql_async::{Column, consts::ColumnType};

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// Integers and YEAR: a JSON number.
    Integer,
    /// DECIMAL: a string, exactly as stored.
    Decimal,
    /// FLOAT / DOUBLE: a JSON number when the text is one, else a string.
    Float,
    /// BIT: its bits as a JSON number.
    Bit,
    /// DATE, TIME: a string.
    Date,
    /// DATETIME / TIMESTAMP: a string with `T` between date and time.
    DateTime,
    /// JSON: embedded when valid, else a string.
    Json,
    /// Anything else: a string when UTF-8, else `{"base64": …}`.
    Text,
}

/// How each result column is written to JSON Lines, from the result set's metadata.
pub fn json_kinds(columns: &[Column]) -> Vec<JsonKind> {
    columns
        .iter()
        .map(|c| match c.column_type() {
            ColumnType::MYSQL_TYPE_TINY
            | ColumnType::MYSQL_TYPE_SHORT
            | ColumnType::MYSQL_TYPE_LONG
            | ColumnType::MYSQL_TYPE_LONGLONG
            | ColumnType::MYSQL_TYPE_INT24
            | ColumnType::MYSQL_TYPE_YEAR => JsonKind::Integer,
            ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL => JsonKind::Decimal,
            ColumnType::MYSQL_TYPE_FLOAT | ColumnType::MYSQL_TYPE_DOUBLE => JsonKind::Float,
            ColumnType::MYSQL_TYPE_BIT => JsonKind::Bit,
            ColumnType::MYSQL_TYPE_DATE
            | ColumnType::MYSQL_TYPE_NEWDATE
            | ColumnType::MYSQL_TYPE_TIME
            | ColumnType::MYSQL_TYPE_TIME2 => JsonKind::Date,
            ColumnType::MYSQL_TYPE_DATETIME
            | ColumnType::MYSQL_TYPE_DATETIME2
            | ColumnType::MYSQL_TYPE_TIMESTAMP
            | ColumnType::MYSQL_TYPE_TIMESTAMP2 => JsonKind::DateTime,
            ColumnType::MYSQL_TYPE_JSON => JsonKind::Json,
            _ => JsonKind::Text,
        })
        .collect()
}

/// Encodes records as JSON Lines into an internal buffer handed out in chunks.
pub struct JsonlEncoder {
    /// Each column's key, JSON-encoded with its `:` (`"amount":`).
    keys: Vec<Vec<u8>>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    chunk_size: usize,
}

impl JsonlEncoder {
    /// An encoder handing out chunks of about `chunk_size` bytes. Give it the column names
    /// with [`JsonlEncoder::set_columns`] before the first record.
    pub fn new(chunk_size: usize) -> Self {
        Self {
            keys: Vec::new(),
            buf: Vec::with_capacity(chunk_size + 64 * 1024),
            scratch: Vec::new(),
            chunk_size,
        }
    }

    /// The keys of every object: the column names, in order. Writes nothing (JSON Lines has
    /// no header).
    pub fn set_columns<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.keys = names
            .into_iter()
            .map(|name| {
                let mut key = serde_json::to_vec(name).expect("a str always serializes");
                key.push(b':');
                key
            })
            .collect();
    }

    /// Appends one record. `None` is SQL NULL; `kinds` and the column names have one entry per
    /// field (a field beyond the names is keyed by its position, from 0).
    pub fn write_record<'a>(
        &mut self,
        kinds: &[JsonKind],
        fields: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) {
        self.buf.push(b'{');
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            match self.keys.get(i) {
                Some(key) => self.buf.extend_from_slice(key),
                None => {
                    let _ = write!(self.buf, "\"{i}\":");
                }
            }
            let Some(value) = field else {
                self.buf.extend_from_slice(b"null");
                continue;
            };
            match kinds.get(i).copied().unwrap_or(JsonKind::Text) {
                JsonKind::Integer => {
                    match std::str::from_utf8(value).ok().and_then(|s| s.parse::<i128>().ok()) {
                        Some(n) => {
                            let _ = write!(self.buf, "{n}");
                        }
                        None => self.push_text(value),
                    }
                }
                JsonKind::Float if is_json_number(value) => self.buf.extend_from_slice(value),
                JsonKind::Bit if value.len() <= 8 => {
                    let n = value.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
                    let _ = write!(self.buf, "{n}");
                }
                JsonKind::DateTime if value.len() > 10 && value[10] == b' ' => {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(value);
                    self.scratch[10] = b'T';
                    let scratch = std::mem::take(&mut self.scratch);
                    self.push_text(&scratch);
                    self.scratch = scratch;
                }
                JsonKind::Json if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok() => {
                    // Valid JSON: the document itself, without the whitespace around it.
                    self.buf.extend_from_slice(value.trim_ascii());
                }
                _ => self.push_text(value),
            }
        }
        self.buf.extend_from_slice(b"}\n");
    }

    /// A JSON string when `value` is UTF-8, else `{"base64":"…"}`.
    fn push_text(&mut self, value: &[u8]) {
        match std::str::from_utf8(value) {
            Ok(text) => serde_json::to_writer(&mut self.buf, text).expect("writing to a Vec cannot fail"),
            Err(_) => {
                self.buf.extend_from_slice(b"{\"base64\":\"");
                let encoded = base64::engine::general_purpose::STANDARD.encode(value);
                self.buf.extend_from_slice(encoded.as_bytes());
                self.buf.extend_from_slice(b"\"}");
            }
        }
    }

    /// The buffered bytes once at least `chunk_size` have accumulated.
    pub fn take_full_chunk(&mut self) -> Option<Bytes> {
        (self.buf.len() >= self.chunk_size).then(|| self.take())
    }

    /// Whatever is buffered (the final chunk).
    pub fn take(&mut self) -> Bytes {
        let next = Vec::with_capacity(self.chunk_size + 64 * 1024);
        Bytes::from(std::mem::replace(&mut self.buf, next))
    }
}

/// Whether `value` is exactly one JSON number (`-1.5e3`, not `NaN`, `inf`, ` 1` or `01`).
fn is_json_number(value: &[u8]) -> bool {
    matches!(value.first(), Some(b'-' | b'0'..=b'9'))
        && value.last().is_some_and(u8::is_ascii_digit)
        && serde_json::from_slice::<serde::de::IgnoredAny>(value).is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn encode(names: &[&str], kinds: &[JsonKind], fields: &[Option<&[u8]>]) -> String {
        let mut encoder = JsonlEncoder::new(1024);
        encoder.set_columns(names.iter().copied());
        encoder.write_record(kinds, fields.iter().copied());
        String::from_utf8(encoder.take().to_vec()).unwrap()
    }

    fn one(kind: JsonKind, value: &[u8]) -> Value {
        let line = encode(&["v"], &[kind], &[Some(value)]);
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line:?}");
        serde_json::from_str::<Value>(&line).unwrap()["v"].take()
    }

    #[test]
    fn every_kind_has_its_json_type() {
        use JsonKind::*;
        assert_eq!(one(Integer, b"-12"), json!(-12));
        assert_eq!(one(Integer, b"18446744073709551615"), json!(18446744073709551615u64));
        assert_eq!(one(Integer, b"0042"), json!(42), "ZEROFILL");
        assert_eq!(one(Integer, b"2024"), json!(2024), "YEAR");
        assert_eq!(one(Decimal, b"-12.30"), json!("-12.30"));
        assert_eq!(
            one(Decimal, b"123456789012345678901234567890.000001"),
            json!("123456789012345678901234567890.000001")
        );
        assert_eq!(one(Float, b"1.5"), json!(1.5));
        assert_eq!(one(Float, b"-1.2345e-5"), json!(-1.2345e-5));
        assert_eq!(one(Float, b"1e20"), json!(1e20));
        assert_eq!(one(Float, b"inf"), json!("inf"));
        assert_eq!(one(Float, b"NaN"), json!("NaN"));
        assert_eq!(one(Float, b"01"), json!("01"));
        assert_eq!(one(Bit, &[0b101]), json!(5));
        assert_eq!(one(Bit, &[1, 0]), json!(256));
        assert_eq!(one(Date, b"2024-01-31"), json!("2024-01-31"));
        assert_eq!(one(Date, b"-838:59:59"), json!("-838:59:59"));
        assert_eq!(one(DateTime, b"2024-01-01 08:15:30.123456"), json!("2024-01-01T08:15:30.123456"));
        assert_eq!(one(DateTime, b"2024-01-01 00:00:00"), json!("2024-01-01T00:00:00"));
        assert_eq!(one(Json, br#" {"a": [1, "x"]} "#), json!({"a": [1, "x"]}));
        assert_eq!(one(Json, b"{not json"), json!("{not json"));
        assert_eq!(one(Text, "caf\u{e9}".as_bytes()), json!("caf\u{e9}"));
        assert_eq!(one(Text, b""), json!(""));
        assert_eq!(one(Text, &[0xff, 0x00, 0x80]), json!({"base64": "/wCA"}));
    }

    #[test]
    fn rows_are_objects_keyed_by_the_columns_in_order_with_null_for_null() {
        let line = encode(
            &["id", "note", "amount"],
            &[JsonKind::Integer, JsonKind::Text, JsonKind::Decimal],
            &[Some(b"7"), None, Some(b"1.00")],
        );
        assert_eq!(line, "{\"id\":7,\"note\":null,\"amount\":\"1.00\"}\n");
        // Keys are JSON-escaped too.
        let line = encode(&["a \"b\"\n"], &[JsonKind::Integer], &[Some(b"1")]);
        assert_eq!(line, "{\"a \\\"b\\\"\\n\":1}\n");
    }

    #[test]
    fn awkward_strings_round_trip_through_serde_json() {
        let awkward = [
            "Rent \"May\" & <utilities>",
            "line one\nline two\r\nline three",
            "back\\slash \u{1}\u{1f}\u{7f} tab\tend",
            "\u{5EA}\u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{62F}\u{641}\u{639} \u{1F680}",
            "\u{2028}\u{2029} separators",
            "",
        ];
        let mut encoder = JsonlEncoder::new(1024);
        encoder.set_columns(["text"]);
        for text in awkward {
            encoder.write_record(&[JsonKind::Text], [Some(text.as_bytes())]);
        }
        let out = String::from_utf8(encoder.take().to_vec()).unwrap();
        let lines: Vec<&str> = out.split_terminator('\n').collect();
        assert_eq!(lines.len(), awkward.len(), "no raw newline inside a line");
        for (line, text) in lines.iter().zip(awkward) {
            assert!(!line.chars().any(|c| c < ' '), "control characters are escaped: {line:?}");
            assert_eq!(serde_json::from_str::<Value>(line).unwrap()["text"], text);
        }
    }

    #[test]
    fn chunks_are_handed_out_once_full() {
        let mut encoder = JsonlEncoder::new(16);
        encoder.set_columns(["n"]);
        encoder.write_record(&[JsonKind::Integer], [Some(&b"1"[..])]);
        assert!(encoder.take_full_chunk().is_none());
        encoder.write_record(&[JsonKind::Integer], [Some(&b"2"[..])]);
        let chunk = encoder.take_full_chunk().expect("two 8-byte lines fill 16 bytes");
        assert_eq!(&chunk[..], b"{\"n\":1}\n{\"n\":2}\n");
        assert!(encoder.take().is_empty());
    }

    #[test]
    fn kinds_come_from_the_column_types() {
        let kinds = json_kinds(&[
            Column::new(ColumnType::MYSQL_TYPE_LONGLONG),
            Column::new(ColumnType::MYSQL_TYPE_YEAR),
            Column::new(ColumnType::MYSQL_TYPE_NEWDECIMAL),
            Column::new(ColumnType::MYSQL_TYPE_DOUBLE),
            Column::new(ColumnType::MYSQL_TYPE_BIT),
            Column::new(ColumnType::MYSQL_TYPE_DATE),
            Column::new(ColumnType::MYSQL_TYPE_TIMESTAMP),
            Column::new(ColumnType::MYSQL_TYPE_JSON),
            Column::new(ColumnType::MYSQL_TYPE_BLOB),
            Column::new(ColumnType::MYSQL_TYPE_VAR_STRING),
        ]);
        use JsonKind::*;
        assert_eq!(kinds, [Integer, Integer, Decimal, Float, Bit, Date, DateTime, Json, Text, Text]);
    }
}

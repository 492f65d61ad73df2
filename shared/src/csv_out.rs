//! RFC 4180 CSV encoding of source rows, and the file bytes it becomes (optionally gzipped),
//! hashed as they are produced.
//!
//! Conventions (also in the README):
//! - UTF-8, a header row, fields separated by `,`, records terminated by CRLF.
//! - A field is quoted when it holds `,`, `"`, CR or LF (csv-core decides); quotes are doubled.
//! - SQL NULL is an empty, unquoted field; an empty string is `""`.
//! - Values are written exactly as the source's text protocol returns them: decimals as stored,
//!   dates `YYYY-MM-DD`; DATETIME/TIMESTAMP keep their fractional seconds and take ISO 8601's
//!   `T` between date and time (`2024-01-01T08:15:30.123456`).
//! - Formula guard (on by default): a text cell starting with `=`, `+`, `-`, `@`, TAB or CR is
//!   written with a leading `'`, so spreadsheets show it as text instead of running it.
//!   Numeric columns are never altered (a negative amount stays `-12.34`).

use std::io::Write as _;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// The string family (CHAR, VARCHAR, TEXT, ENUM, SET, JSON, and BINARY, VARBINARY, BLOB
    /// alike): subject to the formula guard.
    Text,
    /// DATETIME / TIMESTAMP: `T` between date and time.
    DateTime,
    /// Numbers, dates, times, BIT, spatial values: exactly as returned.
    Verbatim,
}

/// Characters that make a spreadsheet treat a cell as a formula.
const FORMULA_TRIGGERS: &[u8] = b"=+-@\t\r";

/// Encodes records into an internal buffer handed out in chunks.
pub struct CsvEncoder {
    quoter: csv_core::Writer,
    buf: Vec<u8>,
    chunk_size: usize,
    formula_guard: bool,
}

impl CsvEncoder {
    /// An encoder handing out chunks of about `chunk_size` bytes; `formula_guard` prefixes cells a spreadsheet would run.
    pub fn new(chunk_size: usize, formula_guard: bool) -> Self {
        Self {
            quoter: csv_core::WriterBuilder::new().quote_style(csv_core::QuoteStyle::Necessary).build(),
            buf: Vec::with_capacity(chunk_size + 64 * 1024),
            chunk_size,
            formula_guard,
        }
    }

    /// Appends the header row.
    pub fn write_header<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for (i, name) in names.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.push_field(name.as_bytes(), false);
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Appends one record. `None` is SQL NULL; `kinds` has one entry per field.
    pub fn write_record<'a>(
        &mut self,
        kinds: &[ColumnKind],
        fields: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            let Some(value) = field else { continue };
            match kinds.get(i).copied().unwrap_or(ColumnKind::Verbatim) {
                ColumnKind::DateTime if value.len() > 10 && value[10] == b' ' => {
                    // "YYYY-MM-DD HH:MM:SS[.f]" never needs quoting.
                    self.buf.extend_from_slice(&value[..10]);
                    self.buf.push(b'T');
                    self.buf.extend_from_slice(&value[11..]);
                }
                ColumnKind::Text => {
                    let guard =
                        self.formula_guard && value.first().is_some_and(|b| FORMULA_TRIGGERS.contains(b));
                    self.push_field(value, guard);
                }
                _ => self.push_field(value, false),
            }
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    fn push_field(&mut self, value: &[u8], guard: bool) {
        if value.is_empty() {
            self.buf.extend_from_slice(b"\"\"");
            return;
        }
        let quote = self.quoter.should_quote(value);
        if quote {
            self.buf.push(b'"');
        }
        if guard {
            self.buf.push(b'\'');
        }
        if quote {
            let mut parts = value.split(|&b| b == b'"');
            if let Some(first) = parts.next() {
                self.buf.extend_from_slice(first);
            }
            for part in parts {
                self.buf.extend_from_slice(b"\"\"");
                self.buf.extend_from_slice(part);
            }
            self.buf.push(b'"');
        } else {
            self.buf.extend_from_slice(value);
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

/// Turns CSV chunks into the file's bytes (gzip when asked), counting and hashing exactly what
/// is stored, so the recorded size and SHA-256 are the downloaded file's.
pub struct FileBytes {
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
    hasher: Sha256,
    size: u64,
}

impl FileBytes {
    /// The file's bytes, gzip-compressed when `gzip`.
    pub fn new(gzip: bool) -> Self {
        Self {
            gzip: gzip.then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())),
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The file bytes for this CSV chunk (possibly empty while gzip buffers).
    pub fn push(&mut self, csv: Bytes) -> Bytes {
        let out = match &mut self.gzip {
            None => csv,
            Some(gz) => {
                gz.write_all(&csv).expect("writing to a Vec cannot fail");
                Bytes::from(std::mem::take(gz.get_mut()))
            }
        };
        self.account(&out);
        out
    }

    /// The last bytes of the file, its size and its hex SHA-256.
    pub fn finish(mut self) -> (Bytes, u64, String) {
        let last = match self.gzip.take() {
            None => Bytes::new(),
            Some(gz) => Bytes::from(gz.finish().expect("writing to a Vec cannot fail")),
        };
        self.account(&last);
        (last, self.size, hex::encode(self.hasher.finalize()))
    }

    fn account(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(kinds: &[ColumnKind], fields: &[Option<&str>], guard: bool) -> String {
        let mut encoder = CsvEncoder::new(1024, guard);
        encoder.write_record(kinds, fields.iter().map(|f| f.map(str::as_bytes)));
        String::from_utf8(encoder.take().to_vec()).unwrap()
    }

    const TEXT: ColumnKind = ColumnKind::Text;

    #[test]
    fn quotes_only_what_rfc_4180_requires_and_keeps_null_apart_from_empty() {
        let k = [TEXT; 4];
        assert_eq!(encode(&k, &[Some("a"), None, Some(""), Some("1.50")], true), "a,,\"\",1.50\r\n");
        assert_eq!(
            encode(&k, &[Some("a,b"), Some("say \"hi\""), Some("x\r\ny")], true),
            "\"a,b\",\"say \"\"hi\"\"\",\"x\r\ny\"\r\n"
        );
        assert_eq!(
            encode(&k, &[Some("\""), Some("caf\u{e9} \u{1f680}")], true),
            "\"\"\"\",caf\u{e9} \u{1f680}\r\n"
        );
    }

    #[test]
    fn the_formula_guard_prefixes_text_cells_only_and_can_be_turned_off() {
        let kinds = [TEXT, TEXT, TEXT, TEXT, ColumnKind::Verbatim, TEXT];
        let fields = [Some("=SUM(A1)"), Some("+44"), Some("@x"), Some("\rline"), Some("-12.34"), Some("a=b")];
        assert_eq!(encode(&kinds, &fields, true), "'=SUM(A1),'+44,'@x,\"'\rline\",-12.34,a=b\r\n");
        assert_eq!(encode(&kinds, &fields, false), "=SUM(A1),+44,@x,\"\rline\",-12.34,a=b\r\n");
    }

    #[test]
    fn datetimes_take_the_iso_8601_t_and_keep_their_fraction() {
        let kinds = [ColumnKind::DateTime, ColumnKind::DateTime, ColumnKind::Verbatim];
        let fields = [Some("2024-01-01 08:15:30.123456"), Some("2024-01-01 00:00:00"), Some("2024-01-01")];
        assert_eq!(
            encode(&kinds, &fields, true),
            "2024-01-01T08:15:30.123456,2024-01-01T00:00:00,2024-01-01\r\n"
        );
    }

    #[test]
    fn csv_readers_get_the_values_back() {
        let fields = ["plain", "with,comma", "with \"quote\"", "multi\nline\r\nCRLF", "", " spaced "];
        let text = encode(&[TEXT; 6], &fields.map(Some), true);
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(record.iter().collect::<Vec<_>>(), fields);
    }

    #[test]
    fn gzip_output_is_hashed_as_stored_and_decompresses_to_the_csv() {
        use std::io::Read as _;
        let mut file = FileBytes::new(true);
        let mut stored = Vec::new();
        stored.extend_from_slice(&file.push(Bytes::from_static(b"a,b\r\n")));
        stored.extend_from_slice(&file.push(Bytes::from_static(b"1,2\r\n")));
        let (last, size, sha) = file.finish();
        stored.extend_from_slice(&last);
        assert_eq!(size as usize, stored.len());
        assert_eq!(sha, hex::encode(Sha256::digest(&stored)));
        let mut csv = String::new();
        flate2::read::GzDecoder::new(&stored[..]).read_to_string(&mut csv).unwrap();
        assert_eq!(csv, "a,b\r\n1,2\r\n");
    }
}

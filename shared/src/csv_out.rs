//! RFC 4180 CSV encoding of source rows.
//!
//! Conventions (also in the README):
//! - UTF-8, a header row, fields separated by `,`, records terminated by CRLF.
//! - A field is quoted when it holds `,`, `"`, CR or LF (csv-core decides); quotes are doubled.
//! - SQL NULL is an empty, unquoted field; an empty string is `""`. Any RFC 4180 reader that
//!   keeps quoting information (or a plain `split` on the raw line) can tell them apart.
//! - Values are written exactly as the source's text protocol returns them: decimals as stored,
//!   dates `YYYY-MM-DD`, DATETIME with its fractional seconds.

use bytes::Bytes;

/// Encodes records into an internal buffer handed out in chunks.
pub struct CsvEncoder {
    quoter: csv_core::Writer,
    buf: Vec<u8>,
    chunk_size: usize,
}

impl CsvEncoder {
    pub fn new(chunk_size: usize) -> Self {
        Self {
            quoter: csv_core::WriterBuilder::new().quote_style(csv_core::QuoteStyle::Necessary).build(),
            buf: Vec::with_capacity(chunk_size + 64 * 1024),
            chunk_size,
        }
    }

    /// Appends one record. `None` is SQL NULL.
    pub fn write_record<'a>(&mut self, fields: impl IntoIterator<Item = Option<&'a [u8]>>) {
        for (i, field) in fields.into_iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            match field {
                None => {}
                Some([]) => self.buf.extend_from_slice(b"\"\""),
                Some(value) if self.quoter.should_quote(value) => {
                    self.buf.push(b'"');
                    let mut parts = value.split(|&b| b == b'"');
                    if let Some(first) = parts.next() {
                        self.buf.extend_from_slice(first);
                    }
                    for part in parts {
                        self.buf.extend_from_slice(b"\"\"");
                        self.buf.extend_from_slice(part);
                    }
                    self.buf.push(b'"');
                }
                Some(value) => self.buf.extend_from_slice(value),
            }
        }
        self.buf.extend_from_slice(b"\r\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(fields: &[Option<&str>]) -> String {
        let mut encoder = CsvEncoder::new(1024);
        encoder.write_record(fields.iter().map(|f| f.map(str::as_bytes)));
        String::from_utf8(encoder.take().to_vec()).unwrap()
    }

    #[test]
    fn quotes_only_what_rfc_4180_requires_and_keeps_null_apart_from_empty() {
        assert_eq!(encode(&[Some("a"), None, Some(""), Some("1.50")]), "a,,\"\",1.50\r\n");
        assert_eq!(
            encode(&[Some("a,b"), Some("say \"hi\""), Some("x\r\ny")]),
            "\"a,b\",\"say \"\"hi\"\"\",\"x\r\ny\"\r\n"
        );
        assert_eq!(encode(&[Some("\""), Some("caf\u{e9} \u{1f680}")]), "\"\"\"\",caf\u{e9} \u{1f680}\r\n");
    }

    #[test]
    fn csv_readers_get_the_values_back() {
        let fields = ["plain", "with,comma", "with \"quote\"", "multi\nline\r\nCRLF", "", " spaced "];
        let text = encode(&fields.map(Some));
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(record.iter().collect::<Vec<_>>(), fields);
    }
}

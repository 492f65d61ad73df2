//! What a request to the file endpoint asks of a file of known length and entity tag, by its
//! `If-None-Match`, `Range` and `If-Range` (RFC 9110 §13.1.2, §13.1.5, §14.2), evaluated in
//! that order (§13.2.2).
//!
//! Choices where the RFC leaves one:
//! - **One range per request.** A `Range` of several ranges is answered with the whole file
//!   (`200`), which RFC 9110 allows (a server may ignore `Range`); resumable and parallel
//!   downloaders ask for one range at a time.
//! - A `Range` that is not `bytes=first-last`, `bytes=first-` or `bytes=-suffix` (another unit,
//!   `last` before `first`, not a number) is ignored: the whole file.
//! - `If-Range` with a date never matches (the endpoint sends no `Last-Modified`; its strong
//!   validator is the `ETag`), nor does a weak tag: the whole file.
//! - Only `GET` has ranges; `HEAD` describes the whole file (RFC 9110 §14.2).

/// How to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `304 Not Modified`: the client's copy (`If-None-Match`) is current.
    NotModified,
    /// `200 OK`: the whole file.
    Whole,
    /// `206 Partial Content`: bytes `first..=last`.
    Partial { first: u64, last: u64 },
    /// `416 Range Not Satisfiable`: the range holds no byte of the file.
    Unsatisfiable,
}

/// The request's conditional and range headers (each several headers' values joined with
/// commas, as RFC 9110 §5.3 combines them).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asked<'a> {
    pub(crate) if_none_match: Option<&'a str>,
    pub(crate) range: Option<&'a str>,
    pub(crate) if_range: Option<&'a str>,
    /// The method is `GET` (not `HEAD`).
    pub(crate) get: bool,
}

impl Asked<'_> {
    /// The answer for a file of `len` bytes whose strong entity tag is `etag` (quotes included).
    pub(crate) fn answer(&self, etag: &str, len: u64) -> Answer {
        if self.if_none_match.is_some_and(|tags| none_match_fails(tags, etag)) {
            return Answer::NotModified;
        }
        let Some(range) = self.range.filter(|_| self.get) else { return Answer::Whole };
        if self.if_range.is_some_and(|validator| validator.trim() != etag) {
            return Answer::Whole;
        }
        match parse(range) {
            Some(spec) => spec.resolve(len),
            None => Answer::Whole,
        }
    }
}

/// Whether `If-None-Match` names the current representation (`*`, or a tag equal to `etag` by
/// the weak comparison: `W/` ignored).
fn none_match_fails(tags: &str, etag: &str) -> bool {
    tags.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// One byte range as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-last` or `first-` (`last` absent).
    From { first: u64, last: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl Spec {
    fn resolve(self, len: u64) -> Answer {
        match self {
            Self::From { first, .. } if first >= len => Answer::Unsatisfiable,
            Self::From { first, last } => {
                Answer::Partial { first, last: last.map_or(len - 1, |last| last.min(len - 1)) }
            }
            Self::Suffix(0) => Answer::Unsatisfiable,
            Self::Suffix(_) if len == 0 => Answer::Unsatisfiable,
            Self::Suffix(n) => Answer::Partial { first: len.saturating_sub(n), last: len - 1 },
        }
    }
}

/// The one range of a `bytes` range header; `None` for anything else (ignored: the whole file).
fn parse(header: &str) -> Option<Spec> {
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    match (first, last) {
        ("", suffix) => number(suffix).map(Spec::Suffix),
        (first, "") => number(first).map(|first| Spec::From { first, last: None }),
        (first, last) => {
            let (first, last) = (number(first)?, number(last)?);
            (first <= last).then_some(Spec::From { first, last: Some(last) })
        }
    }
}

/// Digits only (`u64`'s parser would take a `+` too).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "\"abc\"";

    fn get(range: &str) -> Answer {
        Asked { range: Some(range), get: true, ..Default::default() }.answer(TAG, 1000)
    }

    #[test]
    fn the_three_forms_of_a_byte_range() {
        assert_eq!(get("bytes=0-99"), Answer::Partial { first: 0, last: 99 });
        assert_eq!(get("bytes=900-"), Answer::Partial { first: 900, last: 999 });
        assert_eq!(get("bytes=-100"), Answer::Partial { first: 900, last: 999 });
        // A last byte past the end, a suffix longer than the file: what there is.
        assert_eq!(get("bytes=990-5000"), Answer::Partial { first: 990, last: 999 });
        assert_eq!(get("bytes=-5000"), Answer::Partial { first: 0, last: 999 });
        assert_eq!(get("bytes=999-999"), Answer::Partial { first: 999, last: 999 });
        assert_eq!(get("Bytes = 5-6"), Answer::Partial { first: 5, last: 6 }, "the unit is case-insensitive");
    }

    #[test]
    fn a_range_past_the_end_is_unsatisfiable() {
        assert_eq!(get("bytes=1000-"), Answer::Unsatisfiable);
        assert_eq!(get("bytes=1000-2000"), Answer::Unsatisfiable);
        assert_eq!(get("bytes=-0"), Answer::Unsatisfiable);
        let empty = Asked { range: Some("bytes=-5"), get: true, ..Default::default() };
        assert_eq!(empty.answer(TAG, 0), Answer::Unsatisfiable);
        let empty = Asked { range: Some("bytes=0-"), get: true, ..Default::default() };
        assert_eq!(empty.answer(TAG, 0), Answer::Unsatisfiable);
    }

    #[test]
    fn anything_else_is_ignored_and_the_whole_file_sent() {
        for ignored in [
            "items=0-5",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=0-1,5-6",
            "bytes=",
            "bytes",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(get(ignored), Answer::Whole, "{ignored}");
        }
        let head = Asked { range: Some("bytes=0-1"), get: false, ..Default::default() };
        assert_eq!(head.answer(TAG, 1000), Answer::Whole, "HEAD has no ranges");
    }

    #[test]
    fn if_range_honours_the_range_only_for_the_current_strong_tag() {
        let with = |validator| Asked {
            range: Some("bytes=0-9"),
            if_range: Some(validator),
            get: true,
            ..Default::default()
        };
        assert_eq!(with(TAG).answer(TAG, 1000), Answer::Partial { first: 0, last: 9 });
        assert_eq!(with("\"other\"").answer(TAG, 1000), Answer::Whole);
        assert_eq!(with("W/\"abc\"").answer(TAG, 1000), Answer::Whole, "a weak tag never matches");
        assert_eq!(with("Sat, 30 Nov 2026 08:00:00 GMT").answer(TAG, 1000), Answer::Whole);
    }

    #[test]
    fn if_none_match_by_the_weak_comparison_and_before_the_range() {
        let with = |tags| Asked {
            if_none_match: Some(tags),
            range: Some("bytes=0-9"),
            get: true,
            ..Default::default()
        };
        for matching in [TAG, "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            assert_eq!(with(matching).answer(TAG, 1000), Answer::NotModified, "{matching}");
        }
        assert_eq!(with("\"x\"").answer(TAG, 1000), Answer::Partial { first: 0, last: 9 });
    }
}

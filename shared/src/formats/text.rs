//! Making source text fit a format: XML escaping, length limits, and the SWIFT and ASCII
//! character sets.

/// Appends `text` to `out` escaped for XML character data or a double-quoted attribute
/// (`&`, `<`, `>`, `"`), dropping the characters XML 1.0 cannot carry (controls other than TAB,
/// LF, CR; U+FFFE, U+FFFF).
pub fn push_xml(out: &mut Vec<u8>, text: &str) {
    // Most text has nothing to escape or drop: no markup byte, no control byte, no 0xEF (which
    // leads U+F000 to U+FFFF, U+FFFE and U+FFFF among them). One pass over its bytes tells.
    let plain = |b: &u8| !matches!(b, b'&' | b'<' | b'>' | b'"' | 0xEF) && *b >= 0x20;
    if text.as_bytes().iter().all(plain) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let mut rest = text;
    while let Some(i) = rest.find(|c: char| matches!(c, '&' | '<' | '>' | '"') || !xml_char(c)) {
        out.extend_from_slice(&rest.as_bytes()[..i]);
        let c = rest[i..].chars().next().expect("found a char");
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            _ => {}
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
}

/// Whether XML 1.0 can carry `c` (TAB, LF, CR, and everything from U+0020 but U+FFFE and
/// U+FFFF).
pub fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// The first `max` characters of `text` (Unicode scalar values, as XSD lengths count).
pub fn truncate_chars(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text; // fewer bytes than `max`, so fewer characters
    }
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_is_escaped_and_loses_only_what_xml_cannot_carry() {
        let mut out = Vec::new();
        push_xml(&mut out, "a & b <c> \"d\" 'e'\u{1}\u{1F680} \u{5E9}\u{5DC}\u{5D5}\u{5DD}\nz");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a &amp; b &lt;c&gt; &quot;d&quot; 'e'\u{1F680} \u{5E9}\u{5DC}\u{5D5}\u{5DD}\nz"
        );
        let mut out = Vec::new();
        push_xml(&mut out, "plain \u{e9}\u{F000} ");
        push_xml(&mut out, "\u{FFFF}x\u{FFFE}");
        assert_eq!(String::from_utf8(out).unwrap(), "plain \u{e9}\u{F000} x");
        assert_eq!(truncate_chars("h\u{e9}llo", 2), "h\u{e9}");
        assert_eq!(truncate_chars("abc", 5), "abc");
    }
}

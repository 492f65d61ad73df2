//! Making source text fit a format: XML escaping, length limits, and the SWIFT and ASCII
//! character sets.

use std::borrow::Cow;

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

/// `text` in the SWIFT X character set (`a-z A-Z 0-9 / - ? : ( ) . , ' +` and space), as MT940
/// carries it, character by character:
///
/// 1. German letters first, as German banks write them: `ä ö ü ß` → `ae oe ue ss`, `Ä Ö Ü ẞ` →
///    `Ae Oe Ue SS`.
/// 2. Any other non-ASCII character is transliterated by `deunicode` (`é` → `e`, `Ł` → `L`,
///    Cyrillic, Greek, Hebrew, Arabic and CJK to Latin letters, `🚀` → `rocket`); one it has no
///    transliteration for becomes `.`.
/// 3. ASCII outside the set: `&` → `+`, `"` → `'`, `< [ {` → `(`, `> ] }` → `)`, `_` → `-`,
///    `;` → `,`, and each of `!#$%*=@\^|~` and the backtick → `.`; line breaks and tabs →
///    space; other control characters are dropped.
/// 4. Runs of spaces become one space; leading and trailing spaces are dropped.
///
/// `swift_x("Müller & Söhne")` is `"Mueller + Soehne"`. Lengths are the writer's business
/// (every character of the result is one byte).
pub fn swift_x(text: &str) -> String {
    transliterate(text, &SWIFT_X)
}

/// `text` in printable ASCII (`0x20`..=`0x7E`), as BAI2 carries it: German letters and other
/// non-ASCII characters transliterated as in [`swift_x`] (steps 1 and 2), line breaks and tabs
/// → space, other control characters dropped, runs of spaces collapsed and the ends trimmed.
/// Every printable ASCII character is kept, `,` and `/` included: BAI2 allows them in a
/// transaction's text, and the BAI2 writer decides what its other fields may hold.
pub fn ascii_text(text: &str) -> String {
    transliterate(text, &PRINTABLE)
}

/// What each ASCII byte becomes in a character set (0: it is dropped). In every set, line
/// breaks and tabs are spaces and the other control characters are dropped.
type AsciiMap = [u8; 128];

/// [`swift_x`]'s step 3.
const SWIFT_X: AsciiMap = ascii_map(true);

/// [`ascii_text`]'s: printable ASCII as it is.
const PRINTABLE: AsciiMap = ascii_map(false);

/// What [`swift_x`] writes for a printable ASCII byte (0: nothing).
const fn swift_x_byte(b: u8) -> u8 {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => b,
        b'/' | b'-' | b'?' | b':' | b'(' | b')' | b'.' | b',' | b'\'' | b'+' | b' ' => b,
        b'&' => b'+',
        b'"' => b'\'',
        b'<' | b'[' | b'{' => b'(',
        b'>' | b']' | b'}' => b')',
        b'_' => b'-',
        b';' => b',',
        b'!' | b'#' | b'$' | b'%' | b'*' | b'=' | b'@' | b'\\' | b'^' | b'`' | b'|' | b'~' => b'.',
        _ => 0,
    }
}

/// The map of the SWIFT X set (`swift`), or of printable ASCII.
const fn ascii_map(swift: bool) -> AsciiMap {
    let mut map = [0; 128];
    let mut b = 0;
    while b < 128 {
        map[b as usize] = match b {
            b'\n' | b'\r' | b'\t' => b' ',
            0..=0x1F | 0x7F => 0,
            _ if swift => swift_x_byte(b),
            _ => b,
        };
        b += 1;
    }
    map
}

/// German letters, then `deunicode`, then `map` on every ASCII byte; runs of spaces collapsed
/// and the ends trimmed. Byte by byte: every text of millions of entries passes through here.
fn transliterate(text: &str, map: &AsciiMap) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    let push = |b: u8, out: &mut Vec<u8>| {
        let b = map[usize::from(b)];
        if b != 0 && (b != b' ' || !matches!(out.last(), None | Some(b' '))) {
            out.push(b);
        }
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii() {
            push(b, &mut out);
            i += 1;
            continue;
        }
        let c = text[i..].chars().next().expect("a character starts here");
        i += c.len_utf8();
        let german = match c {
            'ä' => "ae",
            'ö' => "oe",
            'ü' => "ue",
            'Ä' => "Ae",
            'Ö' => "Oe",
            'Ü' => "Ue",
            'ß' => "ss",
            'ẞ' => "SS",
            c => deunicode::deunicode_char(c).unwrap_or("."),
        };
        // Transliterations are ASCII; a character that is not would be dropped.
        for b in german.bytes().filter(u8::is_ascii) {
            push(b, &mut out);
        }
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    String::from_utf8(out).expect("ASCII only")
}

/// One line of text that XML carries, trimmed: CR LF, CR, LF and TAB become one space each, the
/// characters XML 1.0 cannot carry are dropped (camt.053's and OFX's text rule, steps 1 and 2).
pub fn one_line(text: &str) -> Cow<'_, str> {
    // Bytes below 0x20 are the controls, TAB, LF and CR; 0xEF leads U+F000 to U+FFFF (U+FFFE
    // and U+FFFF among them). Most texts have neither and are only trimmed.
    let suspect = |b: &u8| *b < 0x20 || *b == 0xEF;
    if !text.as_bytes().iter().any(suspect)
        || !text.contains(|c: char| matches!(c, '\t' | '\n' | '\r') || !xml_char(c))
    {
        return Cow::Borrowed(text.trim());
    }
    let mut kept = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                kept.push(' ');
            }
            '\n' | '\t' => kept.push(' '),
            c if xml_char(c) => kept.push(c),
            _ => {}
        }
    }
    match kept.trim() {
        trimmed if trimmed.len() == kept.len() => Cow::Owned(kept),
        trimmed => Cow::Owned(trimmed.to_owned()),
    }
}

/// [`one_line`], cut to at most `max` characters and trimmed at the end again (camt.053's and
/// OFX's text rule, steps 1 to 3).
pub fn fit(text: &str, max: usize) -> Cow<'_, str> {
    match one_line(text) {
        Cow::Borrowed(text) => Cow::Borrowed(truncate_chars(text, max).trim_end()),
        Cow::Owned(text) => Cow::Owned(truncate_chars(&text, max).trim_end().to_owned()),
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

    #[test]
    fn swift_x_writes_german_letters_the_german_way_and_transliterates_the_rest() {
        assert_eq!(swift_x("M\u{fc}ller & S\u{f6}hne"), "Mueller + Soehne");
        assert_eq!(swift_x("\u{c4}rger \u{d6}l \u{dc}bel Stra\u{df}e"), "Aerger Oel Uebel Strasse");
        assert_eq!(swift_x("Caf\u{e9} Se\u{f1}or \u{141}\u{f3}d\u{17a}"), "Cafe Senor Lodz");
        assert_eq!(swift_x("\u{41f}\u{43b}\u{430}\u{442}\u{451}\u{436}"), "Platiozh");
        assert_eq!(swift_x("\u{3b1}\u{3b2}\u{3b3}"), "abg");
        assert_eq!(swift_x("Rent \"May\" & <utilities> [x] {y}"), "Rent 'May' + (utilities) (x) (y)");
        assert_eq!(swift_x("a_b;c!d#e$f%g*h=i@j\\k^l`m|n~o"), "a-b,c.d.e.f.g.h.i.j.k.l.m.n.o");
        assert_eq!(swift_x("  line one\nline two\r\n\tthree  "), "line one line two three");
        assert_eq!(swift_x("a\u{1}b\u{7f}c"), "abc");
        assert_eq!(swift_x(":61:x -} {4: '?/,.+()"), ":61:x -) (4: '?/,.+()");
    }

    #[test]
    fn swift_x_output_is_always_in_the_x_set() {
        let x = |c: char| c.is_ascii_alphanumeric() || "/-?:().,'+ ".contains(c);
        for text in [
            "\u{1F680}\u{1F4B8} \u{5EA}\u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{62F}\u{641}\u{639}",
            "\u{E000}\u{FFFF}",
            "\u{5317}\u{4EB0}",
        ] {
            let out = swift_x(text);
            assert!(!out.is_empty() && out.chars().all(x), "{text:?} gave {out:?}");
        }
        assert_eq!(swift_x("\u{E000}"), ".");
    }

    #[test]
    fn ascii_text_keeps_printable_ascii_and_transliterates_the_rest() {
        assert_eq!(ascii_text("M\u{fc}ller & S\u{f6}hne, 50% /x"), "Mueller & Soehne, 50% /x");
        assert_eq!(ascii_text("Rent \"May\" & <utilities>\nnext\u{1}"), "Rent \"May\" & <utilities> next");
        assert_eq!(ascii_text("Caf\u{e9} \u{df}"), "Cafe ss");
        let out = ascii_text("\u{5EA}\u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{62F}\u{641}\u{639} \u{1F680}");
        assert!(!out.is_empty() && out.chars().all(|c| (' '..='~').contains(&c)), "{out:?}");
    }
}

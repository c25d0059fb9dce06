//! Text helpers: the one truncator, shared by the wire model (`ims::model`),
//! the status bounds (`status::bound`) and the controller's messages; and
//! `clean`, which makes text taken from the cloud safe before it reaches a
//! status, an Event, a ConfigMap, a log or a terminal: a hostile or broken
//! answer must not inject lines into YAML, reorder text with bidi controls,
//! or hide characters with zero-width ones.

const ELLIPSIS: &str = "…";

/// `text` cut to at most `max` bytes on a character boundary; a cut text
/// ends in `…` (counted in `max`).
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &text[..end])
}

/// Control characters become a space when they separate words (newline,
/// tab) and are dropped otherwise; bidi, zero-width and other invisible
/// format characters are dropped. Leading and trailing spaces go.
pub fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_whitespace() && c != ' ' && (c.is_control() || c == '\u{2028}' || c == '\u{2029}') {
            out.push(' ');
        } else if !is_hidden(c) {
            out.push(c);
        }
    }
    let trimmed = out.trim();
    if trimmed.len() == out.len() { out } else { trimmed.to_owned() }
}

/// Characters that are invisible or change how the text around them shows.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'                  // soft hyphen
            | '\u{061C}'                // Arabic letter mark
            | '\u{180E}'                // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}'   // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}'   // bidi isolates
            | '\u{FEFF}'                // zero-width no-break space (BOM)
            | '\u{FFF9}'..='\u{FFFB}'   // interlinear annotations
        )
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn hostile_text_is_cleaned() {
        let cases = [
            ("web\n  hostNetwork: true\u{202e}", "web   hostNetwork: true"),
            ("a\u{200b}b\u{200d}c\u{feff}", "abc"),
            ("\u{2066}evil\u{2069}.iso", "evil.iso"),
            ("esc\u{1b}[31mred\u{1b}[0m", "esc[31mred[0m"),
            ("tab\there\r\n", "tab here"),
            ("line\u{2028}sep", "line sep"),
            ("\u{85}next", "next"),
            ("Привет мир 镜像-1.0_x", "Привет мир 镜像-1.0_x"),
            ("", ""),
        ];
        for (raw, want) in cases {
            assert_eq!(clean(raw), want, "{raw:?}");
        }
    }
}

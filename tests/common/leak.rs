//! Looking for a secret where it must not be: as itself and in the
//! encodings a log line or a stored field could carry it in (base64 in any
//! of its three alignments, standard and URL-safe; percent-encoding; hex).

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The base64 characters that only `secret`'s bits decide, when it starts
/// `offset` (0..3) bytes into an encoded string: found inside any longer
/// base64 text (e.g. `Basic base64(user:password)`) at that alignment.
fn base64_core(secret: &[u8], offset: usize) -> String {
    let mut bytes = vec![0u8; offset];
    bytes.extend_from_slice(secret);
    let bits = bytes.len() * 8;
    let chars: String = (0..bits / 6)
        .map(|i| {
            let bit = i * 6;
            let word = (u16::from(bytes[bit / 8]) << 8) | u16::from(*bytes.get(bit / 8 + 1).unwrap_or(&0));
            STANDARD[usize::from((word >> (10 - bit % 8)) & 0x3f)] as char
        })
        .collect();
    chars[(offset * 8).div_ceil(6)..].to_owned()
}

/// `(name, text)` for every form of `secret` looked for.
pub fn encodings(secret: &str) -> Vec<(String, String)> {
    let mut forms = vec![("plain".to_owned(), secret.to_owned())];
    for offset in 0..3 {
        let core = base64_core(secret.as_bytes(), offset);
        forms.push((format!("base64 at offset {offset}"), core.clone()));
        forms.push((format!("url-safe base64 at offset {offset}"), core.replace('+', "-").replace('/', "_")));
    }
    let url = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string();
    forms.push(("percent-encoded".into(), url));
    forms.push(("hex".into(), hex::encode(secret)));
    forms.push(("HEX".into(), hex::encode_upper(secret)));
    forms
}

/// Panics when any of `secrets` (`(what, value)`) appears in any of
/// `places` (`(where, text)`) in any of its `encodings`.
pub fn assert_nowhere(secrets: &[(&str, &str)], places: &[(&str, &str)]) {
    for (what, value) in secrets {
        assert!(value.len() >= 8, "{what}: too short to look for ({value:?})");
        for (form, needle) in encodings(value) {
            for (place, text) in places {
                if let Some(at) = text.find(&needle) {
                    let line = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                    let context: String = text[line..end].chars().take(400).collect();
                    panic!("the {what} appears {form} ({needle:?}) in the {place}:\n{context}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_each_form_inside_longer_text() {
        // "Basic " + base64("user:s3cret-pass"): the password at offset 2.
        let basic = "Authorization: Basic dXNlcjpzM2NyZXQtcGFzcw==";
        let found = |text: &str| super::encodings("s3cret-pass").into_iter().find(|(_, n)| text.contains(n.as_str()));
        assert_eq!(found(basic).map(|f| f.0), Some("base64 at offset 2".into()));
        assert_eq!(found("x=s3cret%2Dpass&").map(|f| f.0), Some("percent-encoded".into()));
        assert_eq!(found("key 7333637265742d70617373").map(|f| f.0), Some("hex".into()));
        assert_eq!(found("czNjcmV0LXBhc3M=").map(|f| f.0), Some("base64 at offset 0".into()));
        assert_eq!(found("nothing here"), None);
    }
}

//! The one text truncator, shared by the wire model (`ims::model`), the
//! status bounds (`status::bound`) and the controller's messages.

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

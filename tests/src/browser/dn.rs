//! Finds a distinguished name in page text or HTML. Pages must never show
//! where an account lives in the directory: an account name is what the
//! user typed, a DN is the forest's layout.
//!
//! No regex: one pass over the lowercased text for `dc=`, `ou=` or `cn=`
//! starting a word, spaces allowed around the `=`, and a value after it.
//! The `=` is also found HTML- or URL-encoded, so escaping a DN does not
//! hide it.

const ATTRIBUTES: [&str; 3] = ["dc", "ou", "cn"];
/// How an `=` may be written in HTML or in a URL, besides itself.
const ENCODED_EQUALS: [&str; 4] = ["&#61;", "&#x3d;", "&equals;", "%3d"];

/// The first DN-looking part of `haystack`, with some context.
pub fn find(haystack: &str) -> Option<String> {
    let mut text = haystack.to_lowercase();
    for encoded in ENCODED_EQUALS {
        text = text.replace(encoded, "=");
    }
    let bytes = text.as_bytes();
    for (i, _) in text.char_indices() {
        let starts_word = i == 0 || !is_word(bytes[i - 1]);
        if !starts_word {
            continue;
        }
        let Some(attribute) = ATTRIBUTES.iter().find(|a| text[i..].starts_with(*a)) else {
            continue;
        };
        let rest = text[i + attribute.len()..].trim_start();
        let Some(value) = rest.strip_prefix('=') else {
            continue;
        };
        // A value: a letter or digit (or a non-ASCII one), not a quote or
        // the end of an attribute as in base64 padding `cn="`.
        let first = value.trim_start().chars().next();
        if first.is_some_and(|c| c.is_alphanumeric()) {
            let start = text[..i].char_indices().rev().nth(30).map_or(0, |(j, _)| j);
            let end = text[i..]
                .char_indices()
                .nth(60)
                .map_or(text.len(), |(j, _)| i + j);
            return Some(text[start..end].to_owned());
        }
    }
    None
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn finds_dns_however_written() {
        for page in [
            "CN=Ada Lovelace,OU=Staff,DC=contoso,DC=example",
            "<p>Your account: cn=ada,dc=contoso</p>",
            "account <b>ou = Staff</b>",
            "<input value=\"DC&#61;contoso\">",
            "/reset?next=CN%3DAda",
            "dc=\u{e9}cole",
        ] {
            assert!(find(page).is_some(), "{page}");
        }
    }

    #[test]
    fn leaves_ordinary_pages_alone() {
        for page in [
            "<p>Reset your password</p>",
            "<input name=\"csrf\" value=\"abcdcn=\">",
            "token cn=\"x\"",
            "?lang=en&scn=2",
            "cnt=3 dcc=4",
            "",
        ] {
            assert_eq!(find(page), None, "{page}");
        }
    }
}

//! The shared access signature vectors, re-derived from docs/PROTOCOL.md's
//! text ("Shared access signatures"): the string to sign, the HMAC and the
//! base64url signature are computed here with ring and base64 directly,
//! as a second implementation would, then held against the document, the
//! committed JSON (docs/test-vectors/sas-v1.json) and this crate.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use sas::{Key, KeySlot, Right, Token};

fn read(path: &str) -> String {
    let full = format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The `name  value` lines of the vector blocks of the section, in order;
/// a block starts at `sr`.
fn document_vectors() -> (String, String, Vec<Vec<(String, String)>>) {
    let doc = read("docs/PROTOCOL.md");
    let section = doc
        .split("## Shared access signatures")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("PROTOCOL.md has the section");
    let mut key_hex = String::new();
    let mut key_file = String::new();
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    for block in section.split("```").skip(1).step_by(2) {
        let mut fields = Vec::new();
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line.split_at(19.min(line.len()));
            let (name, value) = (name.trim().to_owned(), value.trim().to_owned());
            match name.as_str() {
                "key (hex)" => key_hex = value,
                "key file" => key_file = value,
                _ => fields.push((name, value)),
            }
        }
        blocks.push(fields);
    }
    (key_hex, key_file, blocks)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the vector has no {name}"))
}

#[test]
fn tokens_re_derived_from_the_document_match_it_the_json_and_the_crate() {
    let (key_hex, key_file, blocks) = document_vectors();
    let key_bytes = unhex(&key_hex);
    assert_eq!(key_bytes.len(), 32);
    assert_eq!(STANDARD.encode(&key_bytes), key_file, "the key file form");
    let json: serde_json::Value =
        serde_json::from_str(&read("docs/test-vectors/sas-v1.json")).expect("json");
    assert_eq!(json["key_hex"], key_hex.as_str());
    assert_eq!(json["key_file"], key_file.as_str());
    let tokens = json["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), blocks.len());
    let key = Key::from_base64(&key_file).expect("the key file reads");
    let other = Key::generate().expect("key");

    for (fields, committed) in blocks.iter().zip(tokens) {
        let (sr, skn, se) = (
            field(fields, "sr"),
            field(fields, "skn"),
            field(fields, "se"),
        );
        // Derived here, from the document's rules alone.
        let to_sign = format!("relay.v1\n{sr}\n{skn}\n{se}");
        assert_eq!(hex(to_sign.as_bytes()), field(fields, "string to sign"));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &key_bytes),
            to_sign.as_bytes(),
        );
        assert_eq!(hex(tag.as_ref()), field(fields, "hmac (hex)"));
        let sig = URL_SAFE_NO_PAD.encode(tag.as_ref());
        assert_eq!(sig, field(fields, "sig"));
        let token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={skn}");
        assert_eq!(token, field(fields, "token"));
        // The committed JSON says the same.
        for (name, json_key) in [
            ("sr", "sr"),
            ("skn", "skn"),
            ("string to sign", "string_to_sign_hex"),
            ("hmac (hex)", "hmac_hex"),
            ("sig", "sig"),
            ("token", "token"),
        ] {
            assert_eq!(committed[json_key], field(fields, name), "{json_key}");
        }
        assert_eq!(committed["se"].to_string(), se);
        // And this crate mints and accepts exactly it.
        let right = Right::from_name(skn).expect("right");
        let expiry: u64 = se.parse().expect("se");
        assert_eq!(sas::mint(&key, sr, right, expiry).expose(), token);
        let parsed = Token::parse(&token).expect("parses");
        assert_eq!(
            (parsed.resource.as_str(), parsed.right, parsed.expiry_unix),
            (sr, right, expiry)
        );
        assert_eq!(parsed.verify(&other, &key), Some(KeySlot::Secondary));
        // Fields in another order are the same token to the broker.
        let reordered = format!("SharedAccessSignature skn={skn}&se={se}&sig={sig}&sr={sr}");
        assert_eq!(Token::parse(&reordered).expect("any order"), parsed);
    }
}

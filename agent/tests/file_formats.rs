//! The file formats and encodings of docs/PROTOCOL.md ("File formats and
//! encodings a second implementation shares"), read from its text and
//! held against what this implementation reads and writes: a portal key
//! file and an enrollment bundle made by another implementation must work
//! here, and the source anchor must be the bytes AD returns.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use directory::sd::guid_string;
use relay_client::enrollment::EnrollmentBundle;

fn vector() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("PROTOCOL.md");
    let section = doc
        .split("## File formats and encodings a second implementation shares")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the section");
    let block = section.split("```").nth(1).expect("the vector block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.split_at(19.min(l.len()));
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

fn get<'a>(v: &'a [(String, String)], name: &str) -> &'a str {
    v.iter()
        .find(|(n, _)| n == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no {name} in the vector"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_portal_key_file_and_bundle_as_documented_are_read_here() {
    let v = vector();
    let private = STANDARD
        .decode(get(&v, "portal key file"))
        .expect("standard base64");
    assert_eq!(private.len(), 32);
    let pair = envelope::KeyPair::from_private_bytes(&private).expect("an X25519 key");
    assert_eq!(hex(pair.public.as_bytes()), get(&v, "portal public key"));

    let bundle = EnrollmentBundle::parse(get(&v, "bundle")).expect("the bundle reads");
    assert_eq!((bundle.version, bundle.tenant.as_str()), (1, "contoso"));
    assert_eq!(
        bundle.portal_keys,
        [STANDARD.encode(pair.public.as_bytes())],
        "standard base64 with padding"
    );
    // What this implementation writes is the same text, field for field.
    let ours = EnrollmentBundle::new("contoso", std::slice::from_ref(&pair.public));
    assert_eq!(ours.portal_keys, bundle.portal_keys);
    // Unknown fields are refused.
    let extra = get(&v, "bundle").replace("\"version\": 1", "\"version\": 1, \"x\": 2");
    assert!(EnrollmentBundle::parse(&extra).is_err());
}

#[test]
fn the_source_anchor_is_the_objectguid_in_ads_byte_order() {
    let v = vector();
    let stored: Vec<u8> = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&get(&v, "stored bytes")[i..i + 2], 16).expect("hex"))
        .collect();
    let stored: [u8; 16] = stored.try_into().expect("16 bytes");
    // AD's bytes read back as the GUID's string form...
    assert_eq!(guid_string(&stored), get(&v, "objectGUID"));
    // ...and their base64 is the anchor.
    assert_eq!(STANDARD.encode(stored), get(&v, "source anchor"));
}

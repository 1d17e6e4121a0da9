//! The body limits as docs/PROTOCOL.md states them, read from its tables,
//! against the code: the constants agree, and at each limit both the
//! sealer (encode) and the opener (decode) accept the limit and refuse one
//! more. The opener is fed hand-built bodies, as a second implementation
//! would send them.

use envelope::body::{MAX_DETAIL_KEY, MAX_DETAILS, MAX_FIELD, MAX_MESSAGE};
use envelope::{Anchor, Password, ReplyBody, RequestBody};

fn protocol() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).expect("docs/PROTOCOL.md")
}

/// The rules cell of the table row whose field cell is `field`.
fn rule(doc: &str, field: &str) -> String {
    doc.lines()
        .find_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() > 3 && cells[2] == field).then(|| cells[3].to_owned())
        })
        .unwrap_or_else(|| panic!("PROTOCOL.md has no table row for {field}"))
}

/// `lo..hi` in a rules cell.
fn range(rule: &str) -> (usize, usize) {
    let r = rule
        .split(|c: char| c == ';' || c.is_whitespace())
        .find(|w| w.contains(".."))
        .unwrap_or_else(|| panic!("no range in {rule:?}"));
    let (lo, hi) = r.split_once("..").expect("range");
    (lo.parse().expect("low"), hi.parse().expect("high"))
}

#[test]
fn the_documented_limits_are_the_codes() {
    let doc = protocol();
    assert_eq!(range(&rule(&doc, "`A`, anchor length")), (1, MAX_FIELD));
    assert_eq!(
        range(&rule(&doc, "`N`, new password length")),
        (0, MAX_FIELD)
    );
    assert_eq!(
        range(&rule(&doc, "`C`, current password length")),
        (0, MAX_FIELD)
    );
    assert_eq!(range(&rule(&doc, "`M`, message length")), (0, MAX_MESSAGE));
    assert_eq!(range(&rule(&doc, "`D`, detail count")), (0, MAX_DETAILS));
    assert_eq!(range(&rule(&doc, "`K`, key length")), (1, MAX_DETAIL_KEY));
    assert_eq!(range(&rule(&doc, "`V`, value length")), (0, MAX_FIELD));
    assert!(
        !doc.contains("when sealing"),
        "a limit said to bind the sealer only: both sides enforce them"
    );
}

fn pad(mut body: Vec<u8>, block: usize) -> Vec<u8> {
    let len = body.len().div_ceil(block).max(1) * block;
    body.resize(len, 0);
    body
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A request body built by hand: anchor kind 2, no flags.
fn request(anchor: &[u8], new: &[u8], current: &[u8]) -> Vec<u8> {
    let mut out = vec![2];
    field(&mut out, anchor);
    out.push(0);
    field(&mut out, new);
    field(&mut out, current);
    pad(out, 256)
}

#[test]
fn request_fields_at_the_limit_pass_and_one_more_byte_fails_on_both_sides() {
    let at = "a".repeat(MAX_FIELD);
    let over = "a".repeat(MAX_FIELD + 1);
    // Opener.
    assert!(RequestBody::decode(&request(at.as_bytes(), at.as_bytes(), b"")).is_ok());
    assert!(RequestBody::decode(&request(over.as_bytes(), b"x", b"")).is_err());
    assert!(RequestBody::decode(&request(b"x", over.as_bytes(), b"")).is_err());
    assert!(RequestBody::decode(&request(b"x", b"y", over.as_bytes())).is_err());
    assert!(RequestBody::decode(&request(b"", b"y", b"")).is_err());
    // Sealer.
    let body = |anchor: &str, new: &str| {
        RequestBody::reset(Anchor::UserPrincipalName(anchor.into()), Password::new(new))
    };
    assert!(body(&at, &at).encode().is_ok());
    assert!(body(&over, "x").encode().is_err());
    assert!(body("x", &over).encode().is_err());
    assert!(body("", "x").encode().is_err());
}

/// A reply body built by hand.
fn reply(message: &[u8], details: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = 0u16.to_be_bytes().to_vec();
    field(&mut out, message);
    out.push(details.len() as u8);
    for (k, v) in details {
        out.push(k.len() as u8);
        out.extend_from_slice(k);
        field(&mut out, v);
    }
    pad(out, 512)
}

#[test]
fn reply_fields_at_the_limit_pass_and_one_more_fails_on_both_sides() {
    let detail = |k: usize, v: usize| (vec![b'k'; k], vec![b'v'; v]);
    let message = vec![b'm'; MAX_MESSAGE];
    let most: Vec<_> = (0..MAX_DETAILS).map(|_| detail(1, 1)).collect();
    let too_many: Vec<_> = (0..=MAX_DETAILS).map(|_| detail(1, 1)).collect();
    // Opener.
    assert!(ReplyBody::decode(&reply(&message, &most)).is_ok());
    assert!(ReplyBody::decode(&reply(&vec![b'm'; MAX_MESSAGE + 1], &[])).is_err());
    assert!(ReplyBody::decode(&reply(b"", &too_many)).is_err());
    assert!(ReplyBody::decode(&reply(b"", &[detail(MAX_DETAIL_KEY, MAX_FIELD)])).is_ok());
    assert!(ReplyBody::decode(&reply(b"", &[detail(MAX_DETAIL_KEY + 1, 1)])).is_err());
    assert!(ReplyBody::decode(&reply(b"", &[detail(0, 1)])).is_err());
    assert!(ReplyBody::decode(&reply(b"", &[detail(1, MAX_FIELD + 1)])).is_err());
    // Sealer.
    let sealed = |message: usize, details: Vec<(Vec<u8>, Vec<u8>)>| {
        ReplyBody {
            outcome: 0,
            message: "m".repeat(message),
            details: details
                .into_iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8(k).expect("ascii"),
                        String::from_utf8(v).expect("ascii"),
                    )
                })
                .collect(),
        }
        .encode()
    };
    assert!(sealed(MAX_MESSAGE, most.clone()).is_ok());
    assert!(sealed(MAX_MESSAGE + 1, vec![]).is_err());
    assert!(sealed(0, too_many).is_err());
    assert!(sealed(0, vec![detail(MAX_DETAIL_KEY, MAX_FIELD)]).is_ok());
    assert!(sealed(0, vec![detail(MAX_DETAIL_KEY + 1, 1)]).is_err());
    assert!(sealed(0, vec![detail(0, 1)]).is_err());
    assert!(sealed(0, vec![detail(1, MAX_FIELD + 1)]).is_err());
}

//! Rendering a parsed DACL back to SDDL, in the notation `samba-tool dsacl
//! get` prints (so what doctor shows can be compared with what Samba
//! shows), for the commands that rewrite a DACL without one ACE. SIDs are
//! always written in full (S-1-5-...): Samba and Windows parse both forms,
//! and the full form needs no table of aliases that differ by domain. Pure.

use super::sd::{Ace, SecurityDescriptor};

/// Access-mask letters in the order Samba's `sddl_encode` writes them.
const ACCESS: [(&str, u32); 17] = [
    ("RP", 0x0000_0010),
    ("WP", 0x0000_0020),
    ("CR", 0x0000_0100),
    ("CC", 0x0000_0001),
    ("DC", 0x0000_0002),
    ("LC", 0x0000_0004),
    ("LO", 0x0000_0080),
    ("RC", 0x0002_0000),
    ("WO", 0x0008_0000),
    ("WD", 0x0004_0000),
    ("SD", 0x0001_0000),
    ("DT", 0x0000_0040),
    ("SW", 0x0000_0008),
    ("GA", 0x1000_0000),
    ("GR", 0x8000_0000),
    ("GW", 0x4000_0000),
    ("GX", 0x2000_0000),
];

const FLAGS: [(&str, u8); 5] = [
    ("OI", 0x01),
    ("CI", 0x02),
    ("NP", 0x04),
    ("IO", 0x08),
    ("ID", 0x10),
];

fn mask(m: u32) -> String {
    let covered = ACCESS.iter().fold(0, |acc, (_, bit)| acc | bit);
    if m & !covered != 0 {
        // Samba, too, falls back to hex when a bit has no letters.
        return format!("0x{m:08x}");
    }
    ACCESS
        .iter()
        .filter(|(_, bit)| m & bit != 0)
        .map(|(s, _)| *s)
        .collect()
}

/// One ACE, e.g. `(OA;CIIO;CR;00299570-...;bf967aba-...;S-1-5-21-...-1105)`.
pub fn ace(a: &Ace) -> String {
    let kind = match (a.object, a.allow) {
        (true, true) => "OA",
        (true, false) => "OD",
        (false, true) => "A",
        (false, false) => "D",
    };
    let flags: String = FLAGS
        .iter()
        .filter(|(_, bit)| a.flags & bit != 0)
        .map(|(s, _)| *s)
        .collect();
    format!(
        "({kind};{flags};{};{};{};{})",
        mask(a.mask),
        a.object_type.as_deref().unwrap_or(""),
        a.inherited_object_type.as_deref().unwrap_or(""),
        a.sid
    )
}

/// The DACL part (`D:PAI(...)...`) of `sd` with only `keep`'s ACEs.
pub fn dacl<'a>(sd: &SecurityDescriptor, keep: impl IntoIterator<Item = &'a Ace>) -> String {
    let mut out = String::from("D:");
    if sd.protected() {
        out.push('P');
    }
    if sd.auto_inherited() {
        out.push_str("AI");
    }
    for a in keep {
        out.push_str(&ace(a));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(allow: bool, object: bool, flags: u8, mask: u32, ot: Option<&str>, sid: &str) -> Ace {
        Ace {
            allow,
            object,
            flags,
            mask,
            object_type: ot.map(str::to_owned),
            inherited_object_type: object
                .then(|| "bf967aba-0de6-11d0-a285-00aa003049e2".to_owned()),
            sid: sid.to_owned(),
        }
    }

    #[test]
    fn aces_read_as_samba_tool_dsacl_get_prints_them() {
        // Copied from `samba-tool dsacl get` on a Samba 4.17 DC.
        let svc = "S-1-5-21-3161404390-4078120793-316995962-1102";
        let deny = parsed(
            false,
            true,
            0x02,
            0x100,
            Some("00299570-246d-11d0-a768-00aa006e0529"),
            svc,
        );
        assert_eq!(
            ace(&deny),
            "(OD;CI;CR;00299570-246d-11d0-a768-00aa006e0529;bf967aba-0de6-11d0-a285-00aa003049e2;S-1-5-21-3161404390-4078120793-316995962-1102)"
        );
        let grant = parsed(
            true,
            true,
            0x0a,
            0x20,
            Some("28630ebf-41d5-11d1-a9c1-0000f80367c1"),
            svc,
        );
        assert_eq!(
            ace(&grant),
            "(OA;CIIO;WP;28630ebf-41d5-11d1-a9c1-0000f80367c1;bf967aba-0de6-11d0-a285-00aa003049e2;S-1-5-21-3161404390-4078120793-316995962-1102)"
        );
        // Samba: (A;;RPWPCRCCDCLCLORCWOWDSDDTSW;;;SY), SY written in full here.
        let system = parsed(true, false, 0, 0x000f_01ff, None, "S-1-5-18");
        assert_eq!(ace(&system), "(A;;RPWPCRCCDCLCLORCWOWDSDDTSW;;;S-1-5-18)");
        // Samba: (A;CIID;RPWPCRCCLCLORCWOWDSDSW;;;BA)
        let admins = parsed(true, false, 0x12, 0x000f_01bd, None, "S-1-5-32-544");
        assert_eq!(
            ace(&admins),
            "(A;CIID;RPWPCRCCLCLORCWOWDSDSW;;;S-1-5-32-544)"
        );
        let odd = parsed(true, false, 0, 0x0100_0000, None, "S-1-1-0");
        assert_eq!(ace(&odd), "(A;;0x01000000;;;S-1-1-0)");

        let sd = SecurityDescriptor {
            control: 0x1000 | 0x0400 | 0x0004,
            dacl: vec![deny.clone(), system.clone()],
            skipped: 0,
        };
        assert_eq!(
            dacl(&sd, [&system]),
            "D:PAI(A;;RPWPCRCCDCLCLORCWOWDSDDTSW;;;S-1-5-18)"
        );
        let open = SecurityDescriptor {
            control: 0x0400 | 0x0004,
            ..sd
        };
        assert!(dacl(&open, &open.dacl).starts_with("D:AI(OD;CI;CR;"));
    }
}

//! Windows security descriptors as Active Directory returns them in
//! `nTSecurityDescriptor` (self-relative, [MS-DTYP] 2.4.6), and which of the
//! rights write-back needs an ACE speaks to. How the ACEs of a user and its
//! containers combine is [`super::effective`]'s. Pure code: parsed from
//! bytes, no I/O.

use super::DirectoryRight;

pub const SE_DACL_PROTECTED: u16 = 0x1000;
const SE_DACL_PRESENT: u16 = 0x0004;

const SE_DACL_AUTO_INHERITED: u16 = 0x0400;

pub const OBJECT_INHERIT: u8 = 0x01;
pub const CONTAINER_INHERIT: u8 = 0x02;
pub const NO_PROPAGATE_INHERIT: u8 = 0x04;
pub const INHERIT_ONLY: u8 = 0x08;
pub const INHERITED_ACE: u8 = 0x10;

const ACCESS_ALLOWED: u8 = 0x00;
const ACCESS_DENIED: u8 = 0x01;
const ACCESS_ALLOWED_OBJECT: u8 = 0x05;
const ACCESS_DENIED_OBJECT: u8 = 0x06;

const OBJECT_TYPE_PRESENT: u32 = 0x1;
const INHERITED_OBJECT_TYPE_PRESENT: u32 = 0x2;

pub const WRITE_PROPERTY: u32 = 0x20;
pub const CONTROL_ACCESS: u32 = 0x100;
const GENERIC_ALL: u32 = 0x1000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;

/// The user class's schemaIDGUID.
pub const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";
/// The "Account Restrictions" property set, which holds pwdLastSet.
pub const ACCOUNT_RESTRICTIONS: &str = "4c164200-20c0-11d0-a768-00aa006e0529";

/// A GUID in its standard string form, decoded from AD's mixed-endian bytes.
pub fn guid_string(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// A SID in its string form (S-1-5-21-...).
pub fn sid_string(bytes: &[u8]) -> Option<String> {
    let revision = *bytes.first()?;
    let count = *bytes.get(1)? as usize;
    let authority = bytes.get(2..8)?;
    let mut value: u64 = 0;
    for b in authority {
        value = (value << 8) | u64::from(*b);
    }
    let mut out = format!("S-{revision}-{value}");
    for i in 0..count {
        let s = bytes.get(8 + i * 4..12 + i * 4)?;
        out.push_str(&format!(
            "-{}",
            u32::from_le_bytes([s[0], s[1], s[2], s[3]])
        ));
    }
    Some(out)
}

fn sid_len(bytes: &[u8]) -> Option<usize> {
    Some(8 + 4 * *bytes.get(1)? as usize)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    pub allow: bool,
    /// An object ACE (OA/OD in SDDL), even when it names no GUID.
    pub object: bool,
    pub flags: u8,
    pub mask: u32,
    pub object_type: Option<String>,
    pub inherited_object_type: Option<String>,
    pub sid: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityDescriptor {
    pub control: u16,
    /// Empty when the DACL is absent; in stored (canonical) order.
    pub dacl: Vec<Ace>,
    /// DACL entries of kinds this parser does not keep (callback ACEs and
    /// the like): the DACL cannot be rewritten from `dacl` without losing them.
    pub skipped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed security descriptor: {0}")]
pub struct SdError(&'static str);

fn u16_at(b: &[u8], at: usize, what: &'static str) -> Result<u16, SdError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(SdError(what))
}

fn u32_at(b: &[u8], at: usize, what: &'static str) -> Result<u32, SdError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(SdError(what))
}

fn guid_at(b: &[u8], at: usize) -> Result<String, SdError> {
    let g: [u8; 16] = b
        .get(at..at + 16)
        .and_then(|s| s.try_into().ok())
        .ok_or(SdError("guid"))?;
    Ok(guid_string(&g))
}

impl SecurityDescriptor {
    pub fn parse(b: &[u8]) -> Result<SecurityDescriptor, SdError> {
        if b.first() != Some(&1) {
            return Err(SdError("revision"));
        }
        let control = u16_at(b, 2, "control")?;
        let dacl_at = u32_at(b, 16, "dacl offset")? as usize;
        if control & SE_DACL_PRESENT == 0 || dacl_at == 0 {
            return Ok(SecurityDescriptor {
                control,
                dacl: Vec::new(),
                skipped: 0,
            });
        }
        let count = u16_at(b, dacl_at + 4, "ace count")? as usize;
        let mut at = dacl_at + 8;
        let mut dacl = Vec::with_capacity(count);
        let mut skipped = 0;
        for _ in 0..count {
            let kind = *b.get(at).ok_or(SdError("ace type"))?;
            let flags = *b.get(at + 1).ok_or(SdError("ace flags"))?;
            let size = u16_at(b, at + 2, "ace size")? as usize;
            if size < 8 || at + size > b.len() {
                return Err(SdError("ace size"));
            }
            let ace = &b[at..at + size];
            let mask = u32_at(ace, 4, "mask")?;
            let parsed = match kind {
                ACCESS_ALLOWED | ACCESS_DENIED => {
                    let sid = ace.get(8..).ok_or(SdError("sid"))?;
                    sid_len(sid)
                        .filter(|n| *n <= sid.len())
                        .ok_or(SdError("sid"))?;
                    Some(Ace {
                        allow: kind == ACCESS_ALLOWED,
                        object: false,
                        flags,
                        mask,
                        object_type: None,
                        inherited_object_type: None,
                        sid: sid_string(sid).ok_or(SdError("sid"))?,
                    })
                }
                ACCESS_ALLOWED_OBJECT | ACCESS_DENIED_OBJECT => {
                    let object_flags = u32_at(ace, 8, "object flags")?;
                    let mut p = 12;
                    let mut object_type = None;
                    let mut inherited_object_type = None;
                    if object_flags & OBJECT_TYPE_PRESENT != 0 {
                        object_type = Some(guid_at(ace, p)?);
                        p += 16;
                    }
                    if object_flags & INHERITED_OBJECT_TYPE_PRESENT != 0 {
                        inherited_object_type = Some(guid_at(ace, p)?);
                        p += 16;
                    }
                    let sid = ace.get(p..).ok_or(SdError("sid"))?;
                    sid_len(sid)
                        .filter(|n| *n <= sid.len())
                        .ok_or(SdError("sid"))?;
                    Some(Ace {
                        allow: kind == ACCESS_ALLOWED_OBJECT,
                        object: true,
                        flags,
                        mask,
                        object_type,
                        inherited_object_type,
                        sid: sid_string(sid).ok_or(SdError("sid"))?,
                    })
                }
                // Audit, callback and other ACE kinds grant nothing here.
                _ => None,
            };
            skipped += usize::from(parsed.is_none());
            dacl.extend(parsed);
            at += size;
        }
        Ok(SecurityDescriptor {
            control,
            dacl,
            skipped,
        })
    }

    pub fn protected(&self) -> bool {
        self.control & SE_DACL_PROTECTED != 0
    }

    pub fn auto_inherited(&self) -> bool {
        self.control & SE_DACL_AUTO_INHERITED != 0
    }
}

/// Whether `ace` speaks to `right` (allows or denies it, by its kind).
pub fn grants(ace: &Ace, right: DirectoryRight) -> bool {
    if ace.mask & GENERIC_ALL != 0 {
        return true;
    }
    let object_is = |guids: &[&str]| {
        ace.object_type
            .as_deref()
            .is_none_or(|g| guids.contains(&g))
    };
    match right {
        DirectoryRight::ResetPassword | DirectoryRight::ChangePassword => {
            ace.mask & CONTROL_ACCESS != 0 && object_is(&[right.guid()])
        }
        DirectoryRight::WriteLockoutTime => {
            (ace.mask & WRITE_PROPERTY != 0 && object_is(&[right.guid()]))
                || (ace.mask & GENERIC_WRITE != 0 && ace.object_type.is_none())
        }
        DirectoryRight::WritePwdLastSet => {
            (ace.mask & WRITE_PROPERTY != 0 && object_is(&[right.guid(), ACCOUNT_RESTRICTIONS]))
                || (ace.mask & GENERIC_WRITE != 0 && ace.object_type.is_none())
        }
    }
}

/// Whether an ACE was copied from a parent (flagged ID).
pub fn is_inherited(ace: &Ace) -> bool {
    ace.flags & INHERITED_ACE != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guid_bytes(s: &str) -> [u8; 16] {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let raw: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
            .collect();
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
        b[4..6].copy_from_slice(&[raw[5], raw[4]]);
        b[6..8].copy_from_slice(&[raw[7], raw[6]]);
        b[8..].copy_from_slice(&raw[8..]);
        b
    }

    fn sid_bytes(rid: u32) -> Vec<u8> {
        // S-1-5-21-1-2-3-<rid>
        let mut v = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1, 2, 3, rid] {
            v.extend_from_slice(&sub.to_le_bytes());
        }
        v
    }

    fn object_ace(
        allow: bool,
        flags: u8,
        mask: u32,
        object: Option<&str>,
        inherited: Option<&str>,
        rid: u32,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&mask.to_le_bytes());
        let of = u32::from(object.is_some()) | (u32::from(inherited.is_some()) << 1);
        body.extend_from_slice(&of.to_le_bytes());
        if let Some(g) = object {
            body.extend_from_slice(&guid_bytes(g));
        }
        if let Some(g) = inherited {
            body.extend_from_slice(&guid_bytes(g));
        }
        body.extend_from_slice(&sid_bytes(rid));
        let mut ace = vec![
            if allow {
                ACCESS_ALLOWED_OBJECT
            } else {
                ACCESS_DENIED_OBJECT
            },
            flags,
        ];
        ace.extend_from_slice(&((body.len() + 4) as u16).to_le_bytes());
        ace.extend_from_slice(&body);
        ace
    }

    fn descriptor(control: u16, aces: &[Vec<u8>]) -> Vec<u8> {
        let mut acl = vec![4, 0, 0, 0];
        acl.extend_from_slice(&(aces.len() as u16).to_le_bytes());
        acl.extend_from_slice(&[0, 0]);
        for a in aces {
            acl.extend_from_slice(a);
        }
        let size = acl.len() as u16;
        acl[2..4].copy_from_slice(&size.to_le_bytes());
        let mut sd = vec![1, 0];
        sd.extend_from_slice(&(control | SE_DACL_PRESENT).to_le_bytes());
        sd.extend_from_slice(&[0; 12]); // owner, group, sacl
        sd.extend_from_slice(&20u32.to_le_bytes());
        sd.extend_from_slice(&acl);
        sd
    }

    const SVC: u32 = 1105;

    #[test]
    fn object_aces_and_protection_are_read() {
        let ace = object_ace(
            false,
            CONTAINER_INHERIT,
            CONTROL_ACCESS,
            Some(DirectoryRight::ResetPassword.guid()),
            Some(USER_CLASS),
            SVC,
        );
        let sd = SecurityDescriptor::parse(&descriptor(SE_DACL_PROTECTED, &[ace])).unwrap();
        assert!(sd.protected() && !sd.auto_inherited());
        assert_eq!(sd.skipped, 0);
        assert_eq!(
            sd.dacl,
            vec![Ace {
                allow: false,
                object: true,
                flags: CONTAINER_INHERIT,
                mask: CONTROL_ACCESS,
                object_type: Some(DirectoryRight::ResetPassword.guid().to_owned()),
                inherited_object_type: Some(USER_CLASS.to_owned()),
                sid: "S-1-5-21-1-2-3-1105".to_owned(),
            }]
        );
        assert!(grants(&sd.dacl[0], DirectoryRight::ResetPassword));
        assert!(!grants(&sd.dacl[0], DirectoryRight::ChangePassword));
    }

    #[test]
    fn guids_and_sids_read_as_windows_writes_them() {
        assert_eq!(
            guid_string(&guid_bytes(DirectoryRight::ResetPassword.guid())),
            DirectoryRight::ResetPassword.guid()
        );
        assert_eq!(sid_string(&sid_bytes(500)).unwrap(), "S-1-5-21-1-2-3-500");
    }

    #[test]
    fn malformed_descriptors_are_errors_not_panics() {
        assert!(SecurityDescriptor::parse(&[]).is_err());
        let good = descriptor(0, &[object_ace(true, 2, 0x100, None, None, SVC)]);
        for cut in 0..good.len() {
            let _ = SecurityDescriptor::parse(&good[..cut]);
        }
        let mut bad = good.clone();
        bad[20 + 8 + 2] = 0xff; // absurd ACE size
        assert!(SecurityDescriptor::parse(&bad).is_err());
    }
}

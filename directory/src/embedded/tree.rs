//! Changes to the tree itself: users moved, renamed and deleted, as
//! `samba-tool user move` and `user delete` do them. The objectGUID stays
//! with a moved user; a deleted one leaves a tombstone with it.

use super::model::{self, ForestFile, ForestIndex, TombstoneFile};
use super::{Ace, EmbeddedDirectory, Inner, no_object_error, save, touch};
use crate::DirectoryError;

impl EmbeddedDirectory {
    /// Moves or renames a user to `new_dn` (an existing OU, container or
    /// domain head must hold it), as `samba-tool user move` or a rename
    /// does: the objectGUID stays, the DN and uSNChanged change, and links
    /// naming the user (ACE trustees, PSO targets, the service account)
    /// follow it as AD's do.
    pub fn move_user(&self, dn: &str, new_dn: &str) -> Result<(), DirectoryError> {
        self.inner.restructure(|f, ix| {
            let u = ix.user(dn).ok_or_else(|| no_object_error(dn))?;
            let old = f.users[u].dn.clone();
            relink(f, &old, Some(new_dn));
            f.users[u].dn = new_dn.to_owned();
            touch(f, u);
            Ok(())
        })
    }

    /// Deletes a user, leaving a tombstone with its objectGUID; links
    /// naming it (ACE trustees, PSO targets) go with it, as in AD.
    pub fn delete_user(&self, dn: &str) -> Result<(), DirectoryError> {
        self.inner.restructure(|f, ix| {
            let u = ix.user(dn).ok_or_else(|| no_object_error(dn))?;
            let old = f.users.remove(u);
            relink(f, &old.dn, None);
            f.highest_usn += 1;
            f.deleted.push(TombstoneFile {
                object_guid: old.object_guid,
                usn_changed: f.highest_usn,
            });
            Ok(())
        })
    }
}

impl Inner {
    /// Like [`Inner::modify`] for changes to the tree itself (moves,
    /// deletions): the copy is validated and indexed again before it is
    /// saved, so a move to a missing OU or onto an existing DN is refused.
    fn restructure(
        &self,
        change: impl FnOnce(&mut ForestFile, &ForestIndex) -> Result<(), DirectoryError>,
    ) -> Result<(), DirectoryError> {
        let mut st = self.lock();
        let mut next = st.file.clone();
        change(&mut next, &st.index)?;
        let index = ForestIndex::build(&next).map_err(DirectoryError)?;
        save(&self.path, &next).map_err(|e| {
            DirectoryError(format!(
                "could not save the forest to {}: {e}",
                self.path.display()
            ))
        })?;
        st.file = next;
        st.index = index;
        Ok(())
    }
}

/// Points every link naming `old` (a user's DN) at `new`, or drops it.
fn relink(f: &mut ForestFile, old: &str, new: Option<&str>) {
    let key = model::normalize(old);
    let names = |dn: &str| model::normalize(dn) == key;
    let mut aces: Vec<&mut Vec<Ace>> = Vec::new();
    for d in &mut f.domains {
        for p in &mut d.password_settings {
            match new {
                Some(n) => p
                    .applies_to
                    .iter_mut()
                    .filter(|t| names(t))
                    .for_each(|t| *t = n.to_owned()),
                None => p.applies_to.retain(|t| !names(t)),
            }
        }
        aces.push(&mut d.aces);
        aces.push(&mut d.admin_sd_holder);
    }
    aces.extend(f.ous.iter_mut().map(|o| &mut o.aces));
    aces.extend(f.users.iter_mut().map(|u| &mut u.aces));
    for list in aces {
        match new {
            Some(n) => list
                .iter_mut()
                .filter(|a| names(&a.trustee))
                .for_each(|a| a.trustee = n.to_owned()),
            None => list.retain(|a| !names(&a.trustee)),
        }
    }
    if let Some(n) = new
        && names(&f.service_account)
    {
        f.service_account = n.to_owned();
    }
}

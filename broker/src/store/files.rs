//! The modes of what the broker keeps on disk. The data directory is
//! created 0700 and every file the broker writes there 0600. At start a
//! store file, an operator key or a storage key that group or others can
//! read is refused: it may hold (or have held, before schema 3) every
//! tenant's keys, and the operator must know it was exposed. A data
//! directory open to others only warns: brokers before this one created it
//! 0755, and with its files 0600 it reveals their names only; refusing it
//! would stop every existing install at its upgrade.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file others could read.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} has mode {mode:04o}, readable by other users than the broker's; \
     run `chmod 600 {path}` (and consider its contents exposed) before starting the broker"
)]
pub struct ExposedFile {
    pub path: PathBuf,
    pub mode: u32,
}

/// Creates `dir` (and its parents) 0700 if it does not exist.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates an empty file 0600 unless it exists, so that the database
/// library's own creation (0666 less the umask) never runs.
pub fn create_private(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Refuses a file group or others can read or write; a missing file is
/// fine (it will be created 0600).
pub fn check_private(path: &Path) -> Result<(), ExposedFile> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Err(ExposedFile {
            path: path.to_owned(),
            mode: meta.permissions().mode() & 0o7777,
        }),
        _ => Ok(()),
    }
}

/// Warns about a data directory others can enter or list; see the module
/// comment for why this does not refuse.
pub fn warn_if_open_dir(dir: &Path) {
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{mode:04o}"),
                "the data directory is open to other users; run `chmod 700` on it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_and_exposed_files_refused_by_name_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/data");
        create_private_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let file = data.join("broker.redb");
        create_private(&file).unwrap();
        create_private(&file).unwrap();
        check_private(&file).unwrap();
        check_private(&data.join("missing")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_private(&file).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("mode 0644"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }
}

//! Database files readable by their owner only: runs, prompts and todos are the user's
//! data. A new database file is created with mode 0600 before SQLite opens it, and its
//! `-wal` and `-shm` companions are held to the same mode (SQLite copies the database's
//! mode when it creates them; they are set again in case one was left by an older run).
//! An existing database keeps the mode its owner gave it.

use std::io;
use std::path::{Path, PathBuf};

/// Create `path` empty with mode 0600 unless it exists; true if it was created.
pub(crate) fn create_private(path: &Path) -> io::Result<bool> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The `-wal` and `-shm` files of the database at `path`.
pub(crate) fn companions(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Set mode 0600 on each of `paths` that exists.
pub(crate) fn restrict(paths: &[PathBuf]) -> io::Result<()> {
    #[cfg(unix)]
    for path in paths {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(unix))]
    let _ = paths;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::adapters::local::SqliteStore;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn given_a_new_database_when_opened_then_it_and_its_wal_and_shm_are_owner_only() {
        let dir = std::env::temp_dir().join(format!("crane-private-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = dir.join("crane.db");
        let store = SqliteStore::open(&db).expect("opens");
        let [wal, shm] = companions(&db);
        for path in [&db, &wal, &shm] {
            assert_eq!(mode(path), 0o600, "{}", path.display());
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn given_an_existing_database_when_opened_then_its_mode_is_kept() {
        let dir = std::env::temp_dir().join(format!("crane-private-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = dir.join("crane.db");
        drop(SqliteStore::open(&db).expect("creates"));
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        drop(SqliteStore::open(&db).expect("reopens"));
        assert_eq!(mode(&db), 0o640);
        assert!(!create_private(&db).expect("exists"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

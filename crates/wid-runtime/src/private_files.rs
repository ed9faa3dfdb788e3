//! Files that hold secrets: created with mode 0600 in directories of mode 0700, and refused
//! when group or others can read them, as ssh refuses a private key.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} holds fewer than {min} characters; delete it to have a new secret generated")]
    Weak { path: String, min: usize },
    #[error("{path} is accessible by group or others (mode {mode:o}); run `chmod go-rwx {path}`")]
    TooOpen { path: String, mode: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PrivateFileError + '_ {
    move |source| PrivateFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Secrets shorter than this are refused when read back.
pub const MIN_SECRET_LEN: usize = 32;

/// Creates `dir` (and its parents) with mode 0700 if it does not exist; an existing one must
/// not be accessible by group or others. It is not tightened silently: the directory may be
/// shared with something else, and the operator should decide.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PrivateFileError> {
    if dir.is_dir() {
        return check_private(dir);
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Creates `path` empty with mode 0600 unless it exists; then checks its mode.
pub fn ensure_private_file(path: &Path) -> Result<(), PrivateFileError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_private(path),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Fails when group or others have any access to `path` (a file or a directory).
pub fn check_private(path: &Path) -> Result<(), PrivateFileError> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::TooOpen {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// Reads the secret in `path`, or, when there is none, writes `make()` there with mode 0600 and
/// returns it. Returns whether it was created. Surrounding whitespace is not part of the secret.
pub fn read_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), PrivateFileError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let secret = make();
            file.write_all(secret.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io_err(path))?;
            Ok((secret, true))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            check_private(path)?;
            let text = fs::read_to_string(path).map_err(io_err(path))?;
            let secret = text.trim().to_owned();
            // An empty file (say, from a crash between create and write) would lock everyone
            // out without a word; refuse it instead.
            if secret.len() < MIN_SECRET_LEN {
                return Err(PrivateFileError::Weak {
                    path: path.display().to_string(),
                    min: MIN_SECRET_LEN,
                });
            }
            Ok((secret, false))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/admin-token");
        ensure_private_dir(path.parent().expect("parent")).expect("dir");
        let long = "s".repeat(MIN_SECRET_LEN);
        let (first, created) = read_or_create_secret(&path, || long.clone()).expect("create");
        assert!(created);
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = read_or_create_secret(&path, || "other".into()).expect("read");
        assert_eq!((again.as_str(), created), (first.as_str(), false));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            read_or_create_secret(&path, || "x".into()),
            Err(PrivateFileError::TooOpen { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&path, "\n").expect("truncate");
        assert!(matches!(
            read_or_create_secret(&path, || "x".into()),
            Err(PrivateFileError::Weak { .. })
        ));
        let open_dir = dir.path().join("open");
        fs::create_dir(&open_dir).expect("mkdir");
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(matches!(
            ensure_private_dir(&open_dir),
            Err(PrivateFileError::TooOpen { .. })
        ));
    }
}

//! Files that hold secrets: created with mode 0600 in directories of mode 0700, and refused
//! when group or others can read them, as ssh refuses a private key, or when they belong to
//! another user than the one wid runs as: a token file another user made beforehand, however
//! private its mode, holds a token they know, and its owner can rewrite it.
//!
//! A symlink is followed, and its target is what is checked: the target is what is read, and
//! its owner and mode are what let someone else read or rewrite it (a link's own owner decides
//! nothing about the content; Kubernetes mounts secrets as links). Secrets are checked on the
//! handle that is then read ([`read_private`]), so a link swapped between check and read
//! cannot slip past.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} holds fewer than {min} characters; delete it to have a new secret generated")]
    Weak { path: String, min: usize },
    #[error("{path} is accessible by group or others (mode {mode:o}); run `chmod go-rwx {path}`")]
    TooOpen { path: String, mode: u32 },
    #[error(
        "{path} is owned by uid {owner}, but wid runs as uid {uid}, and the owner of a secret can \
         read or replace it; if it is yours, run `chown {uid} {path}`, otherwise remove it and \
         let wid make its own"
    )]
    NotOwned { path: String, owner: u32, uid: u32 },
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

/// Fails when `path` (a file or a directory; a symlink's target) is not the running user's, or
/// when group or others have any access to it.
pub fn check_private(path: &Path) -> Result<(), PrivateFileError> {
    check_metadata(path, &fs::metadata(path).map_err(io_err(path))?)
}

/// [`check_private`] when `path` exists; nothing when it does not (a file another program makes
/// later, such as SQLite's journal, is checked by its next start).
pub fn check_private_if_exists(path: &Path) -> Result<(), PrivateFileError> {
    match fs::metadata(path) {
        Ok(metadata) => check_metadata(path, &metadata),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes `bytes` to a new file `path` of mode 0600, through the handle that created it, so that
/// nothing put at the path meanwhile (a symlink, another file) receives them; fails if `path`
/// exists.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))
}

/// Reads the private file `path`, checked as [`check_private`] checks, on the open handle; or a
/// file as a Kubernetes Secret volume presents it to a pod with `fsGroup` ([`is_mounted_secret`]).
pub fn read_private(path: &Path) -> Result<Vec<u8>, PrivateFileError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let metadata = file.metadata().map_err(io_err(path))?;
    if !is_mounted_secret(&metadata) {
        check_metadata(path, &metadata)?;
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    Ok(bytes)
}

/// A file owned by root, of the process's own group, that the group may read but not write and
/// others may not touch: what the kubelet makes of a Secret's keys for a pod with `fsGroup` (it
/// can give a file no other owner). Only root, who reads everything anyway, and the service's
/// own group can read it.
fn is_mounted_secret(metadata: &fs::Metadata) -> bool {
    let mode = metadata.permissions().mode() & 0o777;
    metadata.uid() == 0
        && metadata.gid() == rustix::process::getegid().as_raw()
        && mode & 0o027 == 0
}

/// The effective uid: the owner of the files this process creates.
fn running_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn check_metadata(path: &Path, metadata: &fs::Metadata) -> Result<(), PrivateFileError> {
    let uid = running_uid();
    if metadata.uid() != uid {
        return Err(PrivateFileError::NotOwned {
            path: path.display().to_string(),
            owner: metadata.uid(),
            uid,
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
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
///
/// The secret is written whole to a file of its own beside `path`, then linked to `path`, which
/// fails if `path` exists: processes starting together on one missing file (replicas sharing a
/// volume) agree on one secret, and none ever reads a half-written one.
pub fn read_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), PrivateFileError> {
    if !path.exists() {
        let secret = make();
        if link_new_secret(path, &secret)? {
            return Ok((secret, true));
        }
    }
    let bytes = read_private(path)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        io_err(path)(io::Error::new(
            io::ErrorKind::InvalidData,
            "the secret is not UTF-8",
        ))
    })?;
    let secret = text.trim().to_owned();
    // An empty file (say, one a user made) would lock everyone out without a word; refuse it.
    if secret.len() < MIN_SECRET_LEN {
        return Err(PrivateFileError::Weak {
            path: path.display().to_string(),
            min: MIN_SECRET_LEN,
        });
    }
    Ok((secret, false))
}

/// Writes `secret` to a new private file and links it to `path`; false if `path` exists.
fn link_new_secret(path: &Path, secret: &str) -> Result<bool, PrivateFileError> {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.new", crate::secrets::random_hex::<8>()));
    let staged = std::path::PathBuf::from(name);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .and_then(|mut file| {
            file.write_all(secret.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&staged, path));
    let _ = std::fs::remove_file(&staged);
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Secret's key as the kubelet mounts it with fsGroup (root:GROUP, 0440) is read; one that
    /// others may read, or the group may write, is not. (Only root can make root's files.)
    #[test]
    fn secrets_mounted_by_the_kubelet_are_read() {
        use std::os::unix::fs::PermissionsExt;
        if running_uid() != 0 {
            eprintln!("SKIPPED: needs root to make a file of root's");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        fs::write(&path, "k".repeat(43)).expect("write");
        for (mode, read) in [(0o440, true), (0o400, true), (0o444, false), (0o460, false)] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(read_private(&path).is_ok(), read, "mode {mode:o}");
        }
    }

    #[test]
    fn processes_starting_together_agree_on_one_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin-token");
        let made: Vec<(String, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let path = &path;
                    scope.spawn(move || {
                        read_or_create_secret(path, || {
                            format!("secret-of-thread-{i:02}-xxxxxxxxxxxxxxxxxxxx")
                        })
                        .expect("read or create")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        assert_eq!(made.iter().filter(|(_, created)| *created).count(), 1);
        assert!(made.iter().all(|(secret, _)| *secret == made[0].0));
        let left: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(left.len(), 1, "no staged file is left behind");
    }

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

    /// Private modes are not enough: a secret another user made beforehand (a token they know)
    /// is refused, and so is its directory.
    #[test]
    fn secrets_of_another_owner_are_refused() {
        use std::os::unix::fs::chown;
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: making files of another user needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let token = data.join("admin-token");
        ensure_private_dir(&data).expect("dir");
        let long = "s".repeat(MIN_SECRET_LEN);
        read_or_create_secret(&token, || long.clone()).expect("create");
        chown(&token, Some(65534), Some(65534)).expect("chown");
        let refused = |result: Result<(), PrivateFileError>, path: &Path| {
            let message = result.err().map(|e| e.to_string()).unwrap_or_default();
            for part in [
                path.display().to_string().as_str(),
                "owned by uid 65534",
                "runs as uid 0",
                "chown",
            ] {
                assert!(message.contains(part), "{part:?} not in {message:?}");
            }
        };
        refused(
            read_or_create_secret(&token, || long.clone()).map(drop),
            &token,
        );
        refused(ensure_private_file(&token), &token);
        refused(check_private(&token), &token);
        refused(read_private(&token).map(drop), &token);
        // A link of ours to another user's file: the target is what is read, and is checked.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&token, &link).expect("symlink");
        refused(read_private(&link).map(drop), &link);
        refused(
            read_or_create_secret(&link, || long.clone()).map(drop),
            &link,
        );
        chown(&token, Some(0), Some(0)).expect("chown");
        assert_eq!(
            read_private(&link).expect("a link to our own file"),
            long.as_bytes()
        );
        chown(&data, Some(65534), Some(65534)).expect("chown");
        refused(ensure_private_dir(&data), &data);
    }
}

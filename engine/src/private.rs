//! Files that hold secrets (keys, enrollment bundles): readable by their owner only.

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` readable and writable by its owner only (0600), creating the
/// parent folder if needed, and syncs it. A file already at `path` (an older bundle, a file
/// made by hand) keeps its own mode when opened, so it is narrowed before the secret goes
/// in.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

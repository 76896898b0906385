//! A small file system under a daemon's data directory, for the storage faults (issue 17): a
//! tmpfs of a given size mounted over it, and filling it up.

use std::path::{Path, PathBuf};

use super::lab::bin;

/// A tmpfs mounted over `dir` (in the test's mount namespace, which the daemon shares: it is
/// entered into a server's network namespace only); lazily unmounted on drop, even after a
/// failed assert, so the lab can remove its directory.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=3m`, `ro`...) over `dir`, made if missing.
    pub fn mount(dir: &Path, options: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new(bin("mount"))
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new(bin("umount"))
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The file [`fill`] writes.
pub const FILLER: &str = "filler";

/// Fills the file system of `dir` with `dir/`[`FILLER`] until it is full; removing that file
/// gives the room back.
pub fn fill(dir: &Path) {
    let mut file = std::fs::File::create(dir.join(FILLER)).unwrap();
    let chunk = vec![1u8; 64 << 10];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    // What the last chunk could not take, in smaller pieces.
    while std::io::Write::write_all(&mut file, &[1u8; 512]).is_ok() {}
}

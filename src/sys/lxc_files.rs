//! What the LXC tools leave on disk, read without running a tool: the clones LXC lists beside a
//! container it was snapshot-cloned from (`lxc_snapshots`), the container a clone was made from
//! (`lxc_rdepends`), and a directory's size.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{SysError, SysResult};

/// The snapshot clones of `name` under `lxc_path` that still exist: LXC keeps them in
/// `<name>/lxc_snapshots` as pairs of lines (LXC path, container), and removes an entry when
/// `lxc-destroy` removes the clone. A clone deleted by hand (its `config` gone) is not counted.
///
/// # Errors
/// When the file exists and cannot be read.
pub fn clones_of(lxc_path: &Path, name: &str) -> SysResult<Vec<String>> {
    let file = lxc_path.join(name).join("lxc_snapshots");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SysError::Io {
                what: format!("read {}", file.display()),
                source,
            })
        }
    };
    Ok(containers(&text)
        .filter(|(path, clone)| path.join(clone).join("config").exists())
        .map(|(_, clone)| clone.to_string())
        .collect())
}

/// The directory of the container that snapshot clone `name` under `lxc_path` was made from,
/// as LXC names it in `<name>/lxc_rdepends` (LXC path, then container); `None` for a container
/// that is not a clone, or whose file cannot be read.
pub fn base_of(lxc_path: &Path, name: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(lxc_path.join(name).join("lxc_rdepends")).ok()?;
    let (path, base) = containers(&text).next()?;
    Some(path.join(base))
}

/// The containers a file of LXC's lists as pairs of lines: its LXC path, then its name.
fn containers(text: &str) -> impl Iterator<Item = (&Path, &str)> {
    let mut lines = text.lines().map(str::trim);
    std::iter::from_fn(move || Some((Path::new(lines.next()?), lines.next()?)))
}

/// Bytes allocated on disk under `dir` (files, directories, links; not following links nor
/// entering other file systems), as `du -s` counts them; 0 when `dir` is absent.
///
/// # Errors
/// When a directory cannot be read.
pub fn disk_usage(dir: &Path) -> SysResult<u64> {
    let top = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(SysError::Io {
                what: format!("stat {}", dir.display()),
                source,
            })
        }
    };
    let mut total = top.blocks() * 512;
    if !top.is_dir() {
        return Ok(total);
    }
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let io = |source| SysError::Io {
            what: format!("read {}", d.display()),
            source,
        };
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue; // gone meanwhile
            };
            total += meta.blocks() * 512;
            if meta.is_dir() && meta.dev() == top.dev() {
                todo.push(entry.path());
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_are_the_listed_ones_that_still_have_a_config() {
        let dir = crate::test_support::TempDir::new("clones");
        let p = dir.path();
        for name in ["image-busybox-v1", "container5", "container6"] {
            std::fs::create_dir_all(p.join(name)).unwrap();
        }
        std::fs::write(p.join("container5/config"), "").unwrap();
        let list = format!(
            "{0}\ncontainer5\n{0}\ncontainer6\n/elsewhere\ncontainer7\n",
            p.display()
        );
        std::fs::write(p.join("image-busybox-v1/lxc_snapshots"), list).unwrap();
        assert_eq!(clones_of(p, "image-busybox-v1").unwrap(), ["container5"]);
        assert!(clones_of(p, "container5").unwrap().is_empty());
    }

    #[test]
    fn usage_counts_what_is_under_the_directory() {
        let dir = crate::test_support::TempDir::new("usage");
        let empty = disk_usage(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), vec![7u8; 64 * 1024]).unwrap();
        let full = disk_usage(dir.path()).unwrap();
        assert!(full >= empty + 64 * 1024, "{empty} then {full}");
        assert_eq!(disk_usage(&dir.path().join("absent")).unwrap(), 0);
        assert!(
            disk_usage(&dir.path().join("sub/f")).unwrap() >= 64 * 1024,
            "a file"
        );
    }
}

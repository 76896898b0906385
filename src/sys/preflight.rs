//! What `serve` needs of the machine, checked before it touches anything (issue 17): the
//! `lxc-*` tools on `PATH`, and the kernel's bridge, VXLAN and veth support. Without them the
//! daemon would make half a fabric, accept jobs and fail each one at its first step; instead it
//! says which are missing in one sentence and exits 2. Overlayfs is only wanted by image
//! clones, which fall back to full copies without it (`images::Images::clone_into`), so its
//! absence disables overlay clones alone, said once at start.
//!
//! A kernel feature counts as present when its module is loaded (`/sys/module/NAME`), built in
//! (`modules.builtin`) or installed for the running kernel (`modules.dep`), since the kernel
//! loads `vxlan`, `bridge` and `veth` by itself on the first link of their kind (the
//! `rtnl-link-KIND` alias, rtnetlink(7)). Without those lists (`/lib/modules/<release>`) the
//! kernel's build config (`/boot/config-<release>`) decides; without either, nothing can be
//! told without making a link, and the feature is taken as present (a kernel with no module
//! tree builds everything in, as this project's CI VM does: no `/sys/module/veth` there). Only
//! files are read: no process, no netlink.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::lxc::tool;

/// A kernel feature: its module's name, its build option, and what it is for.
type Feature = (&'static str, &'static str, &'static str);

/// The kernel features every server needs.
const MODULES: [Feature; 3] = [
    ("bridge", "CONFIG_BRIDGE", "a bridge per VLAN"),
    ("vxlan", "CONFIG_VXLAN", "the VXLAN overlay"),
    ("veth", "CONFIG_VETH", "the containers' interfaces"),
];

/// The file system image clones use when the kernel has it.
const OVERLAY: Feature = ("overlay", "CONFIG_OVERLAY_FS", "overlay clones of images");

/// What is missing, as found by [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// The `lxc-*` tools not found on `PATH`.
    pub missing_tools: Vec<&'static str>,
    /// The `PATH` searched, for the sentence.
    pub path: String,
    /// The kernel features found missing (module, build option, what it is for).
    pub missing_modules: Vec<Feature>,
    /// Whether the kernel can mount overlayfs.
    pub overlay: bool,
}

impl Preflight {
    /// The one sentence that stops `serve` (exit 2), naming everything missing; `None` when
    /// nothing needed is.
    pub fn refusal(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.missing_tools.is_empty() {
            parts.push(format!(
                "{} not found on PATH ({}): install LXC (apt-get install lxc)",
                self.missing_tools.join(", "),
                self.path
            ));
        }
        if !self.missing_modules.is_empty() {
            let kernel: Vec<String> = self
                .missing_modules
                .iter()
                .map(|(m, _, why)| format!("{m} (for {why})"))
                .collect();
            parts.push(format!(
                "the kernel has no {} support: neither loaded, built in nor installed as a module",
                kernel.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| format!("serve cannot run here: {}", parts.join("; ")))
    }

    /// Why image clones are full copies from the start (no overlayfs), when they are.
    pub fn overlay_missing(&self) -> Option<String> {
        (!self.overlay).then(|| {
            "the kernel has no overlayfs (not in /proc/filesystems, not built nor installed as a module): containers are full copies of their image".to_string()
        })
    }
}

/// Checks this machine: the tools for a server with images (`clone`) or without, on
/// `path_var` (the daemon's `PATH`), and the kernel's modules.
pub fn check(path_var: Option<&OsStr>, clone: bool) -> Preflight {
    let mut tools: Vec<&'static str> = tool::ALWAYS.to_vec();
    if clone {
        tools.push(tool::COPY);
    }
    let kernel = Kernel::running();
    Preflight {
        missing_tools: tools
            .into_iter()
            .filter(|t| !on_path(path_var, t))
            .collect(),
        path: path_var
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        missing_modules: MODULES
            .into_iter()
            .filter(|f| kernel.has(f) == Some(false))
            .collect(),
        overlay: kernel.has_filesystem(OVERLAY.0) || kernel.has(&OVERLAY) != Some(false),
    }
}

/// Whether an executable file `name` is in one of `path_var`'s directories (execvp(3)'s
/// search; an empty or unset `PATH` finds nothing).
fn on_path(path_var: Option<&OsStr>, name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path_var) = path_var else {
        return false;
    };
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .any(|f| {
            std::fs::metadata(f).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Where the running kernel says what it has.
struct Kernel {
    /// `/sys/module`: one directory per module loaded (and per built-in one with parameters).
    sys_module: PathBuf,
    /// `/lib/modules/<release>`, with `modules.builtin` and `modules.dep`.
    lib_modules: PathBuf,
    /// `/boot/config-<release>`, the kernel's build options.
    config: PathBuf,
    /// `/proc/filesystems`.
    filesystems: PathBuf,
}

impl Kernel {
    fn running() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let release = release.trim();
        Self {
            sys_module: "/sys/module".into(),
            lib_modules: Path::new("/lib/modules").join(release),
            config: PathBuf::from(format!("/boot/config-{release}")),
            filesystems: "/proc/filesystems".into(),
        }
    }

    /// Whether the kernel has `feature`; `None` when nothing here tells (module doc).
    fn has(&self, (module, option, _): &Feature) -> Option<bool> {
        if self.sys_module.join(module).exists() {
            return Some(true);
        }
        let lists: Vec<String> = ["modules.builtin", "modules.dep"]
            .into_iter()
            .filter_map(|f| std::fs::read_to_string(self.lib_modules.join(f)).ok())
            .collect();
        if !lists.is_empty() {
            return Some(lists.iter().any(|text| lists_module(text, module)));
        }
        let config = std::fs::read_to_string(&self.config).ok()?;
        Some(config_enables(&config, option))
    }

    fn has_filesystem(&self, fs: &str) -> bool {
        std::fs::read_to_string(&self.filesystems).is_ok_and(|text| lists_filesystem(&text, fs))
    }
}

/// Whether a kernel config enables `option`, built in (`=y`) or as a module (`=m`).
fn config_enables(config: &str, option: &str) -> bool {
    config
        .lines()
        .filter_map(|l| l.split_once('='))
        .any(|(k, v)| k == option && (v == "y" || v == "m"))
}

/// Whether `modules.builtin` or `modules.dep` text lists `module`: a line whose first path
/// (before `:` in `modules.dep`) is `…/<module>.ko`, compressed or not; `-` and `_` are one
/// in module names (modprobe(8)).
fn lists_module(text: &str, module: &str) -> bool {
    let wanted = module.replace('-', "_");
    text.lines().any(|line| {
        let file = line.split(':').next().unwrap_or("").trim();
        let base = file.rsplit('/').next().unwrap_or("");
        base.split_once(".ko")
            .is_some_and(|(name, _)| name.replace('-', "_") == wanted)
    })
}

/// Whether `/proc/filesystems` text lists `fs` (lines `nodev\toverlay` or `\text4`).
fn lists_filesystem(text: &str, fs: &str) -> bool {
    text.lines()
        .any(|line| line.split_whitespace().last() == Some(fs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_found_in_builtin_and_dep_lists_by_name_only() {
        let dep = "kernel/drivers/net/vxlan/vxlan.ko.zst: kernel/net/ipv4/udp_tunnel.ko.zst\n\
                   kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko\n";
        assert!(lists_module(dep, "vxlan"));
        assert!(
            !lists_module(dep, "bridge"),
            "a dependency is not the module"
        );
        assert!(lists_module(dep, "br-netfilter"));
        let builtin = "kernel/net/bridge/bridge.ko\nkernel/drivers/net/veth.ko\n";
        assert!(lists_module(builtin, "bridge"));
        assert!(lists_module(builtin, "veth"));
        assert!(!lists_module(builtin, "vxlan"));
        assert!(!lists_module("kernel/drivers/net/vxlanx.ko\n", "vxlan"));
    }

    #[test]
    fn a_config_enables_an_option_built_in_or_as_a_module() {
        let config = "CONFIG_BRIDGE=y\nCONFIG_VXLAN=m\n# CONFIG_VETH is not set\nCONFIG_VETH_X=y\n";
        assert!(config_enables(config, "CONFIG_BRIDGE"));
        assert!(config_enables(config, "CONFIG_VXLAN"));
        assert!(!config_enables(config, "CONFIG_VETH"));
        assert!(!config_enables(config, "CONFIG_OVERLAY_FS"));
    }

    #[test]
    fn a_feature_is_told_by_sysfs_then_the_module_lists_then_the_config_else_not_at_all() {
        let dir = crate::test_support::TempDir::new("preflight");
        let kernel = Kernel {
            sys_module: dir.path().join("sys"),
            lib_modules: dir.path().join("lib"),
            config: dir.path().join("config"),
            filesystems: dir.path().join("filesystems"),
        };
        let [bridge, vxlan, veth] = MODULES;
        assert_eq!(kernel.has(&veth), None, "nothing to tell by");
        std::fs::write(&kernel.config, "CONFIG_VXLAN=m\n# CONFIG_VETH is not set\n").unwrap();
        assert_eq!(kernel.has(&vxlan), Some(true));
        assert_eq!(kernel.has(&veth), Some(false));
        std::fs::create_dir_all(kernel.sys_module.join("veth")).unwrap();
        assert_eq!(kernel.has(&veth), Some(true), "loaded");
        std::fs::create_dir(&kernel.lib_modules).unwrap();
        std::fs::write(kernel.lib_modules.join("modules.dep"), "k/bridge.ko:\n").unwrap();
        assert_eq!(kernel.has(&bridge), Some(true));
        assert_eq!(
            kernel.has(&vxlan),
            Some(false),
            "the lists outrank the config"
        );
    }

    #[test]
    fn filesystems_are_read_from_the_last_column() {
        let text = "nodev\tsysfs\nnodev\toverlay\n\text4\n";
        assert!(lists_filesystem(text, "overlay"));
        assert!(lists_filesystem(text, "ext4"));
        assert!(!lists_filesystem(text, "nodev"));
        assert!(!lists_filesystem(text, "xfs"));
    }

    #[test]
    fn only_executable_files_on_path_count() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::test_support::TempDir::new("preflight");
        let (tool, plain) = (dir.path().join("lxc-start"), dir.path().join("lxc-stop"));
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&plain, "").unwrap();
        std::fs::create_dir(dir.path().join("lxc-info")).unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert!(on_path(Some(&path), "lxc-start"));
        assert!(!on_path(Some(&path), "lxc-stop"), "not executable");
        assert!(!on_path(Some(&path), "lxc-info"), "a directory");
        assert!(!on_path(None, "lxc-start"));
        assert!(!on_path(Some(OsStr::new("")), "lxc-start"));
    }

    #[test]
    fn what_is_missing_is_one_sentence_and_overlay_alone_refuses_nothing() {
        let all_there = Preflight {
            overlay: false,
            ..Preflight::default()
        };
        assert_eq!(all_there.refusal(), None);
        assert!(all_there.overlay_missing().unwrap().contains("full copies"));
        let missing = Preflight {
            missing_tools: vec![tool::START, tool::STOP],
            path: "/opt/bin".into(),
            missing_modules: vec![MODULES[1]],
            overlay: true,
        };
        assert_eq!(
            missing.refusal().unwrap(),
            "serve cannot run here: lxc-start, lxc-stop not found on PATH (/opt/bin): install LXC (apt-get install lxc); the kernel has no vxlan (for the VXLAN overlay) support: neither loaded, built in nor installed as a module"
        );
        assert_eq!(missing.overlay_missing(), None);
    }

    #[test]
    fn images_need_lxc_copy_too() {
        let empty = Some(OsStr::new("/nonexistent"));
        assert_eq!(check(empty, false).missing_tools, tool::ALWAYS);
        let with_images = check(empty, true).missing_tools;
        assert_eq!(with_images.last(), Some(&tool::COPY));
    }
}

//! Whether this process may change network configuration at all.

/// Bit of CAP_NET_ADMIN in the capability sets (capabilities(7)).
const CAP_NET_ADMIN: u32 = 12;

/// True when the effective capability set of this process holds CAP_NET_ADMIN, read from
/// `/proc/self/status` (root without it, as in some containers, still cannot add links).
pub fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

//! How full each bridge may be, without reading every port of it for every create.
//!
//! The only way to count a bridge's ports is a dump of them all (`Netlink::bridge_ports`): at
//! 500 containers ≈ 2 ms, grown with each one (benches/scale.rs). The worker is the only one
//! that adds ports, one create at a time, so a count stays an upper bound if every create after
//! it counts as one more port (a failed create or a destroy only makes it looser). The ports
//! are counted again when that bound comes within [`RECOUNT_WITHIN`] of the limit, and after
//! [`RECOUNT_EVERY`] creates, so ports someone adds by hand are seen in time; were enough of
//! them added in between, the kernel's own limit still refuses the port, and the create's
//! `create_veth` fails and is rolled back.

use std::collections::HashMap;
use std::sync::Mutex;

/// A count this close to the limit (or closer) is made again before each create.
pub const RECOUNT_WITHIN: usize = 64;
/// Creates on a bridge after which its ports are counted again anyway.
pub const RECOUNT_EVERY: usize = 256;

/// Per bridge: the ports last counted, and the creates since.
#[derive(Debug, Default)]
pub struct PortBudget(Mutex<HashMap<String, Tally>>);

#[derive(Debug, Clone, Copy)]
struct Tally {
    counted: usize,
    since: usize,
}

impl PortBudget {
    /// Whether a create on `bridge` must count its ports first, with `limit` ports allowed.
    pub fn needs_count(&self, bridge: &str, limit: usize) -> bool {
        match self.lock().get(bridge) {
            None => true,
            Some(t) => t.since >= RECOUNT_EVERY || t.counted + t.since + RECOUNT_WITHIN >= limit,
        }
    }

    /// `bridge` has `ports` container ports now.
    pub fn counted(&self, bridge: &str, ports: usize) {
        let tally = Tally {
            counted: ports,
            since: 0,
        };
        self.lock().insert(bridge.to_string(), tally);
    }

    /// A create on `bridge` goes ahead: one port more, at most.
    pub fn one_more(&self, bridge: &str) {
        if let Some(t) = self.lock().get_mut(bridge) {
            t.since += 1;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tally>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_is_counted_first_then_again_near_the_limit_or_after_many_creates() {
        let b = PortBudget::default();
        assert!(b.needs_count("br2", 1022));
        b.counted("br2", 10);
        assert!(!b.needs_count("br2", 1022));
        assert!(b.needs_count("br3", 1022), "each bridge is its own");
        for _ in 0..RECOUNT_EVERY - 1 {
            b.one_more("br2");
        }
        assert!(!b.needs_count("br2", 1022));
        b.one_more("br2");
        assert!(b.needs_count("br2", 1022), "after RECOUNT_EVERY creates");
        b.counted("br2", 1022 - RECOUNT_WITHIN - 1);
        assert!(!b.needs_count("br2", 1022));
        b.one_more("br2");
        assert!(
            b.needs_count("br2", 1022),
            "near the limit every create counts"
        );
    }
}

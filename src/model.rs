//! Domain values shared by every part: container IDs, VLAN and host IDs, IPv4 prefixes, and the
//! names derived from them.
//!
//! Every value here is validated when it is built, so code that holds one never re-checks it.
//! The limits come from the kernel: interface names are at most 15 bytes (IFNAMSIZ 16, with the
//! NUL), and the VLAN and host IDs are the third and fourth bytes of `192.168.V.N`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value was refused; the text is a sentence for a person and names what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

pub(crate) fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

/// Longest interface name the kernel accepts (IFNAMSIZ minus the terminating NUL).
pub const IFNAME_MAX: usize = 15;

/// A container's numeric ID, `1..=9_999_999`.
///
/// The upper bound keeps `vethc_br<ID>` (8 bytes + digits) within [`IFNAME_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct ContainerId(u32);

impl ContainerId {
    /// Largest ID whose host veth name still fits in 15 bytes.
    pub const MAX: u32 = 9_999_999;

    /// Builds an ID.
    ///
    /// # Errors
    /// When `id` is outside `1..=9_999_999`.
    pub fn new(id: u64) -> Result<Self, InvalidValue> {
        if (1..=u64::from(Self::MAX)).contains(&id) {
            Ok(Self(id as u32))
        } else {
            Err(invalid(format!(
                "container id {id} is out of range; allowed 1 to {}",
                Self::MAX
            )))
        }
    }

    /// The number itself.
    pub fn get(self) -> u32 {
        self.0
    }

    /// LXC name of the container, `container<ID>`.
    pub fn container_name(self) -> String {
        format!("container{}", self.0)
    }

    /// Name of the veth end that stays on the host, attached to the bridge.
    pub fn host_veth(self) -> String {
        format!("vethc_br{}", self.0)
    }
}

impl TryFrom<u64> for ContainerId {
    type Error = InvalidValue;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<ContainerId> for u64 {
    fn from(v: ContainerId) -> u64 {
        u64::from(v.0)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ContainerId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u64 = s
            .trim()
            .parse()
            .map_err(|_| invalid(format!("container id {s:?} is not a whole number")))?;
        Self::new(n)
    }
}

/// Parses a whole number in `1..=254`, the range of one address byte that is neither the network
/// nor the broadcast address of a /24.
fn parse_byte_id(what: &str, s: &str) -> Result<u8, InvalidValue> {
    let n: u64 = s.trim().parse().map_err(|_| {
        invalid(format!(
            "{what} {s:?} is not a whole number; allowed 1 to 254"
        ))
    })?;
    byte_id(what, n)
}

fn byte_id(what: &str, n: u64) -> Result<u8, InvalidValue> {
    if (1..=254).contains(&n) {
        Ok(n as u8)
    } else {
        Err(invalid(format!(
            "{what} {n} is out of range; allowed 1 to 254"
        )))
    }
}

macro_rules! byte_id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "u64", into = "u64")]
        pub struct $name(u8);

        impl $name {
            /// Builds the ID.
            ///
            /// # Errors
            /// When the number is outside `1..=254`.
            pub fn new(n: u64) -> Result<Self, InvalidValue> {
                byte_id($what, n).map(Self)
            }

            /// The number itself.
            pub fn get(self) -> u8 {
                self.0
            }
        }

        impl TryFrom<u64> for $name {
            type Error = InvalidValue;
            fn try_from(v: u64) -> Result<Self, Self::Error> {
                Self::new(v)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                u64::from(v.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_byte_id($what, s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

byte_id_type!(
    /// A VLAN served by the fabric, `1..=254`: the VNI, the third byte of `192.168.V.N` and of the
    /// multicast group `239.0.0.V`.
    VlanId,
    "vlan"
);

byte_id_type!(
    /// This server's host ID, `1..=254`: the last byte of its addresses, unique per server.
    HostId,
    "host id"
);

impl VlanId {
    /// Name of the VXLAN device of this VLAN.
    pub fn vxlan_name(self) -> String {
        format!("vxlan{}", self.0)
    }

    /// Name of the bridge of this VLAN.
    pub fn bridge_name(self) -> String {
        format!("br{}", self.0)
    }

    /// Multicast group the VXLAN joins to flood unknown destinations.
    pub fn group(self) -> Ipv4Addr {
        Ipv4Addr::new(239, 0, 0, self.0)
    }

    /// The subnet this VLAN uses, `192.168.V.0/24`.
    pub fn subnet(self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::new(192, 168, self.0, 0),
            prefix: 24,
        }
    }

    /// The host's own address on this VLAN's bridge.
    pub fn host_address(self, host: HostId) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::new(192, 168, self.0, host.get()),
            prefix: 24,
        }
    }
}

/// An IPv4 address with its prefix length, written `a.b.c.d/p`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// Prefix length, `0..=32`.
    pub prefix: u8,
}

/// A container's `eth0` MAC, from its address: `02:00` (locally administered, unicast), then
/// the address's four bytes. A start, restart or repair makes the veth pair again; with the
/// same MAC, a neighbour's ARP entry for the container stays right (a random one left it
/// unreachable until that entry aged out, 15–45 s and more). Unique within a VLAN, as its
/// addresses are; the same address on two VLANs is on two bridges that never meet.
pub fn container_mac(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x00, a, b, c, d]
}

impl Ipv4Cidr {
    /// The netmask as a number.
    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address (host bits zero).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (host bits one).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Checks that this is a usable host address: a prefix of 8..=30 and neither the network nor
    /// the broadcast address.
    ///
    /// # Errors
    /// With a sentence naming the problem.
    pub fn check_host(self) -> Result<(), InvalidValue> {
        if !(8..=30).contains(&self.prefix) {
            return Err(invalid(format!(
                "prefix /{} of {self} is not allowed; use /8 to /30",
                self.prefix
            )));
        }
        if self.addr == self.network() {
            return Err(invalid(format!(
                "{self} is the network address, not a host address"
            )));
        }
        if self.addr == self.broadcast() {
            return Err(invalid(format!(
                "{self} is the broadcast address, not a host address"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            invalid(format!(
                "address {s:?} is not an IPv4 address with prefix, like 192.168.2.5/24"
            ))
        };
        let (a, p) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

/// Parses a comma-separated VLAN list such as `2,3,4`, refusing duplicates.
///
/// # Errors
/// On a bad number, an empty list or a VLAN named twice.
pub fn parse_vlan_list(s: &str) -> Result<Vec<VlanId>, InvalidValue> {
    let vlans = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<VlanId>, _>>()?;
    check_vlan_list(vlans)
}

/// Checks a list of VLANs however it was given (flag or config file): not empty, none twice.
///
/// # Errors
/// When a VLAN is listed twice or the list is empty.
pub fn check_vlan_list(vlans: Vec<VlanId>) -> Result<Vec<VlanId>, InvalidValue> {
    for (i, v) in vlans.iter().enumerate() {
        if vlans[..i].contains(v) {
            return Err(invalid(format!("vlan {v} is listed twice")));
        }
    }
    if vlans.is_empty() {
        return Err(invalid(
            "the vlan list is empty; give at least one, like 2,3,4",
        ));
    }
    Ok(vlans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_mac_is_its_address_locally_administered() {
        let mac = container_mac(Ipv4Addr::new(192, 168, 2, 5));
        assert_eq!(mac, [0x02, 0x00, 192, 168, 2, 5]);
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_ne!(mac, container_mac(Ipv4Addr::new(192, 168, 2, 6)));
    }

    #[test]
    fn container_id_limits_keep_names_within_ifnamsiz() {
        let max = ContainerId::new(u64::from(ContainerId::MAX)).unwrap();
        assert_eq!(max.host_veth(), "vethc_br9999999");
        assert!(max.host_veth().len() <= IFNAME_MAX);
        assert!(ContainerId::new(0).is_err());
        assert!(ContainerId::new(10_000_000).is_err());
        assert!("abc".parse::<ContainerId>().is_err());
        assert_eq!(
            "5".parse::<ContainerId>().unwrap().container_name(),
            "container5"
        );
    }

    #[test]
    fn vlan_and_host_ids_are_address_bytes() {
        assert!("0".parse::<VlanId>().is_err());
        assert!("255".parse::<VlanId>().is_err());
        let v: VlanId = "3".parse().unwrap();
        let h: HostId = "7".parse().unwrap();
        assert_eq!(v.host_address(h).to_string(), "192.168.3.7/24");
        assert_eq!(v.group(), Ipv4Addr::new(239, 0, 0, 3));
        assert_eq!(v.vxlan_name(), "vxlan3");
        assert_eq!(v.bridge_name(), "br3");
    }

    #[test]
    fn cidr_parsing_and_host_checks() {
        let c: Ipv4Cidr = "192.168.2.5/24".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(192, 168, 2, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(192, 168, 2, 255));
        assert!(c.check_host().is_ok());
        assert!("192.168.2.0/24"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .check_host()
            .is_err());
        assert!("192.168.2.255/24"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .check_host()
            .is_err());
        assert!("192.168.2.5/31"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .check_host()
            .is_err());
        assert!("192.168.2.5".parse::<Ipv4Cidr>().is_err());
        assert!("192.168.2.5/33".parse::<Ipv4Cidr>().is_err());
        assert!("300.1.1.1/24".parse::<Ipv4Cidr>().is_err());
        assert!(c.contains(Ipv4Addr::new(192, 168, 2, 200)));
        assert!(!c.contains(Ipv4Addr::new(192, 168, 3, 1)));
    }

    #[test]
    fn vlan_lists_refuse_duplicates_and_empties() {
        assert_eq!(parse_vlan_list("2, 3,4").unwrap().len(), 3);
        assert!(parse_vlan_list("2,2").unwrap_err().0.contains("twice"));
        assert!(parse_vlan_list("").is_err());
        assert!(parse_vlan_list("2,0").is_err());
    }
}

//! The one gateway to the kernel and to LXC. Nothing outside `sys` imports rtnetlink or runs a
//! process; everything else speaks the small verbs of the traits here, which have a real
//! implementation and a fake for unit tests.
//!
//! - [`netlink`]: the [`Netlink`] and [`NetnsOpener`] traits and the link facts they return;
//! - [`rtnl`]: their real implementation over rtnetlink;
//! - [`fake`]: an in-memory implementation that records calls and plays scripted failures;
//! - [`privilege`]: the CAP_NET_ADMIN check made before touching anything.

pub mod error;
pub mod fake;
pub mod netlink;
pub mod privilege;
pub mod rtnl;

pub use error::{SysError, SysResult};
pub use netlink::{LinkKind, LinkState, Netlink, NetnsOpener, VethSpec, VxlanAttrs, VxlanSpec};

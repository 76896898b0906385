//! The pure half of reconciliation: what one container's record and what the host shows of it
//! say about its health, and which repair (if any) that calls for. Tested without a host.

use serde::Serialize;

use crate::queue::{ContainerRecord, ContainerRecordState, DesiredState, Lifecycle};

/// What the host shows of one container, as a reconcile pass reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// LXC knows it (its config is there).
    pub config: bool,
    /// Its root file system is there.
    pub rootfs: bool,
    /// Its init's PID while it runs.
    pub pid: Option<u32>,
    /// The host veth, when present.
    pub veth: Option<VethFacts>,
    /// Whether the record's address is local to the container's network namespace.
    pub address: bool,
}

/// The host end of the container's veth pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VethFacts {
    /// Enslaved to the container's VLAN bridge.
    pub on_bridge: bool,
    /// Up.
    pub up: bool,
    /// Its MTU equals the bridge's.
    pub mtu_ok: bool,
}

/// How a container is, against its desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "health", content = "problems", rename_all = "lowercase")]
pub enum Health {
    /// As desired.
    Ok,
    /// Not running (desired or not).
    Stopped,
    /// Running, but not as it should: what is wrong, in words.
    Degraded(Vec<String>),
    /// Its root file system is gone: it is never made again under this name.
    Missing,
}

impl Health {
    /// The word shown for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Stopped => "stopped",
            Self::Degraded(_) => "degraded",
            Self::Missing => "missing",
        }
    }
}

/// What a reconcile pass does about a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drift {
    /// Desired running, found stopped: start it (with its network).
    Stopped,
    /// Running with its network broken: make the network again.
    Network,
    /// Its root file system is gone: mark the record `missing`, recreate nothing.
    Missing,
    /// Desired stopped, found running (started by hand): reported, not stopped.
    RunningUndesired,
}

impl Drift {
    /// The word used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Network => "network",
            Self::Missing => "missing",
            Self::RunningUndesired => "running_undesired",
        }
    }

    /// The job that repairs it, if one does.
    pub fn repair(self) -> Option<Lifecycle> {
        match self {
            Self::Stopped => Some(Lifecycle::Start),
            Self::Network => Some(Lifecycle::Repair),
            Self::Missing | Self::RunningUndesired => None,
        }
    }
}

/// The health of container `rec` given `obs`, and the drift to act on, if any.
pub fn classify(rec: &ContainerRecord, obs: &Observed) -> (Health, Option<Drift>) {
    if rec.state == ContainerRecordState::Missing {
        return (Health::Missing, None);
    }
    if !obs.config || !obs.rootfs {
        return (Health::Missing, Some(Drift::Missing));
    }
    let Some(_) = obs.pid else {
        return match rec.desired {
            DesiredState::Running => (Health::Stopped, Some(Drift::Stopped)),
            DesiredState::Stopped => (Health::Stopped, None),
        };
    };
    if rec.desired == DesiredState::Stopped {
        let why = "running, but its desired state is stopped".to_string();
        return (Health::Degraded(vec![why]), Some(Drift::RunningUndesired));
    }
    let problems = network_problems(rec, obs);
    if problems.is_empty() {
        (Health::Ok, None)
    } else {
        (Health::Degraded(problems), Some(Drift::Network))
    }
}

fn network_problems(rec: &ContainerRecord, obs: &Observed) -> Vec<String> {
    let veth = rec.id.host_veth();
    let mut problems = Vec::new();
    match obs.veth {
        None => problems.push(format!("host veth {veth} is missing")),
        Some(v) => {
            if !v.on_bridge {
                problems.push(format!("{veth} is not on {}", rec.vlan.bridge_name()));
            }
            if !v.up {
                problems.push(format!("{veth} is down"));
            }
            if !v.mtu_ok {
                problems.push(format!(
                    "{veth}'s MTU differs from {}'s",
                    rec.vlan.bridge_name()
                ));
            }
        }
    }
    if !obs.address {
        problems.push(format!("eth0 lacks {}", rec.ip.addr));
    }
    problems
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;

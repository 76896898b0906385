//! What a job asks for, and the names its steps are stored under: the vocabulary that
//! [`crate::queue`] stores and [`crate::steps`] acts on, owned here, below both.
//!
//! Step names are written into every stored job, so they are a file format: each name has one
//! home ([`StepName::as_str`]) and never changes; a test parses every name ever stored.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::{ContainerId, Ipv4Cidr, VlanId};

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    /// Container ID; names `container<ID>` and `vethc_br<ID>`.
    pub id: ContainerId,
    /// VLAN whose bridge the container joins.
    pub vlan: VlanId,
    /// The container's `eth0` address.
    pub ip: Ipv4Cidr,
    /// Default gateway inside the container, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The template asked for, one the server offers; `None`: its default (the original
    /// tool's form POST, and jobs stored before templates could be asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// Every step a job can run, by the name it is stored and shown under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// `lxc-create` from the template.
    CreateContainer,
    /// `lxc-start`, until init has its own network namespace.
    StartContainer,
    /// The veth pair, host end on the bridge, peer `eth0` in the container.
    CreateVeth,
    /// `lo`, `eth0`'s address, MTU and route inside the container.
    ConfigureNetwork,
    /// `lxc-stop -k`.
    StopContainer,
    /// Removes the host veth.
    DeleteVeth,
    /// `lxc-destroy` and the container's directory.
    DestroyContainer,
    /// `lxc-stop` with a grace period (the container's init is asked to halt), then a kill.
    ShutdownContainer,
    /// The image the container is cloned from, built when missing or out of date (nothing
    /// when the server creates from the template, `--clone=off`).
    EnsureImage,
    /// A new version of an image, built from its template.
    BuildImage,
    /// Image versions no container uses any more, but each template's newest, removed.
    RemoveUnusedImages,
}

impl StepName {
    /// A create's steps, in the order they run.
    pub const CREATE: [Self; 5] = [
        Self::EnsureImage,
        Self::CreateContainer,
        Self::StartContainer,
        Self::CreateVeth,
        Self::ConfigureNetwork,
    ];

    /// A destroy's steps, in the order they run.
    pub const DESTROY: [Self; 4] = [
        Self::StopContainer,
        Self::DeleteVeth,
        Self::DestroyContainer,
        Self::RemoveUnusedImages,
    ];

    /// An image build's steps.
    pub const BUILD_IMAGE: [Self; 2] = [Self::BuildImage, Self::RemoveUnusedImages];

    /// A start's steps: the container, then its network again (it died with the container's
    /// network namespace; a stale host veth, if any, goes first).
    pub const START: [Self; 4] = [
        Self::StartContainer,
        Self::DeleteVeth,
        Self::CreateVeth,
        Self::ConfigureNetwork,
    ];

    /// A stop's steps.
    pub const STOP: [Self; 1] = [Self::ShutdownContainer];

    /// A restart's steps: a stop, then a start.
    pub const RESTART: [Self; 5] = [
        Self::ShutdownContainer,
        Self::StartContainer,
        Self::DeleteVeth,
        Self::CreateVeth,
        Self::ConfigureNetwork,
    ];

    /// A network repair's steps, on a running container: its veth pair and `eth0` made again.
    pub const REPAIR: [Self; 3] = [Self::DeleteVeth, Self::CreateVeth, Self::ConfigureNetwork];

    /// Every step.
    pub const ALL: [Self; 11] = [
        Self::CreateContainer,
        Self::StartContainer,
        Self::CreateVeth,
        Self::ConfigureNetwork,
        Self::StopContainer,
        Self::DeleteVeth,
        Self::DestroyContainer,
        Self::ShutdownContainer,
        Self::EnsureImage,
        Self::BuildImage,
        Self::RemoveUnusedImages,
    ];

    /// Whether undoing this step does nothing: what it does is never taken back (a stop, a
    /// destroy, a stale host veth's removal, old images' removal). Nothing of it is left for
    /// a record to account for, so its start need not be on disk before it acts
    /// ([`StepEvent::must_be_durable_at_once`]); `steps::tests` checks each such undo touches
    /// nothing.
    pub fn undo_does_nothing(self) -> bool {
        matches!(
            self,
            Self::StopContainer
                | Self::DeleteVeth
                | Self::DestroyContainer
                | Self::ShutdownContainer
                | Self::RemoveUnusedImages
        )
    }

    /// The step before it in every plan whose undo also takes back what this one does:
    /// `configure_network` changes `eth0` alone (its address, MTU and route) and sets `lo` up,
    /// and `create_veth`'s undo deletes the veth pair, `eth0` with all it carries (`lo` up
    /// harms nothing). That earlier step's start is on disk before this one acts, and
    /// accounts for all this one may leave, so this one's need not be
    /// ([`StepEvent::must_be_durable_at_once`]); the spec's tests check the order in every
    /// plan, `steps::tests` the undo.
    pub fn undone_with(self) -> Option<Self> {
        match self {
            Self::ConfigureNetwork => Some(Self::CreateVeth),
            _ => None,
        }
    }

    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateContainer => "create_container",
            Self::StartContainer => "start_container",
            Self::CreateVeth => "create_veth",
            Self::ConfigureNetwork => "configure_network",
            Self::StopContainer => "stop_container",
            Self::DeleteVeth => "delete_veth",
            Self::DestroyContainer => "destroy_container",
            Self::ShutdownContainer => "shutdown_container",
            Self::EnsureImage => "ensure_image",
            Self::BuildImage => "build_image",
            Self::RemoveUnusedImages => "remove_unused_images",
        }
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StepName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| format!("no step is named {s:?}"))
    }
}

/// A moment in a step's life, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEvent<'e> {
    /// About to apply.
    Started,
    /// Applied.
    Done,
    /// Apply failed with this error.
    Failed(&'e str),
    /// About to undo.
    Undoing,
    /// Undone.
    Undone,
    /// Undo failed with this error.
    UndoFailed(&'e str),
}

impl StepEvent<'_> {
    /// Whether a durable recorder must have this event of `step` on disk before the runner
    /// goes on, so that after a crash the store says what may have been done to the host
    /// (recovery itself undoes every step of an interrupted job's plan, whatever the records
    /// say: `Worker::undo_interrupted`). Every event must, except the end of an action
    /// (`Done`, `Undone`): what follows it is either another recorded event or the end of
    /// the job, whose durable write carries it, and a `running` step already reads as
    /// possibly done. Nor must the start of a step that leaves nothing of its own to account
    /// for: its undo does nothing ([`StepName::undo_does_nothing`]), or an earlier step's
    /// takes back all it does ([`StepName::undone_with`]). That start is committed (visible at
    /// once) and on disk within milliseconds, by a flush asked for and not waited for; a crash
    /// in between shows the step `pending` though it may have run, which changes nothing
    /// recovery does (and the job runs again).
    pub fn must_be_durable_at_once(self, step: StepName) -> bool {
        match self {
            Self::Done | Self::Undone => false,
            Self::Started => !step.undo_does_nothing() && step.undone_with().is_none(),
            Self::Failed(_) | Self::Undoing | Self::UndoFailed(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_undone_with_another_comes_after_it_in_every_plan() {
        let plans: [&[StepName]; 7] = [
            &StepName::CREATE,
            &StepName::DESTROY,
            &StepName::BUILD_IMAGE,
            &StepName::START,
            &StepName::STOP,
            &StepName::RESTART,
            &StepName::REPAIR,
        ];
        for plan in plans {
            for (i, step) in plan.iter().enumerate() {
                if let Some(earlier) = step.undone_with() {
                    assert!(
                        plan[..i].contains(&earlier),
                        "{step} is taken back by {earlier}'s undo, which does not run before it in {plan:?}"
                    );
                }
            }
        }
    }

    /// Every name a job has ever been stored with, written out: these must keep parsing.
    const STORED: [&str; 11] = [
        "create_container",
        "start_container",
        "create_veth",
        "configure_network",
        "stop_container",
        "delete_veth",
        "destroy_container",
        "shutdown_container",
        "ensure_image",
        "build_image",
        "remove_unused_images",
    ];

    #[test]
    fn every_stored_step_name_still_parses_and_serializes_the_same() {
        for name in STORED {
            let step: StepName = name.parse().unwrap();
            assert_eq!(step.as_str(), name);
            assert_eq!(serde_json::to_string(&step).unwrap(), format!("\"{name}\""));
            let back: StepName = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(back, step);
        }
        assert!("make_coffee".parse::<StepName>().is_err());
    }

    #[test]
    fn the_orders_are_the_documented_ones() {
        let create: Vec<&str> = StepName::CREATE.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            create,
            [
                "ensure_image",
                "create_container",
                "start_container",
                "create_veth",
                "configure_network"
            ]
        );
        let destroy: Vec<&str> = StepName::DESTROY.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            destroy,
            [
                "stop_container",
                "delete_veth",
                "destroy_container",
                "remove_unused_images"
            ]
        );
        let restart: Vec<&str> = StepName::RESTART.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            restart,
            [
                "shutdown_container",
                "start_container",
                "delete_veth",
                "create_veth",
                "configure_network"
            ]
        );
    }
}

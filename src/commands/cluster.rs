//! `creepy-meow cluster hosts|containers`: the cluster as any member sees it in etcd.

use std::process::ExitCode;

use serde_json::Value;

use super::client::{connect, show};
use crate::cli::{ClusterArgs, ClusterView};
use crate::client::tables::{cluster_containers_table, cluster_hosts_table};

/// `creepy-meow cluster`.
pub async fn run(args: ClusterArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (path, table): (&str, fn(&Value) -> String) = match args.view {
        ClusterView::Hosts => ("/api/cluster/hosts", cluster_hosts_table),
        ClusterView::Containers => ("/api/cluster/containers", cluster_containers_table),
    };
    show(client.get(path).await, args.client.json, |v| {
        print!("{}", table(&v));
    })
}

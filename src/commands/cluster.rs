//! `creepy-meow cluster hosts|containers`: the cluster as any member sees it in etcd.

use std::process::ExitCode;

use serde_json::Value;

use super::client::{api_fail, connect};
use crate::cli::{ClusterArgs, ClusterView};
use crate::client::tables::text;

fn rows<'v>(answer: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    answer
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `GET /api/cluster/hosts` as lines: this server's standing, then one line per server.
pub fn hosts_table(answer: &Value) -> String {
    let me = &answer["cluster"];
    let mut out = format!(
        "cluster {}: this server is host {}, {}\n",
        text(me, "name"),
        text(me, "host_id"),
        text(me, "state")
    );
    if let Some(why) = me.get("detail").and_then(Value::as_str) {
        out.push_str(&format!("  ({why})\n"));
    }
    let row = |c: [&str; 6]| {
        format!(
            "{:>4}  {:<7}  {:<15}  {:<9}  {:>10}  {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5]
        )
    };
    out.push_str(&row([
        "HOST",
        "LEASE",
        "UNDERLAY",
        "VLANS",
        "CONTAINERS",
        "API",
    ]));
    for h in rows(answer, "hosts") {
        let vlans: Vec<String> = rows(h, "vlans").map(Value::to_string).collect();
        let vlans = if vlans.is_empty() {
            "-".into()
        } else {
            vlans.join(",")
        };
        let [host, lease, underlay, containers, api] =
            ["host_id", "lease", "underlay", "containers", "api_url"].map(|k| text(h, k));
        out.push_str(&row([&host, &lease, &underlay, &vlans, &containers, &api]));
    }
    out
}

/// `GET /api/cluster/containers` as lines.
pub fn containers_table(answer: &Value) -> String {
    let row = |c: [&str; 4]| format!("{:>10}  {:>4}  {:<18}  {}\n", c[0], c[1], c[2], c[3]);
    let mut out = row(["CONTAINER", "VLAN", "ADDRESS", "HOST"]);
    for c in rows(answer, "containers") {
        let [id, vlan, ip, host] = ["id", "vlan", "ip", "host_id"].map(|k| text(c, k));
        out.push_str(&row([&id, &vlan, &ip, &host]));
    }
    out.push_str(&format!("{} reserved\n", text(answer, "count")));
    out
}

/// `creepy-meow cluster`.
pub async fn run(args: ClusterArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (path, table): (&str, fn(&Value) -> String) = match args.view {
        ClusterView::Hosts => ("/api/cluster/hosts", hosts_table),
        ClusterView::Containers => ("/api/cluster/containers", containers_table),
    };
    match client.get(path).await {
        Ok(v) if args.client.json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Ok(v) => print!("{}", table(&v)),
        Err(e) => return api_fail(e),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hosts_show_live_and_expired_servers() {
        let answer = json!({
            "cluster": {"name": "lab", "host_id": 1, "state": "unavailable", "detail": "no answer"},
            "hosts": [
                {"host_id": 1, "lease": "alive", "underlay": "10.0.0.1", "vlans": [2, 3], "containers": 2, "api_url": "https://a:8443"},
                {"host_id": 3, "lease": "expired", "containers": 1}
            ]
        });
        let t = hosts_table(&answer);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "cluster lab: this server is host 1, unavailable");
        assert_eq!(lines[1], "  (no answer)");
        assert!(
            lines[3].contains("alive")
                && lines[3].contains("2,3")
                && lines[3].ends_with("https://a:8443"),
            "{t}"
        );
        assert!(
            lines[4].contains("expired") && lines[4].contains('-'),
            "{t}"
        );
    }

    #[test]
    fn containers_end_with_their_count() {
        let answer = json!({"count": 1, "containers": [{"id": 5, "vlan": 2, "ip": "192.168.2.5/24", "host_id": 2}]});
        let t = containers_table(&answer);
        assert_eq!(
            t.lines()
                .nth(1)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["5", "2", "192.168.2.5/24", "2"]
        );
        assert!(t.ends_with("1 reserved\n"), "{t}");
    }
}

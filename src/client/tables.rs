//! The client's small tables, read from the API's JSON: jobs, containers with their health, a
//! reconcile pass's report, the cluster's hosts and reservations, and `key: value` lines. A field the server left out shows empty
//! (or `-`), never as an error: the table is for a person, `--json` is for scripts.

use serde_json::Value;

/// `v[key]` as text: a string as is, `null` or absent as `-`, anything else as JSON.
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `v[key]` as a list of strings (empty when absent).
fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_string))
        .collect()
}

/// One line per job.
pub fn jobs_table(jobs: &[Value]) -> String {
    let row = |c: [&str; 6]| {
        format!(
            "{:<36}  {:<7}  {:<9}  {:>9}  {:<9}  {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5]
        )
    };
    let mut out = row(["JOB", "KIND", "ORIGIN", "CONTAINER", "STATE", "CREATED"]);
    for j in jobs {
        let [id, kind, origin, container, state, created] = [
            "id",
            "kind",
            "origin",
            "container_id",
            "state",
            "created_at",
        ]
        .map(|k| text(j, k));
        out.push_str(&row([&id, &kind, &origin, &container, &state, &created]));
    }
    out
}

/// `GET /api/images` as lines: how containers are made, then one line per image version (a
/// template with none yet says so).
pub fn images_table(answer: &Value) -> String {
    let mut out = format!("containers are made by: {}\n", text(answer, "clone"));
    if let Some(why) = answer.get("fallback_reason").and_then(Value::as_str) {
        out.push_str(&format!("(full copies: overlay failed: {why})\n"));
    }
    let row = |c: [&str; 6]| {
        format!(
            "{:<20}  {:>7}  {:<7}  {:<25}  {:>9}  {}\n",
            c[0], c[1], c[2], c[3], c[4], c[5]
        )
    };
    out.push_str(&row([
        "TEMPLATE", "VERSION", "CURRENT", "BUILT", "SIZE KiB", "CLONES",
    ]));
    for image in answer
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = text(image, "name");
        let versions = image.get("versions").and_then(Value::as_array);
        if versions.is_none_or(Vec::is_empty) {
            out.push_str(&row([&name, "-", "-", "not built yet", "-", "-"]));
        }
        for v in versions.into_iter().flatten() {
            let size = v
                .get("size_bytes")
                .and_then(Value::as_u64)
                .map_or("-".into(), |b| (b / 1024).to_string());
            let current = if v.get("current") == Some(&Value::Bool(true)) {
                "yes"
            } else {
                "no"
            };
            let clones = strings(v, "clones");
            let clones = if clones.is_empty() {
                "-".into()
            } else {
                format!("{} ({})", clones.len(), clones.join(" "))
            };
            out.push_str(&row([
                &name,
                &text(v, "version"),
                current,
                &text(v, "built_at"),
                &size,
                &clones,
            ]));
        }
    }
    out
}

/// `key: value` lines of a JSON object, in the order given, skipping nulls and empty lists; a
/// list of words reads as one line, joined with `; `.
pub fn fields(obj: &Value, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| {
            let v = obj.get(*k).filter(|v| !v.is_null())?;
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) if a.is_empty() => return None,
                Value::Array(_) => strings(obj, k).join("; "),
                other => other.to_string(),
            };
            Some(format!("{k:<13} {shown}\n"))
        })
        .collect()
}

/// `GET /api/container/list?detail=1` as one line per container.
pub fn containers_table(list: &Value) -> String {
    let containers = list
        .get("containers")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if containers.is_empty() {
        return "no containers\n".into();
    }
    let row = |c: [&str; 4]| format!("{:<16}  {:<10}  {:<8}  {}\n", c[0], c[1], c[2], c[3]);
    let mut out = row(["NAME", "RECORD", "DESIRED", "HEALTH"]);
    for c in containers {
        let name = format!("container{}", text(c, "id"));
        let [record, desired, health] =
            ["record_state", "desired_state", "health"].map(|k| text(c, k));
        out.push_str(&row([&name, &record, &desired, &health]));
    }
    out.push_str(
        &match list.get("health_checked_at").and_then(Value::as_str) {
            Some(at) => format!("health as the reconcile pass that ended {at} found it\n"),
            None => "health not checked yet: no reconcile pass has run\n".into(),
        },
    );
    out
}

/// A reconcile pass's report: when, what drifted with the job repairing it, what is foreign.
pub fn report_table(report: &Value) -> String {
    let drift = report
        .get("drift")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut out = format!(
        "reconcile pass {} .. {}: {} checked, {} drifted\n",
        text(report, "started_at"),
        text(report, "finished_at"),
        text(report, "checked"),
        drift.len()
    );
    for action in strings(report, "fabric_repaired") {
        out.push_str(&format!("fabric repaired: {action}\n"));
    }
    if !drift.is_empty() {
        let row = |c: [&str; 5]| {
            format!(
                "{:>9}  {:<17}  {:<8}  {:<36}  {}\n",
                c[0], c[1], c[2], c[3], c[4]
            )
        };
        out.push_str(&row(["CONTAINER", "DRIFT", "HEALTH", "JOB", "PROBLEMS"]));
        for f in drift {
            let [id, kind, health, job] =
                ["container_id", "drift", "health", "job_id"].map(|k| text(f, k));
            let mut problems = strings(f, "problems");
            if let Some(e) = f.get("error").and_then(Value::as_str) {
                problems.push(format!("no job queued: {e}"));
            }
            out.push_str(&row([&id, &kind, &health, &job, &problems.join("; ")]));
        }
    }
    let foreign = report.get("foreign").cloned().unwrap_or(Value::Null);
    for (key, what) in [("containers", "containers"), ("links", "links")] {
        let names = strings(&foreign, key);
        if !names.is_empty() {
            out.push_str(&format!(
                "foreign {what} (left untouched): {}\n",
                names.join(", ")
            ));
        }
    }
    out
}

fn rows<'v>(answer: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    answer
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `GET /api/cluster/hosts` as lines: this server's standing, then one line per server.
pub fn cluster_hosts_table(answer: &Value) -> String {
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
pub fn cluster_containers_table(answer: &Value) -> String {
    let row = |c: [&str; 4]| format!("{:>10}  {:>4}  {:<18}  {}\n", c[0], c[1], c[2], c[3]);
    let mut out = row(["CONTAINER", "VLAN", "ADDRESS", "HOST"]);
    for c in rows(answer, "containers") {
        let [id, vlan, ip, host] = ["id", "vlan", "ip", "host_id"].map(|k| text(c, k));
        out.push_str(&row([&id, &vlan, &ip, &host]));
    }
    out.push_str(&format!("{} reserved\n", text(answer, "count")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_show_each_version_with_its_clones_and_a_template_not_built_yet() {
        let answer = json!({"clone": "copy", "fallback_reason": "lxc-copy exited with 1",
            "images": [
                {"name": "busybox", "versions": [
                    {"version": 1, "current": false, "built_at": "t1", "size_bytes": 4096 * 1024,
                     "clones": ["container5", "container6"]},
                    {"version": 2, "current": true, "built_at": "t2", "size_bytes": 2048,
                     "clones": []}]},
                {"name": "small", "versions": []}]});
        let out = images_table(&answer);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "containers are made by: copy");
        assert!(lines[1].contains("lxc-copy exited with 1"), "{out}");
        let v1 = lines.iter().find(|l| l.contains("t1")).expect("v1");
        assert!(
            v1.contains("4096") && v1.contains("2 (container5 container6)") && v1.contains(" no "),
            "{v1}"
        );
        let v2 = lines.iter().find(|l| l.contains("t2")).expect("v2");
        assert!(v2.contains("yes") && v2.ends_with('-'), "{v2}");
        assert!(out.contains("not built yet"), "{out}");
    }

    #[test]
    fn a_job_row_names_its_kind_and_origin() {
        let jobs = vec![
            json!({"id": "j1", "kind": "restart", "origin": "reconcile", "container_id": 5, "state": "queued", "created_at": "t"}),
        ];
        let table = jobs_table(&jobs);
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["j1", "restart", "reconcile", "5", "queued", "t"]);
    }

    #[test]
    fn fields_skip_nulls_and_empty_lists_and_join_words() {
        let f = fields(
            &json!({"id": 5, "pid": null, "name": "container5", "problems": []}),
            &["id", "name", "pid", "problems"],
        );
        assert_eq!(f, "id            5\nname          container5\n");
        let f = fields(&json!({"problems": ["a is down", "b"]}), &["problems"]);
        assert_eq!(f, "problems      a is down; b\n");
    }

    #[test]
    fn the_detailed_list_says_when_health_was_judged() {
        let list = json!({"containers": [
            {"id": 5, "record_state": "active", "desired_state": "running", "health": "ok"},
            {"id": 6, "record_state": "missing", "desired_state": "running", "health": null},
        ], "health_checked_at": "T"});
        let table = containers_table(&list);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[1], ["container5", "active", "running", "ok"]);
        assert_eq!(rows[2], ["container6", "missing", "running", "-"]);
        assert_eq!(
            table.lines().last(),
            Some("health as the reconcile pass that ended T found it")
        );
        let empty = json!({"containers": [], "health_checked_at": null});
        assert_eq!(containers_table(&empty), "no containers\n");
    }

    #[test]
    fn a_report_lists_drift_with_its_job_and_what_is_foreign() {
        let report = json!({
            "started_at": "A", "finished_at": "B", "checked": 3, "fabric_repaired": ["created br2"],
            "drift": [
                {"container_id": 5, "drift": "stopped", "health": "stopped", "job_id": "J", "error": null},
                {"container_id": 7, "drift": "network", "health": "degraded",
                 "problems": ["vethc_br7 is down"], "job_id": null, "error": "queue full"},
            ],
            "foreign": {"containers": ["lxcfoo"], "links": []},
        });
        let table = report_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "reconcile pass A .. B: 3 checked, 2 drifted");
        assert_eq!(lines[1], "fabric repaired: created br2");
        assert!(lines[2].trim_start().starts_with("CONTAINER"), "{table}");
        let row = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(row(3), "5 stopped stopped J");
        assert_eq!(
            row(4),
            "7 network degraded - vethc_br7 is down; no job queued: queue full"
        );
        assert_eq!(lines[5], "foreign containers (left untouched): lxcfoo");
        assert_eq!(lines.len(), 6, "{table}");
    }
}

#[cfg(test)]
mod cluster_tests {
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
        let t = cluster_hosts_table(&answer);
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
        let t = cluster_containers_table(&answer);
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

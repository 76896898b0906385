//! The client subcommands: talk to a server's HTTP API, show progress, exit non-zero on failure.

use std::process::ExitCode;

use serde_json::Value;

use super::{fail, EXIT_USAGE};
use crate::cli::{
    BuildImageArgs, ClientArgs, ContainerJobArgs, CreateArgs, ImagesArgs, InfoArgs, JobArgs,
    JobsArgs, ListArgs, ReconcileArgs,
};
use crate::client::render::{outcome, Follower};
use crate::client::tables::{containers_table, fields, images_table, jobs_table, report_table};
use crate::client::{ApiClient, ClientError, JobView};
use crate::config::read_token;

/// Exit code of a job that ended failed or cancelled.
const EXIT_JOB_FAILED: u8 = 1;

pub(super) fn connect(args: &ClientArgs) -> Result<ApiClient, ExitCode> {
    let token = match (&args.token_file, std::env::var("CREEPY_MEOW_TOKEN")) {
        (Some(path), _) => Some(read_token(path).map_err(|e| fail(EXIT_USAGE, e))?),
        (None, Ok(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    };
    ApiClient::new(&args.server, token, args.cacert.as_deref()).map_err(|e| {
        let code = if matches!(e, ClientError::Setup(_)) {
            EXIT_USAGE
        } else {
            1
        };
        fail(code, e)
    })
}

pub(super) fn api_fail(e: ClientError) -> ExitCode {
    let code = match &e {
        ClientError::Api { status, .. } if (400..500).contains(status) => EXIT_USAGE,
        _ => 1,
    };
    fail(code, e)
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Shows an API answer: its JSON with `--json`, otherwise as `print` prints it; a failed call
/// exits as [`api_fail`] says.
pub(super) fn show(
    answer: Result<Value, ClientError>,
    json: bool,
    print: impl FnOnce(Value),
) -> ExitCode {
    match answer {
        Ok(v) if json => print_json(&v),
        Ok(v) => print(v),
        Err(e) => return api_fail(e),
    }
    ExitCode::SUCCESS
}

/// Follows job `id` to its end, live; exit 0 only if it succeeded.
async fn follow(client: &ApiClient, id: &str, json: bool) -> ExitCode {
    let mut display = Follower::new();
    let result = client
        .follow(id, |job| {
            if !json {
                display.update(job);
            }
        })
        .await;
    display.finish();
    let job: JobView = match result {
        Ok(j) => j,
        Err(e) => return api_fail(e),
    };
    if json {
        match client.get(&format!("/api/jobs/{id}")).await {
            Ok(v) => print_json(&v),
            Err(e) => return api_fail(e),
        }
    } else {
        println!("{}", outcome(&job));
    }
    if job.state == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_JOB_FAILED)
    }
}

/// `creepy-meow create`.
pub async fn create(args: CreateArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let accepted = match client
        .create(
            args.id,
            args.vlan,
            &args.ip,
            args.gateway.as_deref(),
            args.template.as_deref(),
        )
        .await
    {
        Ok(v) => v,
        Err(e) => return api_fail(e),
    };
    accepted_then_follow(&client, &accepted, args.no_wait, args.client.json).await
}

async fn accepted_then_follow(
    client: &ApiClient,
    accepted: &Value,
    no_wait: bool,
    json: bool,
) -> ExitCode {
    let job_id = accepted
        .get("job_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if no_wait {
        if json {
            print_json(accepted);
        } else {
            println!("accepted: job {job_id}");
        }
        return ExitCode::SUCCESS;
    }
    if !json {
        println!("accepted: job {job_id}");
    }
    follow(client, &job_id, json).await
}

/// `creepy-meow destroy`.
pub async fn destroy(args: ContainerJobArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.destroy(args.id).await {
        Ok(v) => accepted_then_follow(&client, &v, args.no_wait, args.client.json).await,
        Err(e) => api_fail(e),
    }
}

/// `creepy-meow start|stop|restart`: `verb` names the endpoint and the job's kind.
pub async fn lifecycle(args: ContainerJobArgs, verb: &str) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.lifecycle(args.id, verb).await {
        Ok(v) => accepted_then_follow(&client, &v, args.no_wait, args.client.json).await,
        Err(e) => api_fail(e),
    }
}

/// `creepy-meow list`.
pub async fn list(args: ListArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let path = if args.detail {
        "/api/container/list?detail=1"
    } else {
        "/api/container/list"
    };
    show(client.get(path).await, args.client.json, |v| {
        if args.detail {
            print!("{}", containers_table(&v));
            return;
        }
        let ids = v
            .get("containers_id")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if ids.is_empty() {
            println!("no containers");
        }
        for id in ids {
            println!("container{id}");
        }
    })
}

/// `creepy-meow info`.
pub async fn info(args: InfoArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let answer = client
        .get(&format!("/api/container/info/{}", args.id))
        .await;
    show(answer, args.client.json, |v| {
        let keys = [
            "name",
            "id",
            "state",
            "vlan",
            "ip",
            "gateway",
            "bridge",
            "host_veth",
            "mtu",
            "pid",
            "record_state",
            "desired_state",
            "health",
            "problems",
            "job_id",
        ];
        print!("{}", fields(&v, &keys));
    })
}

/// `creepy-meow reconcile`: the last pass's report, or a pass run now with `--now`.
pub async fn reconcile(args: ReconcileArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let report = if args.now {
        client.post("/api/reconcile").await
    } else {
        client.get("/api/reconcile").await
    };
    show(report, args.client.json, |v| print!("{}", report_table(&v)))
}

/// `creepy-meow images`.
pub async fn images(args: ImagesArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    show(client.get("/api/images").await, args.client.json, |v| {
        print!("{}", images_table(&v));
    })
}

/// `creepy-meow build-image`.
pub async fn build_image(args: BuildImageArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.build_image(&args.template).await {
        Ok(v) => accepted_then_follow(&client, &v, args.no_wait, args.client.json).await,
        Err(e) => api_fail(e),
    }
}

/// `creepy-meow jobs`.
pub async fn jobs(args: JobsArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut path = format!("/api/jobs?limit={}", args.limit);
    if let Some(s) = &args.state {
        path.push_str(&format!("&state={s}"));
    }
    show(client.get(&path).await, args.client.json, |v| {
        let jobs = v
            .get("jobs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        print!("{}", jobs_table(&jobs));
    })
}

/// `creepy-meow job`.
pub async fn job(args: JobArgs) -> ExitCode {
    let client = match connect(&args.client) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if args.wait {
        return follow(&client, &args.job_id, args.client.json).await;
    }
    let answer = client.get(&format!("/api/jobs/{}", args.job_id)).await;
    show(answer, args.client.json, |v| {
        print!(
            "{}",
            fields(
                &v,
                &[
                    "id",
                    "kind",
                    "origin",
                    "container_id",
                    "state",
                    "error",
                    "created_at",
                    "started_at",
                    "finished_at"
                ]
            )
        );
        let job: Result<JobView, _> = serde_json::from_value(v);
        if let Ok(job) = job {
            let mut display = Follower::new();
            display.update(&job);
            display.finish();
        }
    })
}

//! Log setup: tracing to stderr, filtered by `RUST_LOG`.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// For one-shot commands: warnings only by default, so their own output stays readable. The
/// TLS certificate verifier's own error lines are left out: the client says what failed, and
/// what to do, in its one sentence.
pub fn init_command() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,rustls_platform_verifier=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// For the daemon: info by default, as text or JSON lines.
pub fn init_daemon(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = daemon_subscriber(format, filter, std::io::stderr).try_init();
}

/// The daemon's log format, writing to `writer`: [`init_daemon`] passes stderr, the API tests a
/// buffer they read back (so they check the fields operators see, `job_id`, `container_id`,
/// `step`, in the format they see them).
pub fn daemon_subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    }
}

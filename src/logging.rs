//! Log setup: tracing to stderr, filtered by `RUST_LOG`. The daemon's lines are written by a
//! thread of its own, so no task waits for stderr (a pipe to journald can stall), and lines
//! logged while it writes go out together.

use std::io::BufWriter;

use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
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

/// The daemon's log writer: while held, lines are written by the thread `creepy-meow-log`;
/// dropped, every line logged before is on stderr.
#[must_use = "dropping it ends the daemon's logging"]
pub struct LogWriter {
    _guard: WorkerGuard,
}

/// For the daemon: info by default, as text or JSON lines, written by a thread of its own
/// (never dropped: a caller waits only if [`LINES_WAITING`] lines already wait for it).
pub fn init_daemon(format: LogFormat) -> LogWriter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LINES_WAITING)
        .thread_name("creepy-meow-log")
        .finish(BufWriter::new(std::io::stderr()));
    let _ = daemon_subscriber(format, filter, writer).try_init();
    LogWriter { _guard: guard }
}

/// How many lines may wait for the log thread before a caller waits too.
pub const LINES_WAITING: usize = 128 * 1024;

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

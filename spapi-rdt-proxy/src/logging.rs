//! Logs on stderr, as text or one JSON object a line, filtered by `RUST_LOG` (default `info`).
//! What is logged is chosen where it is logged: methods, paths without their query, sellers'
//! names, statuses and timings; never a header value, a token or a secret.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber.
pub(crate) fn init(format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line that cannot be written (stderr closed: the log collector went away) is lost.
    // By default the subscriber reports it with `eprintln!`, which panics on the same closed
    // stderr, and the panic takes the request down with it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .flatten_event(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    installed.map_err(|e| e.to_string())
}

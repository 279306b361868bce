//! What the benches share: a realistic token, a trivial inner service, a way to drive a service
//! once without a runtime, and the small JSON file where benches leave figures criterion cannot
//! hold (bytes per seller, source calls, worker threads seen).
#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{Future, Ready, ready};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response, Uri};
use spapi_rdt::{
    IssuedToken, SecretToken, TokenRequest, TokenSource, error::SourceError, source_fn,
};
use tower::Service;

/// The production NA origin.
pub(crate) const NA: &str = "https://sellingpartnerapi-na.amazon.com";

/// An unrestricted call (Catalog Items): the layer must let it through untouched.
pub(crate) const UNRESTRICTED: &str =
    "https://sellingpartnerapi-na.amazon.com/catalog/2022-04-01/items/B0X";

/// A restricted call (Orders v0 getOrderAddress), served from the cache once warm.
pub(crate) const RESTRICTED: &str =
    "https://sellingpartnerapi-na.amazon.com/orders/v0/orders/902-3159896-1390916/address";

/// Length of the token the benches use. Real RDTs are a few hundred characters.
pub(crate) const TOKEN_LEN: usize = 400;

/// A token-shaped value of [`TOKEN_LEN`] characters: `Atz.sprdt|` then URL-safe base64 characters
/// from a fixed pseudo-random sequence (the same on every run).
pub(crate) fn token_value() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut token = String::from("Atz.sprdt|");
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    while token.len() < TOKEN_LEN {
        // xorshift64: deterministic and good enough to avoid a repetitive string.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        token.push(char::from(ALPHABET[(state % 64) as usize]));
    }
    token
}

/// A token source that counts its calls, waits `delay` (if any) on tokio time, and answers with a
/// fresh copy of [`token_value`] valid for an hour (each call allocates its own token, as a real
/// source decoding an HTTP response would).
pub(crate) fn counting_source(
    calls: Arc<AtomicUsize>,
    delay: Option<Duration>,
) -> impl TokenSource + Clone {
    let value: Arc<str> = token_value().into();
    source_fn(move |_request: TokenRequest| {
        let calls = Arc::clone(&calls);
        let value = Arc::clone(&value);
        async move {
            calls.fetch_add(1, Ordering::Relaxed);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let token = SecretToken::new(&*value).map_err(SourceError::permanent)?;
            Ok(IssuedToken::new(token, Duration::from_secs(3600)))
        }
    })
}

/// The response of [`inner`]: its body is how many headers the request reached it with.
pub(crate) type Reply = Response<usize>;

/// The cheapest possible inner service: answers at once (an `http::Response`, so that tower-http's
/// middleware accepts it) with the number of headers it got.
pub(crate) fn inner() -> impl Service<
    Request<()>,
    Response = Reply,
    Error = Infallible,
    Future = Ready<Result<Reply, Infallible>>,
> + Clone {
    tower::service_fn(|request: Request<()>| {
        ready(Ok::<_, Infallible>(Response::new(request.headers().len())))
    })
}

/// How many headers the request of `reply` reached the inner service with.
pub(crate) fn headers(reply: Reply) -> usize {
    reply.into_body()
}

/// A bodiless GET request for `uri`. The URI is cloned, which for a `Uri::from_static` is free.
#[inline]
pub(crate) fn get(uri: &Uri) -> Request<()> {
    let mut request = Request::new(());
    *request.uri_mut() = uri.clone();
    request
}

/// `poll_ready`, `call`, and one poll of the response future, with a no-op waker: what a client
/// does for a request whose future is ready at once, without any runtime in the way. Panics if the
/// service is not ready, fails, or its future is pending (none of which a bench expects).
#[inline]
pub(crate) fn drive<S, B>(service: &mut S, request: Request<B>) -> S::Response
where
    S: Service<Request<B>>,
    S::Error: Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => panic!("service failed poll_ready: {e:?}"),
        Poll::Pending => panic!("service not ready"),
    }
    let future = pin!(service.call(request));
    match future.poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(e)) => panic!("service failed: {e:?}"),
        Poll::Pending => panic!("the response future was pending"),
    }
}

/// Where criterion writes its results, found the way criterion finds it: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else the target directory `cargo metadata` names, else
/// `target/criterion` under the crate.
pub(crate) fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let metadata = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok());
    match metadata
        .as_ref()
        .and_then(|m| m.get("target_directory"))
        .and_then(|t| t.as_str())
    {
        Some(target) => PathBuf::from(target).join("criterion"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/criterion"),
    }
}

/// The file of extra figures, beside criterion's results.
pub(crate) fn extra_path() -> PathBuf {
    criterion_dir().join("spapi-rdt-extra.json")
}

/// Stores `value` under `section` in the extra-figures file, keeping the other sections.
pub(crate) fn record_extra(section: &str, value: serde_json::Value) {
    let path = extra_path();
    let mut all = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    all[section] = value;
    let written = std::fs::create_dir_all(criterion_dir()).and_then(|()| {
        let text = serde_json::to_string_pretty(&all).unwrap_or_default();
        std::fs::write(&path, text)
    });
    if let Err(e) = written {
        eprintln!("could not write {}: {e}", path.display());
    }
}

/// Whether criterion runs in `--quick` mode.
pub(crate) fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// Counts the source calls of one layer.
pub(crate) fn calls() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// How a bench that is not a criterion benchmark (it counts calls and wall time on the emulator)
/// was started.
pub(crate) struct Mode {
    pub(crate) quick: bool,
    /// `cargo bench` (with `--bench`), as opposed to cargo test running the target.
    pub(crate) bench: bool,
    /// Whether a filter on the command line leaves this bench out.
    pub(crate) filtered_out: bool,
}

impl Mode {
    /// From the command line, for a bench whose ids are `ids`.
    pub(crate) fn from_args(ids: &[String]) -> Mode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // Criterion's options that take a value: their value is not a filter.
        const WITH_VALUE: [&str; 16] = [
            "--save-baseline",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--profile-time",
            "--color",
            "--format",
            "--output-format",
            "--plotting-backend",
        ];
        let mut filters = Vec::new();
        let mut skip_next = false;
        for arg in &args {
            if skip_next {
                skip_next = false;
            } else if WITH_VALUE.contains(&arg.as_str()) {
                skip_next = true;
            } else if !arg.starts_with('-') {
                filters.push(arg.clone());
            }
        }
        let exact = args.iter().any(|a| a == "--exact");
        let matches = |filter: &str| {
            ids.iter().any(|id| {
                if exact {
                    id == filter
                } else {
                    regex::Regex::new(filter)
                        .map_or_else(|_| id.contains(filter), |re| re.is_match(id))
                }
            })
        };
        Mode {
            quick: quick(),
            bench: args.iter().any(|a| a == "--bench"),
            filtered_out: !filters.is_empty() && !filters.iter().any(|f| matches(f)),
        }
    }
}

/// The load of `fleet_pacing` and of the sidecar's `usage_plans` bench, in one place so that the
/// two halves stay comparable: 3 replicas × 8 workers sending getOrder at 5× its plan (1 a second,
/// burst 5) to the emulator, which runs plans 10× faster.
pub(crate) mod fleet_load {
    pub(crate) const REPLICAS: usize = 3;
    pub(crate) const WORKERS: usize = 8;
    /// The plan as the models' form states it, and how much faster the emulator runs it.
    pub(crate) const PLAN_RATE: f64 = 1.0;
    pub(crate) const BURST: u32 = 5;
    pub(crate) const TIME_SCALE: f64 = 10.0;
    /// The offered load, in multiples of the plan's rate.
    pub(crate) const OFFERED: f64 = 5.0;
    pub(crate) const FULL_CALLS: usize = 120;
    pub(crate) const QUICK_CALLS: usize = 40;
    pub(crate) const GET_ORDER: &str = "/orders/v0/orders/902-3159896-1390916";

    /// The rate the emulator enforces.
    pub(crate) fn rate() -> f64 {
        PLAN_RATE * TIME_SCALE
    }

    /// The least time `n` calls can take on a full bucket: (n − burst) ÷ rate, in seconds.
    pub(crate) fn minimum(n: usize) -> f64 {
        (n as f64 - f64::from(BURST)) / rate()
    }
}

/// The stamp of figures left for the report: the run's mode and when they were written.
pub(crate) fn stamp(mode: &Mode) -> (&'static str, u64) {
    let written = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (if mode.quick { "quick" } else { "full" }, written)
}

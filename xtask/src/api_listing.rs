//! Writes, or checks, the listing of each published package's public API: one public item per
//! line in `public-api/<package>.txt` at the repository root, committed and reviewed like code.
//!
//! ```sh
//! cargo xtask public-api          # rewrites the three listings
//! cargo xtask public-api --check  # fails, with the lines added and removed, when one is stale
//! ```
//!
//! For each package it builds the rustdoc JSON of its library with every feature, then lists the
//! public items with the `public-api` crate (the library behind cargo-public-api), in that crate's
//! order: by path, an item's impls and members after it. Blanket impls (`impl<T> From<T> for T`,
//! and those of dependencies such as `tracing::Instrument`) are left out: they belong to std and
//! to the dependency graph, and would change with a `cargo update` rather than with our code.
//! Auto-trait impls (`Send`, `Sync`, `Unpin`, ...) and derived impls stay in: losing one of them
//! breaks users.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use serde_json::Value;

/// The packages published to crates.io, whose public API is listed.
const PACKAGES: [&str; 3] = ["spapi-rdt", "spapi-rdt-emulator", "spapi-rdt-proxy"];

/// The folder of the listings, at the repository root.
const LISTINGS: &str = "public-api";

/// The rustdoc JSON format `public-api` reads: its version 0.52.1 is built on rustdoc-types 0.57,
/// which is format 57, the format stable rustc 1.95 emits. `public-api` does not check the version
/// itself, so a toolchain that emits another one is refused here, before a misread listing.
const FORMAT_VERSION: u64 = 57;

/// What went wrong, for the one line `xtask:` prints.
#[derive(Debug)]
pub(crate) enum ListingError {
    /// An argument this command does not take.
    Usage(String),
    /// A command could not be started.
    Spawn { command: String, source: io::Error },
    /// A command ran and failed (its own output is on the terminal already).
    Failed { command: String, status: ExitStatus },
    /// `cargo metadata` answered something unexpected.
    Metadata(String),
    /// A file could not be read or written.
    File { path: PathBuf, source: io::Error },
    /// The rustdoc JSON is not JSON, or has no format version.
    Json { path: PathBuf, detail: String },
    /// The rustdoc JSON is in a format `public-api` does not read.
    Format { path: PathBuf, found: u64 },
    /// `public-api` could not list the items.
    Listing {
        path: PathBuf,
        source: public_api::Error,
    },
    /// `--check`: at least one committed listing differs from the code.
    Stale(Vec<&'static str>),
}

impl fmt::Display for ListingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(arg) => write!(
                f,
                "public-api: unexpected argument `{arg}` (usage: cargo xtask public-api [--check])"
            ),
            Self::Spawn { command, source } => write!(f, "could not run `{command}`: {source}"),
            Self::Failed { command, status } => write!(f, "`{command}` failed ({status})"),
            Self::Metadata(detail) => write!(f, "cargo metadata: {detail}"),
            Self::File { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Json { path, detail } => {
                write!(f, "{}: not rustdoc JSON ({detail})", path.display())
            }
            Self::Format { path, found } => write!(
                f,
                "{} is rustdoc JSON format {found}, but this xtask reads format {FORMAT_VERSION} \
                 (public-api 0.52.1): move public-api in xtask/Cargo.toml to the version built on \
                 rustdoc-types {found}, and FORMAT_VERSION in xtask/src/api_listing.rs with it",
                path.display()
            ),
            Self::Listing { path, source } => {
                write!(
                    f,
                    "{}: public-api could not list it: {source}",
                    path.display()
                )
            }
            Self::Stale(packages) => write!(
                f,
                "the public API listing of {} is stale: run `cargo xtask public-api`, review the \
                 diff of public-api/ and commit it with the change",
                packages.join(", ")
            ),
        }
    }
}

impl Error for ListingError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Spawn { source, .. } | Self::File { source, .. } => Some(source),
            Self::Listing { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Whether the listings are written or compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Write,
    Check,
}

/// Where things are, from `cargo metadata`.
#[derive(Debug)]
struct Workspace {
    root: PathBuf,
    target: PathBuf,
    /// The library target's name of each package in [`PACKAGES`], in that order.
    libraries: Vec<String>,
}

/// `cargo xtask public-api [--check]`.
pub(crate) fn run(args: &[String]) -> Result<(), ListingError> {
    let mode = match args {
        [] => Mode::Write,
        [flag] if flag == "--check" => Mode::Check,
        [other, ..] => return Err(ListingError::Usage(other.clone())),
    };
    let workspace = workspace()?;
    let mut stale = Vec::new();
    for (package, library) in PACKAGES.into_iter().zip(&workspace.libraries) {
        let json = rustdoc_json(&workspace, package, library)?;
        let listing = listing(&json)?;
        let count = listing.lines().count();
        let path = workspace.root.join(LISTINGS).join(format!("{package}.txt"));
        match mode {
            Mode::Write => {
                write(&path, &listing)?;
                println!("{package}: {count} public items, written to {LISTINGS}/{package}.txt");
            }
            Mode::Check => {
                let committed = match std::fs::read_to_string(&path) {
                    Ok(text) => Some(text),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(source) => return Err(ListingError::File { path, source }),
                };
                if committed.as_deref() == Some(listing.as_str()) {
                    println!(
                        "{package}: {count} public items, {LISTINGS}/{package}.txt is up to date"
                    );
                } else {
                    println!("{package}: {count} public items, {LISTINGS}/{package}.txt is stale");
                    print_diff(package, committed.as_deref(), &listing);
                    stale.push(package);
                }
            }
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(ListingError::Stale(stale))
    }
}

/// The cargo that runs this xtask, or the one on `PATH`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The workspace root, the target folder (honouring `CARGO_TARGET_DIR` and the configuration, as
/// cargo does) and each published package's library name.
fn workspace() -> Result<Workspace, ListingError> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = cargo();
    command
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest);
    let shown = "cargo metadata --format-version 1 --no-deps".to_owned();
    let output = command.output().map_err(|source| ListingError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !output.status.success() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        return Err(ListingError::Failed {
            command: shown,
            status: output.status,
        });
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| ListingError::Metadata(format!("not JSON: {e}")))?;
    let path = |key: &str| {
        metadata[key]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| ListingError::Metadata(format!("no `{key}`")))
    };
    let (root, target) = (path("workspace_root")?, path("target_directory")?);
    let packages = metadata["packages"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let libraries = PACKAGES
        .iter()
        .map(|&name| {
            let package = packages
                .iter()
                .find(|p| p["name"] == name)
                .ok_or_else(|| ListingError::Metadata(format!("no package `{name}`")))?;
            let targets = package["targets"].as_array().map_or(&[][..], Vec::as_slice);
            targets
                .iter()
                .find(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k == "lib"))
                })
                .and_then(|t| t["name"].as_str())
                .map(|lib| lib.replace('-', "_"))
                .ok_or_else(|| ListingError::Metadata(format!("`{name}` has no library")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Workspace {
        root,
        target,
        libraries,
    })
}

/// Builds the rustdoc JSON of `package`'s library with every feature and returns its path.
///
/// Rustdoc's JSON output is unstable, so rustdoc takes `--output-format json` only with `-Z
/// unstable-options`, which a stable toolchain refuses unless `RUSTC_BOOTSTRAP=1` is set: the
/// documented way to use a nightly-only option on a stable compiler. Only stable is installed
/// here, and the format of this compiler is pinned by [`FORMAT_VERSION`].
///
/// The build goes to a target folder of its own, `<target>/public-api`: build scripts such as
/// proc-macro2's rerun when `RUSTC_BOOTSTRAP` changes, so sharing the usual folder would rebuild
/// every proc macro and all that depends on them twice, once here and once in the next ordinary
/// `cargo build`, `cargo test` or `cargo xtask`.
fn rustdoc_json(
    workspace: &Workspace,
    package: &str,
    library: &str,
) -> Result<PathBuf, ListingError> {
    let target = workspace.target.join(LISTINGS);
    let args = [
        "rustdoc",
        "--target-dir",
        target.to_str().ok_or_else(|| {
            ListingError::Metadata(format!(
                "the target folder {} is not UTF-8",
                target.display()
            ))
        })?,
        "-p",
        package,
        "--lib",
        "--all-features",
        "--",
        "-Z",
        "unstable-options",
        "--output-format",
        "json",
    ];
    let shown = format!("RUSTC_BOOTSTRAP=1 cargo {}", args.join(" "));
    eprintln!("running {shown}");
    let status = cargo()
        .args(args)
        .current_dir(&workspace.root)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .map_err(|source| ListingError::Spawn {
            command: shown.clone(),
            source,
        })?;
    if !status.success() {
        return Err(ListingError::Failed {
            command: shown,
            status,
        });
    }
    Ok(target.join("doc").join(format!("{library}.json")))
}

/// The public items of the crate in the rustdoc JSON at `json`, one a line, in `public-api`'s
/// sorted order, each line ending with `\n`.
fn listing(json: &Path) -> Result<String, ListingError> {
    let text = std::fs::read_to_string(json).map_err(|source| ListingError::File {
        path: json.to_path_buf(),
        source,
    })?;
    check_format(json, &text)?;
    let api = public_api::Builder::from_rustdoc_json(json)
        .omit_blanket_impls(true)
        .build()
        .map_err(|source| ListingError::Listing {
            path: json.to_path_buf(),
            source,
        })?;
    Ok(api.items().map(|item| format!("{item}\n")).collect())
}

/// The one field of rustdoc JSON read before `public-api` reads the rest.
#[derive(serde::Deserialize)]
struct Format {
    format_version: u64,
}

/// Refuses rustdoc JSON of another format than the one `public-api` reads.
fn check_format(path: &Path, text: &str) -> Result<(), ListingError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Rustdoc JSON nests as deep as the types it describes (public-api lifts the limit too); the
    // other fields are skipped, not kept.
    deserializer.disable_recursion_limit();
    let format: Format =
        serde::Deserialize::deserialize(&mut deserializer).map_err(|e| ListingError::Json {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    match format.format_version {
        FORMAT_VERSION => Ok(()),
        found => Err(ListingError::Format {
            path: path.to_path_buf(),
            found,
        }),
    }
}

/// Writes a listing, creating `public-api/` when needed.
fn write(path: &Path, listing: &str) -> Result<(), ListingError> {
    let file = |source| ListingError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder).map_err(file)?;
    }
    std::fs::write(path, listing).map_err(file)
}

/// Prints the lines the new listing removes (`-`) and adds (`+`), each in its listing's order.
fn print_diff(package: &str, committed: Option<&str>, fresh: &str) {
    let Some(committed) = committed else {
        println!("  {LISTINGS}/{package}.txt does not exist yet");
        return;
    };
    let (removed, added) = line_diff(committed, fresh);
    println!("--- {LISTINGS}/{package}.txt (committed)");
    println!("+++ {LISTINGS}/{package}.txt (from the code)");
    for line in &removed {
        println!("-{line}");
    }
    for line in &added {
        println!("+{line}");
    }
    if removed.is_empty() && added.is_empty() {
        println!("  (the same items: only their order or the line endings differ)");
    }
}

/// The lines of `old` missing from `new` and those of `new` missing from `old`, counting
/// repeated lines, each in the order of its text.
fn line_diff<'a>(old: &'a str, new: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
    let count = |text: &'a str| {
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        for line in text.lines() {
            *counts.entry(line).or_default() += 1;
        }
        counts
    };
    let only_in = |text: &'a str, mut other: std::collections::HashMap<&'a str, usize>| {
        text.lines()
            .filter(|line| match other.get_mut(line) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            })
            .collect::<Vec<_>>()
    };
    (only_in(old, count(new)), only_in(new, count(old)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{ListingError, check_format, line_diff};

    #[test]
    fn only_the_format_public_api_reads_is_taken() {
        let path = Path::new("x.json");
        assert!(check_format(path, r#"{"root":0,"index":{},"format_version":57}"#).is_ok());
        let other = check_format(path, r#"{"format_version":58}"#);
        assert!(matches!(other, Err(ListingError::Format { found: 58, .. })));
        assert!(matches!(
            check_format(path, "{}"),
            Err(ListingError::Json { .. })
        ));
        assert!(matches!(
            check_format(path, "<html>"),
            Err(ListingError::Json { .. })
        ));
    }

    #[test]
    fn the_diff_names_removed_and_added_lines_in_order() {
        let old = "pub mod a\npub fn a::f()\npub fn a::g()\n";
        let new = "pub mod a\npub fn a::g()\npub fn a::h()\npub struct a::S\n";
        let (removed, added) = line_diff(old, new);
        assert_eq!(removed, ["pub fn a::f()"]);
        assert_eq!(added, ["pub fn a::h()", "pub struct a::S"]);
    }

    #[test]
    fn the_diff_counts_repeated_lines() {
        let (removed, added) = line_diff("x\nx\ny\n", "x\ny\ny\n");
        assert_eq!(removed, ["x"]);
        assert_eq!(added, ["y"]);
    }

    #[test]
    fn identical_listings_have_no_diff() {
        let (removed, added) = line_diff("a\nb\n", "a\r\nb\r\n");
        assert!(removed.is_empty() && added.is_empty());
    }
}

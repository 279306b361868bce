//! `cargo xtask layering`: the library's module graph keeps its arrows one way.
//!
//! Two rules, checked on `src/` of the root package:
//! - no top-level module imports one that imports it back (a `crate::x` path in code counts; doc
//!   comments and `#[cfg(test)] mod tests` blocks do not, and neither do files named `tests.rs`);
//! - no front end (the tower layer, service and future, recovery, delegation, the reqwest
//!   middleware) names the cache: they reach it through the core.
//!
//! It reads the files as text, which is enough for code that spells its imports `crate::module`.

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::path::{Path, PathBuf};

/// The modules that serve requests and must reach the cache only through the core.
const FRONT_ENDS: [&str; 7] = [
    "layer",
    "service",
    "future",
    "recover",
    "delegate",
    "middleware",
    "header",
];

/// `cargo xtask layering`.
pub(crate) fn run() -> Result<(), Box<dyn Error>> {
    let src = repository().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = top_module(&src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file)?;
        let used = imports.entry(module.clone()).or_default();
        for target in crate_paths(&code_of(&text)) {
            if target != module {
                used.insert(target);
            }
        }
    }
    let mut problems = Vec::new();
    for (module, used) in &imports {
        for other in used {
            let back = imports.get(other).is_some_and(|o| o.contains(module));
            if back && module < other {
                problems.push(format!("`{module}` and `{other}` import each other"));
            }
        }
        if FRONT_ENDS.contains(&module.as_str()) && used.contains("cache") {
            problems.push(format!(
                "the front end `{module}` imports `cache`: go through the core"
            ));
        }
    }
    if problems.is_empty() {
        println!(
            "layering: {} modules, no module imports one that imports it back, no front end imports the cache",
            imports.len()
        );
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

fn repository() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map_or(xtask.clone(), Path::to_path_buf)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The top-level module a file belongs to (`src/cache/slot.rs` → `cache`); `None` for the crate
/// root and for test-only files.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    if relative.file_name().is_some_and(|n| n == "tests.rs") {
        return None;
    }
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// The code of a file: comment lines and the unit-test module left out.
fn code_of(text: &str) -> String {
    let code = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `x` in `crate::x` of `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `crate::` itself, not the end of a longer name such as `my_crate::`.
            !code[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, word)| {
            code[at + word.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_code_count_and_comments_do_not() {
        let text = "//! See [`x`](crate::matcher::Matcher).\nuse crate::cache::Slot;\nuse my_crate::core;\nfn f() { crate::time::add(); }\n#[cfg(test)]\nmod tests {\n    use crate::layer;\n}\n";
        let found = crate_paths(&code_of(text));
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["cache", "time"].map(String::from)
        );
    }

    #[test]
    fn files_map_to_their_top_module() {
        let src = Path::new("/r/src");
        assert_eq!(
            top_module(src, Path::new("/r/src/cache/slot.rs")).as_deref(),
            Some("cache")
        );
        assert_eq!(
            top_module(src, Path::new("/r/src/limit.rs")).as_deref(),
            Some("limit")
        );
        assert_eq!(top_module(src, Path::new("/r/src/lib.rs")), None);
        assert_eq!(
            top_module(src, Path::new("/r/src/fleet/run/tests.rs")),
            None
        );
    }
}

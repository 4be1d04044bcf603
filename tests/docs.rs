//! The docs name what exists: every path docs/architecture.md names (a source file of the
//! dispatcher or of a library crate, a module directory, another doc) is a file or directory
//! of this repository. A file that moves or
//! is renamed fails this test until the doc follows it.

use std::path::{Path, PathBuf};

/// The repository's root.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// File extensions that make a word a path wherever it stands.
const EXTENSIONS: [&str; 6] = [".rs", ".md", ".toml", ".html", ".json", ".yml"];

/// The words of `markdown` that name paths: anywhere, the words ending in one of
/// [`EXTENSIONS`]; in backticks, also the words with a `/` inside (`http/`, `cluster/`,
/// `../tools/x`). Routes (`/call/<func>`), URLs and words with capitals are not paths.
fn named_paths(markdown: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (i, span) in markdown.split('`').enumerate() {
        let in_backticks = i % 2 == 1;
        for word in span.split(|c: char| c.is_whitespace() || "()[],;:\"'<>*|".contains(c)) {
            let word = word.trim_end_matches('.');
            let is_path_like = !word.is_empty()
                && !word.starts_with('/')
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_./-".contains(c));
            let has_extension = EXTENSIONS
                .iter()
                .any(|e| word.ends_with(e) && word.len() > e.len());
            if is_path_like && (has_extension || (in_backticks && word.contains('/'))) {
                paths.push(word.to_owned());
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// Where `path`, named in a doc under docs/, is in the repository: relative to the root, to
/// a source directory (`src/` or a library crate's `crates/<name>/src/`: the docs name
/// modules as their crate does, `actors/job.rs`, `codec/frame.rs`) or to docs/ (links); a
/// bare file name anywhere under a source directory. `None` when it is nowhere, or outside
/// the repository.
fn resolve(path: &str) -> Option<PathBuf> {
    let root = Path::new(ROOT);
    let sources = source_dirs(root);
    let candidates = [root.join(path), root.join("docs").join(path)]
        .into_iter()
        .chain(sources.iter().map(|dir| dir.join(path)));
    let found = (candidates.into_iter())
        .find(|candidate| candidate.exists())
        .or_else(|| {
            (!path.contains('/'))
                .then(|| sources.iter().find_map(|dir| find_file(dir, path)))
                .flatten()
        })?;
    let found = found.canonicalize().ok()?;
    found
        .starts_with(root.canonicalize().ok()?)
        .then_some(found)
}

/// The source directories: the dispatcher's `src/`, then each library crate's.
fn source_dirs(root: &Path) -> Vec<PathBuf> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .expect("read crates/")
        .flatten()
        .map(|entry| entry.path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    crates.sort();
    std::iter::once(root.join("src")).chain(crates).collect()
}

/// The file named `name` somewhere under `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// Every path docs/architecture.md names exists in the repository.
#[test]
fn every_path_the_architecture_doc_names_exists() {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md"))
        .expect("read docs/architecture.md");
    let named = named_paths(&doc);
    assert!(named.len() >= 10, "too few paths found: {named:?}");
    let missing: Vec<&String> = named.iter().filter(|p| resolve(p).is_none()).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that are not in the repository: {missing:?}"
    );
}

/// The reading of paths: words with an extension anywhere, backticked words with a slash;
/// routes, URLs and prose are not paths; a path outside the repository or nowhere does not
/// resolve.
#[test]
fn paths_are_read_from_markdown_and_resolved_in_the_repository() {
    let text = "See `actors/job.rs` and server/admit.rs, the `http/` module, `POST /call/<func>`, \
                and/or `../shared/tools/import-cycles src`; I/O at http://example.com/x.\n\
                [docs](cluster.md) `job.rs`.";
    assert_eq!(
        named_paths(text),
        [
            "../shared/tools/import-cycles",
            "actors/job.rs",
            "cluster.md",
            "http/",
            "job.rs",
            "server/admit.rs",
        ]
    );
    for found in [
        "actors/job.rs",
        "server/admit.rs",
        "http/",
        "cluster.md",
        "job.rs",
        "src/lib.rs",
        "codec/frame.rs",
        "dispatcher_link.rs",
    ] {
        assert!(resolve(found).is_some(), "{found}");
    }
    for missing in [
        "../shared/tools/import-cycles",
        "scheduler/nowhere.rs",
        "codec/nowhere.rs",
        "nowhere.rs",
        "../../etc/passwd",
    ] {
        assert_eq!(resolve(missing), None, "{missing}");
    }
}

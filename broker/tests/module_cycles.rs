//! The broker's modules depend on each other without a cycle: a module can
//! be read, tested and replaced knowing only the modules below it.
//!
//! The graph is built from the source text, not from a compiler: every
//! `crate::a::b` path in `broker/src` (in `use` and in code) is an edge from
//! the module the file belongs to, to the module the path names. A node is
//! a top-level module, or a module inside `cluster` (down to
//! `cluster::kv::watch`): `cluster` is several layers, from the key-value
//! records up to serving forwarded requests.
//!
//! Left out, and why:
//! - comments, doc comments and their intra-doc links: documentation may
//!   point anywhere;
//! - `super::` and `self::` paths: a parent declares and re-exports its
//!   children, so a child naming its parent is not a cycle worth breaking;
//! - `#[cfg(test)]` code (inline `mod tests` and `tests.rs` files): a test
//!   may build its fixtures with a module above the one it tests, and none
//!   of it is in the broker that runs;
//! - `src/bin`: the binary is the top of the graph, not part of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules inside these are nodes of their own, down to this depth.
const SPLIT: &[(&str, usize)] = &[("cluster", 3)];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/cluster/kv/watch.rs` -> `["cluster", "kv", "watch"]`; `lib.rs` and
/// `mod.rs` name their directory.
fn module_of(file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src()).unwrap().with_extension("");
    let mut path: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    path
}

/// The node a module belongs to.
fn node(module: &[String]) -> String {
    let Some(first) = module.first() else {
        return "crate".to_owned();
    };
    let depth = SPLIT
        .iter()
        .find(|(name, _)| name == first)
        .map_or(1, |(_, depth)| *depth);
    module[..module.len().min(depth)].join("::")
}

/// The code of a file: no comments, no `#[cfg(test)]` module (by the
/// convention here, the last item of a file).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        let without_comment = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(without_comment);
        out.push('\n');
    }
    out
}

/// Every module path after `crate::`, with `use crate::{a, b::c}` groups
/// expanded one level deep (the only form the broker uses).
fn references(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        // `mycrate::`, `$crate::`: not this crate's path.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                found.push(segments(item.trim()));
            }
        } else {
            found.push(segments(rest));
        }
    }
    found
}

/// The leading identifiers of a path: `a::b::C<..` -> `[a, b, C]`.
fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = path;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    out
}

/// node -> nodes it refers to.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let from = node(&module);
        let text = std::fs::read_to_string(file).unwrap();
        for path in references(&code(&text)) {
            // The longest prefix that is a module: `crate::store::Store`
            // names `store`.
            let Some(target) = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            let to = node(&target);
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
        edges.entry(from).or_default();
    }
    edges
}

/// A cycle, as the nodes along it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap();
                let mut cycle = stack[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for start in edges.keys() {
        if let Some(cycle) = visit(start, edges, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_broker_modules_form_no_cycle() {
    let edges = graph();
    if let Some(cycle) = find_cycle(&edges) {
        let uses: Vec<String> = cycle
            .windows(2)
            .map(|pair| format!("{} uses {}", pair[0], pair[1]))
            .collect();
        panic!(
            "the broker's modules form a cycle: {}\n({})",
            cycle.join(" -> "),
            uses.join("; ")
        );
    }
}

#[test]
fn the_graph_sees_the_modules_and_their_uses() {
    let edges = graph();
    for node in [
        "store",
        "outcomes",
        "tenants",
        "cluster::kv",
        "cluster::kv::watch",
    ] {
        assert!(edges.contains_key(node), "{node} is missing: {edges:?}");
    }
    // A use every broker has: the server is built from the store.
    assert!(edges["server"].contains("store"), "{:?}", edges["server"]);
}

#[test]
fn a_cycle_is_found_and_named() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(from, to)| (from.into(), to.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
}

#[test]
fn paths_are_read_from_code_only() {
    let text = "//! [`crate::docs`]\n/// crate::doc\nuse crate::{a::B, c};\n\
                let x = crate::d::e(); // crate::comment\n$crate::macro_path\n\
                #[cfg(test)]\nmod tests { use crate::test_only; }\n";
    let found: Vec<Vec<String>> = references(&code(text));
    assert_eq!(found, [vec!["a", "B"], vec!["c"], vec!["d", "e"]]);
}

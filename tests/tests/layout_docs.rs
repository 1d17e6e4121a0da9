//! Each crate's docs open with a "Layout" section naming every module's job
//! (docs/style-examples.md). Prose drifts from the tree unless something
//! fails when they part, so this test holds them together: every top-level
//! module of a crate is named in its Layout, and every name there is a
//! module of the tree or an item of the crate root.
//!
//! A module counts as named when it stands before the colon of a Layout
//! bullet (`` - [`routing`]: the router ``, `` - [`tenants`] over
//! [`store`]: ...``); a mention inside another module's description does not
//! give it a job of its own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Crate directory and its root file. Every crate of the workspace that has
/// more than one module.
const CRATES: &[(&str, &str)] = &[
    ("proto", "src/lib.rs"),
    ("sas", "src/lib.rs"),
    ("envelope", "src/lib.rs"),
    ("broker", "src/lib.rs"),
    ("client", "src/lib.rs"),
    ("directory", "src/lib.rs"),
    ("agent", "src/lib.rs"),
    ("portal", "src/lib.rs"),
    ("bench", "src/main.rs"),
    ("tests", "src/lib.rs"),
];

/// Item keywords after which a crate root declares a name of its own.
const ITEM_KEYWORDS: &[&str] = &[
    "struct", "enum", "fn", "trait", "type", "mod", "const", "static", "union",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// The names before the colon of each bullet of the `# Layout` section, or
/// None when the root's docs have no such section.
fn layout_names(root_source: &str) -> Option<Vec<String>> {
    let mut docs = root_source
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l));
    docs.by_ref().find(|l| l.trim() == "# Layout")?;
    let mut names = Vec::new();
    for line in docs.take_while(|l| !l.starts_with('#')) {
        let Some(bullet) = line.strip_prefix("- ") else {
            continue;
        };
        let head = bullet.split_once(": ").map_or(bullet, |(head, _)| head);
        names.extend(head.split('`').skip(1).step_by(2).map(|name| {
            name.trim_end_matches(".rs")
                .trim_end_matches('/')
                .to_owned()
        }));
    }
    Some(names)
}

/// The crate's top-level modules as files: `src/x.rs` and `src/x/mod.rs`.
/// `src/bin/` holds binaries, not modules.
fn tree_modules(src: &Path, root_file: &str) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(src).expect("read src/") {
        let path = entry.expect("read src/ entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if path.join("mod.rs").is_file() {
                modules.insert(name);
            }
        } else if let Some(stem) = name.strip_suffix(".rs")
            && src.join(&name) != src.parent().unwrap().join(root_file)
        {
            modules.insert(stem.to_owned());
        }
    }
    modules
}

/// Whether the crate root declares `name` itself (a type, a function, an
/// inline module) or brings it in with `use`.
fn root_declares(root_source: &str, name: &str) -> bool {
    let code = root_source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"));
    for line in code {
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let declared = words
            .windows(2)
            .any(|w| ITEM_KEYWORDS.contains(&w[0]) && w[1] == name);
        let imported = words.first() == Some(&"use") || words.starts_with(&["pub", "use"]);
        if declared || (imported && words.contains(&name)) {
            return true;
        }
    }
    false
}

#[test]
fn every_crates_layout_names_its_modules_and_only_those() {
    let root = workspace();
    let mut problems = Vec::new();
    for (krate, root_file) in CRATES {
        let dir = root.join(krate);
        let source = std::fs::read_to_string(dir.join(root_file))
            .unwrap_or_else(|e| panic!("{krate}: read {root_file}: {e}"));
        let Some(names) = layout_names(&source) else {
            problems.push(format!("{krate}: {root_file} has no `# Layout` section"));
            continue;
        };
        let modules = tree_modules(&dir.join("src"), root_file);
        // `sealed::SealedPortal` names the module `sealed`.
        let named: BTreeSet<&str> = names
            .iter()
            .map(|n| n.split("::").next().unwrap_or(n))
            .collect();
        for module in &modules {
            if !named.contains(module.as_str()) {
                problems.push(format!(
                    "{krate}: module `{module}` is in the tree but not named in the Layout of {root_file}"
                ));
            }
        }
        for name in &named {
            if !modules.contains(*name) && !root_declares(&source, name) {
                problems.push(format!(
                    "{krate}: the Layout of {root_file} names `{name}`, which is neither a module in src/ nor an item of the crate root"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "Layout docs drifted:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_layout_parser_reads_bullet_heads_only() {
    let source = "//! Crate.\n//!\n//! # Layout\n//! In order:\n\
        //! - [`a`], [`b.rs`]: job, see [`c`].\n//!   more of [`d`].\n\
        //! - `e/` over [`f::G`]: job.\n//!\n//! Prose with [`h`].\n//! # Next\n//! - [`i`]: no.\n";
    assert_eq!(
        layout_names(source).unwrap(),
        ["a", "b", "e", "f::G"].map(String::from)
    );
    assert_eq!(layout_names("//! No layout.\n"), None);
    let root = "pub mod pb {\n}\npub fn mint() {}\npub use x::{Y, Z};\n// struct Gone\n";
    assert!(root_declares(root, "pb"));
    assert!(root_declares(root, "mint"));
    assert!(root_declares(root, "Z"));
    assert!(!root_declares(root, "Gone"));
    assert!(!root_declares(root, "x_y"));
}

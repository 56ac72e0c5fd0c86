//! No import circles between the modules of a crate.
//!
//! Within each crate, modules are read level by level: for every module,
//! its child modules form a graph in which `a -> b` when code anywhere
//! under `a` names something under `b` (`crate::`, `super::` and `self::`
//! paths, `use` trees included). A circle in any such graph fails the test:
//! break it by moving what both sides share into a leaf module (as
//! `query/src/api.rs`, `model/src/attributes.rs`, `src/listen.rs` are),
//! or by making one side the other's child when it is a part of it.
//!
//! What is read: each crate's `src/**/*.rs` (not `src/bin`), code only.
//! Comments (doc links included), string literals and a file's trailing
//! `#[cfg(test)] mod ... { }` are left out: a test module may reach
//! anywhere, and a doc link is not a dependency. References between a
//! module and its own ancestors are containment, not circles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module of the crate whose sources are under `src`, with its file.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path != src.join("bin") {
                    pending.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("lib" | "main") if module.len() == 1 => module.clear(),
                Some("mod") => {
                    module.pop();
                }
                _ => {}
            }
            found.insert(module, path);
        }
    }
    found
}

/// `text` without comments, string contents and a trailing test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal holding a quote, so it opens no string.
            '\'' if chars.peek() == Some(&'"') => {
                chars.next();
                out.push_str("' '");
            }
            c => out.push(c),
        }
    }
    out
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(next) = chars.peek().filter(|n| n.is_alphanumeric() || **n == '_') {
                word.push(*next);
                chars.next();
            }
            out.push(word);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.push("::".into());
        } else if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    out
}

fn is_word(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Reads a path or `use` tree at `tokens[at..]` under `prefix`, adding each
/// full path to `paths`; returns where it ends.
fn use_tree(tokens: &[String], mut at: usize, prefix: &Module, paths: &mut Vec<Module>) -> usize {
    if tokens.get(at).map(String::as_str) == Some("{") {
        at += 1;
        while at < tokens.len() && tokens[at] != "}" {
            let end = use_tree(tokens, at, prefix, paths);
            at = if end == at { end + 1 } else { end };
            if tokens.get(at).map(String::as_str) == Some(",") {
                at += 1;
            }
        }
        return at + 1;
    }
    let mut path = prefix.clone();
    while let Some(word) = tokens.get(at).filter(|token| is_word(token)) {
        path.push(word.clone());
        at += 1;
        if tokens.get(at).map(String::as_str) != Some("::") {
            break;
        }
        at += 1;
        if tokens.get(at).map(String::as_str) == Some("{") {
            return use_tree(tokens, at, &path, paths);
        }
    }
    paths.push(path);
    at
}

/// The modules that the code of `module` names.
fn references(code: &str, module: &Module, known: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let tokens = tokens(code);
    let mut paths = Vec::new();
    let mut at = 0;
    while at + 1 < tokens.len() {
        let starts = matches!(tokens[at].as_str(), "crate" | "super" | "self")
            && tokens[at + 1] == "::"
            && (at == 0 || tokens[at - 1] != "::");
        if !starts {
            at += 1;
            continue;
        }
        let mut base = if tokens[at] == "crate" {
            Vec::new()
        } else {
            module.clone()
        };
        if tokens[at] == "super" {
            base.pop();
            at += 2;
            while at + 1 < tokens.len() && tokens[at] == "super" && tokens[at + 1] == "::" {
                base.pop();
                at += 2;
            }
        } else {
            at += 2;
        }
        at = use_tree(&tokens, at, &base, &mut paths);
    }
    paths
        .into_iter()
        .filter_map(|path| {
            (0..=path.len())
                .rev()
                .map(|length| path[..length].to_vec())
                .find(|prefix| known.contains_key(prefix))
        })
        .collect()
}

/// Circles among sibling modules of the crate under `src`, each as its
/// members' names sorted.
fn circles(src: &Path) -> Vec<Vec<String>> {
    let known = modules(src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, path) in &known {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        for target in references(&code, module, &known) {
            let shared = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if shared == module.len() || shared == target.len() {
                continue;
            }
            edges
                .entry(module[..=shared].to_vec())
                .or_default()
                .insert(target[..=shared].to_vec());
        }
    }
    strongly_connected(&edges)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let mut names: Vec<String> = component.iter().map(|m| m.join("::")).collect();
            names.sort();
            names
        })
        .collect()
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, (usize, usize)>,
        stack: Vec<&'a Module>,
        next: usize,
        out: Vec<Vec<Module>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a Module) {
        state.index.insert(node, (state.next, state.next));
        state.next += 1;
        state.stack.push(node);
        for target in state.edges.get(node).into_iter().flatten() {
            match state.index.get(target).copied() {
                None => {
                    visit(state, target);
                    let low = state.index[target].1;
                    let entry = state.index.get_mut(node).unwrap();
                    entry.1 = entry.1.min(low);
                }
                Some((index, _)) if state.stack.contains(&target) => {
                    let entry = state.index.get_mut(node).unwrap();
                    entry.1 = entry.1.min(index);
                }
                Some(_) => {}
            }
        }
        let (index, low) = state.index[node];
        if index == low {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                component.push(member.clone());
                if member == node {
                    break;
                }
            }
            state.out.push(component);
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node) {
            visit(&mut state, node);
        }
    }
    state.out
}

/// The source directories of the workspace's crates, by their directory.
fn crates() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find_map(|line| line.strip_prefix("members = ["))
        .expect("workspace members on one line");
    let mut out = vec![("src".to_string(), root.join("src"))];
    for member in members.trim_end_matches(']').split(',') {
        let name = member.trim().trim_matches('"');
        out.push((name.to_string(), root.join(name).join("src")));
    }
    out
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut found = Vec::new();
    for (name, src) in crates() {
        assert!(src.is_dir(), "{} missing", src.display());
        for circle in circles(&src) {
            found.push(format!("{name}: {}", circle.join(" <-> ")));
        }
    }
    assert!(
        found.is_empty(),
        "import circles between modules (move what both sides share into a leaf module): {found:#?}"
    );
}

#[test]
fn the_reader_finds_circles_through_use_trees_super_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\npub use a::X;\n");
    // a -> b through a nested use tree; b -> a through an expression path.
    write(
        "a.rs",
        "use crate::{c::Y, b::{self, inner::Z}};\npub struct X;\n",
    );
    write(
        "b/mod.rs",
        "mod inner;\nfn f() { let _ = crate::a::X; }\n// crate::d::Doc is a comment\n",
    );
    // The child names its parent's sibling through `super::super`, and its
    // own parent through `super` (containment, not a circle).
    write(
        "b/inner.rs",
        "pub struct Z;\nfn g() { super::super::c::Y; super::f(); }\n",
    );
    // c -> d in a string and in a test module only: no edge.
    write(
        "c.rs",
        "pub struct Y;\nconst S: &str = \"crate::d::W\";\n#[cfg(test)]\nmod tests {\n    use crate::d::W;\n}\n",
    );
    write("d.rs", "pub struct W;\nuse crate::c::Y;\n");
    assert_eq!(circles(src), vec![vec!["a".to_string(), "b".to_string()]]);
    // One more reference closes c -> d -> c.
    write("c.rs", "pub struct Y;\nuse super::d::W;\n");
    let mut found = circles(src);
    found.sort();
    assert_eq!(
        found,
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["c".to_string(), "d".to_string()]
        ]
    );
}

/// The crates of ours a crate's manifest names under `[dependencies]`
/// (not dev- or build-dependencies).
fn our_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut section = "";
    let mut out = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
        } else if section == "[dependencies]"
            && let Some(name) = line.strip_prefix("tracelake-")
        {
            let name = name.split(['.', ' ', '=']).next().unwrap_or_default();
            out.insert(name.to_string());
        }
    }
    out
}

/// The direction of the crates: which of ours each may depend on. A new
/// arrow here is a decision for ARCHITECTURE.md, not a convenience.
#[test]
fn crates_depend_only_in_the_documented_direction() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("routes", &[][..]),
        ("settings", &[][..]),
        ("model", &[][..]),
        ("workload", &[][..]),
        ("aws-json", &["routes", "model"][..]),
        ("storage", &["model"][..]),
        ("sampler", &["routes", "aws-json", "settings", "model"][..]),
        ("collector", &["model", "routes", "storage", "sampler"][..]),
        (
            "query",
            &["model", "routes", "aws-json", "settings", "storage"][..],
        ),
        ("gateway-plugin", &["sampler", "aws-json"][..]),
        // Refusals answer in each listener's protocol, OTLP/HTTP's included.
        ("auth", &["model", "routes", "aws-json", "collector"][..]),
    ]);
    for (name, _) in crates() {
        let Some(allowed) = allowed.get(name.as_str()) else {
            continue; // the binary and the fuzz harness wire everything
        };
        let manifest = std::fs::read_to_string(root.join(&name).join("Cargo.toml")).unwrap();
        for dependency in our_dependencies(&manifest) {
            assert!(
                allowed.contains(&dependency.as_str()),
                "{name} depends on {dependency}: not in the documented direction"
            );
        }
    }
}

/// Storage's write-path pieces (`tracelake_storage::internals`) are for
/// benchmarks and tests; no crate's library code reaches them.
#[test]
fn only_benchmarks_and_tests_use_storage_internals() {
    let mut found = Vec::new();
    for (name, src) in crates() {
        if name == "storage" {
            continue;
        }
        for path in modules(&src).into_values() {
            let code = code_of(&std::fs::read_to_string(&path).unwrap());
            if code.contains("tracelake_storage::internals") {
                found.push(path.display().to_string());
            }
        }
    }
    assert!(
        found.is_empty(),
        "library code uses storage internals: {found:#?}"
    );
}

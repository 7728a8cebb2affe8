//! The check of the dependency rules written in `lib.rs` ("Layers"): it reads the rules from that table, every module
//! path (`crate::...`, `super::...`, `tch::...`) in the source files under `src/`, and reports each path that breaks a
//! rule, with its file and line. It also reads this package's `Cargo.toml` (no libtorch dependency) and the trainer
//! crate's `train` module (`trainer/src/train/`: only the `rush::...` modules its row lists).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root (`["daemon", "runner"]`); the root is empty.
type ModPath = Vec<String>;

/// One path a source line names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    file: String,
    line: usize,
    /// The path as resolved from the crate root, e.g. `["daemon", "executor", "Launch"]`.
    target: ModPath,
}

/// A source file and the module it is.
#[derive(Debug)]
struct Source {
    rel: String,
    module: ModPath,
    text: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src` but the binary's `main.rs`, with its module path.
fn sources(src: &Path) -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(src).unwrap().to_string_lossy().into_owned();
            // The binary, and this check (a test module of lib.rs).
            if rel == "main.rs" || rel == "layering.rs" {
                return None;
            }
            let mut module: ModPath = rel.trim_end_matches(".rs").split('/').map(str::to_string).collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            Some(Source { rel, module, text })
        })
        .collect()
}

/// Whether `module` is a module of the crate (a file `x.rs`, `x/mod.rs` or a folder `x/`), not an item.
fn is_module(src: &Path, module: &[String]) -> bool {
    if module.is_empty() {
        return true;
    }
    let base = src.join(module.join("/"));
    base.with_extension("rs").is_file() || base.is_dir()
}

/// The code of a file without comments and without its test modules (`#[cfg(test)]` followed by a `mod`), as
/// (line number, line) pairs.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if line.starts_with("#[cfg(test)]") {
            let next = lines[i + 1..].iter().map(|l| l.trim_start()).find(|l| !l.is_empty()).unwrap_or("");
            if next.starts_with("mod ") || next.starts_with("pub mod ") || next.starts_with("pub(crate) mod ") {
                // Skip the module: to the line that closes it (its braces balanced).
                let mut depth = 0i64;
                let mut opened = false;
                i += 1;
                while i < lines.len() {
                    for c in lines[i].chars() {
                        match c {
                            '{' => {
                                depth += 1;
                                opened = true;
                            }
                            '}' => depth -= 1,
                            _ => {}
                        }
                    }
                    i += 1;
                    if (opened && depth <= 0) || (!opened && lines[i - 1].trim_end().ends_with(';')) {
                        break;
                    }
                }
                continue;
            }
        }
        let code = match lines[i].find("//") {
            Some(at) => &lines[i][..at],
            None => lines[i],
        };
        out.push((i + 1, code.to_string()));
        i += 1;
    }
    out
}

/// Whether `c` may be part of an identifier.
fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths one line of `module` names through `crate::` and `super::`, resolved from the crate root. A group
/// (`use super::{a, b::c}`) gives one path per member.
fn paths_in(line: &str, module: &[String]) -> Vec<ModPath> {
    let mut found = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..].iter().collect();
        let before_ok = i == 0 || !ident_char(chars[i - 1]) && chars[i - 1] != ':';
        let (base, skip) = if before_ok && rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if before_ok && rest.starts_with("super::") {
            // Each `super` goes up one module (a `mod.rs`'s module path already names its folder).
            let mut base: ModPath = module.to_vec();
            let mut skip = 0;
            let mut r = rest.as_str();
            while let Some(after) = r.strip_prefix("super::") {
                base.pop();
                skip += "super::".len();
                r = after;
            }
            (base, skip)
        } else {
            i += 1;
            continue;
        };
        let tail: String = chars[i + skip..].iter().collect();
        for member in members(&tail) {
            let mut path = base.clone();
            path.extend(member);
            found.push(path);
        }
        i += skip.max(1);
    }
    found
}

/// The paths that start `text` (after `crate::` or `super::`): `a::b::C` gives one, `{a, b::c}` one per member.
fn members(text: &str) -> Vec<ModPath> {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut current = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        items.push(current);
        return items.iter().map(|item| segments(item.trim())).filter(|p| !p.is_empty()).collect();
    }
    vec![segments(text)]
}

/// `a::b::C rest` -> `["a", "b", "C"]` (`self` and generics end it).
fn segments(text: &str) -> ModPath {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest.find(|c: char| !ident_char(c)).unwrap_or(rest.len());
        let ident = &rest[..end];
        if ident.is_empty() || ident == "self" {
            break;
        }
        out.push(ident.to_string());
        match rest[end..].strip_prefix("::") {
            Some(after) if !after.starts_with('{') => rest = after,
            _ => break,
        }
    }
    out
}

/// The rules table of `lib.rs`: module -> the modules it may use.
fn rules(lib: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut rules = BTreeMap::new();
    let mut in_layers = false;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else { continue };
        let doc = doc.trim();
        if doc == "# Layers" {
            in_layers = true;
            continue;
        }
        if !in_layers || !doc.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = doc.trim_matches('|').split('|').map(str::trim).collect();
        let module = cells[0].trim_matches('`').to_string();
        let uses = cells.get(1).map_or("", |c| c).split(',').map(|m| m.trim().trim_matches('`').to_string());
        rules.insert(module, uses.filter(|m| !m.is_empty()).collect());
    }
    rules
}

/// Every path that breaks the rules of `lib` in the files under `src`, as readable lines.
fn violations(src: &Path, lib: &str) -> Vec<String> {
    let rules = rules(lib);
    let sources = sources(src);
    let mut problems = Vec::new();
    // Edges between sibling modules: parent -> (child -> children it names, with where).
    let mut edges: BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
    let test_only = test_modules(&sources);
    for source in &sources {
        let Some(top) = source.module.first() else { continue };
        if test_only.iter().any(|t| source.module.starts_with(t)) {
            continue;
        }
        if !rules.contains_key(top) {
            problems.push(format!("src/{}: the module `{top}` has no row in lib.rs's Layers table", source.rel));
            continue;
        }
        for (n, line) in code_lines(&source.text) {
            let at = format!("src/{}:{n}", source.rel);
            let torch = (line.contains("tch::") && tch_path(&line))
                || line.contains("torch_sys::")
                || line.trim_start().starts_with("use tch")
                || line.trim_start().starts_with("use torch_sys");
            if torch {
                problems.push(format!("{at}: names tch, which only rush-train (trainer/) links: {}", line.trim()));
            }
            for target in paths_in(&line, &source.module) {
                let named = Named { file: source.rel.clone(), line: n, target };
                check(src, &rules, source, &named, &at, &line, &mut problems, &mut edges);
            }
        }
    }
    for (parent, graph) in &edges {
        if let Some(cycle) = find_cycle(graph) {
            let name = if parent.is_empty() { "the crate".to_string() } else { format!("`{}`", parent.join("::")) };
            let steps: Vec<String> =
                cycle.windows(2).map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]])).collect();
            problems.push(format!("a cycle between the submodules of {name}: {}", steps.join(", ")));
        }
    }
    problems
}

/// The modules declared test-only in a file of their parent (`#[cfg(test)]` then `mod fixture;`).
fn test_modules(sources: &[Source]) -> Vec<ModPath> {
    let mut found = Vec::new();
    for source in sources {
        let lines: Vec<&str> = source.text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.starts_with("#[cfg(test)]") {
                continue;
            }
            let Some(next) = lines[i + 1..].iter().find(|l| !l.is_empty()) else { continue };
            let decl =
                next.trim_start_matches("pub(crate) ").trim_start_matches("pub(super) ").trim_start_matches("pub ");
            if let Some(name) = decl.strip_prefix("mod ").and_then(|rest| rest.strip_suffix(';')) {
                let mut path = source.module.clone();
                path.push(name.trim().to_string());
                found.push(path);
            }
        }
    }
    found
}

/// The libtorch crates (`tch`, `torch-sys`) among the dependencies of a `Cargo.toml` (`[dependencies]`,
/// `[build-dependencies]` and their `[target.'...'.*]` forms; dev-dependencies reach no binary), as `section: name`.
fn libtorch_dependencies(cargo_toml: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut section = String::new();
    for line in cargo_toml.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            section = header.trim().to_string();
            // `[dependencies.tch]`: the dependency is named in the header.
            if let Some((table, name)) = section.rsplit_once('.') {
                let kind = table.rsplit('.').next().unwrap_or(table);
                if ["dependencies", "build-dependencies"].contains(&kind)
                    && ["tch", "torch-sys", "torch_sys"].contains(&name)
                {
                    found.push(format!("{table}: {name}"));
                }
            }
            continue;
        }
        let kind = section.rsplit('.').next().unwrap_or(&section);
        if !["dependencies", "build-dependencies"].contains(&kind) {
            continue;
        }
        let name = line.split('=').next().unwrap_or("").trim().trim_matches('"');
        if ["tch", "torch-sys", "torch_sys"].contains(&name) {
            found.push(format!("{section}: {name}"));
        }
    }
    found
}

/// Every path of the trainer crate's `train` module (the `.rs` files under `train`, outside test modules) that breaks
/// its row, `rush_trainer::train`: a `rush::X` for an `X` the row does not list, or a `crate::Y` other than
/// `crate::train`.
fn trainer_violations(train: &Path, rules: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let Some(allowed) = rules.get("rush_trainer::train") else {
        return vec!["lib.rs's Layers table has no row `rush_trainer::train`".to_string()];
    };
    let mut problems = Vec::new();
    let mut files = Vec::new();
    let mut dirs = vec![train.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for path in std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let rel = path.strip_prefix(train).unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in code_lines(&text) {
            let at = format!("trainer/src/train/{rel}:{n}");
            for (root, module) in roots_named(&line) {
                let ok = match root {
                    "rush" => allowed.contains(&module),
                    _ => module == "train",
                };
                if !ok {
                    problems
                        .push(format!("{at}: `rush_trainer::train` may not use `{root}::{module}`: {}", line.trim()));
                }
            }
        }
    }
    problems
}

/// The (`rush` or `crate`, first module) of each `rush::...` and `crate::...` path on a line, groups expanded.
fn roots_named(line: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for root in ["rush", "crate"] {
        let prefix = format!("{root}::");
        for (i, _) in line.match_indices(&prefix) {
            let before = line[..i].chars().next_back();
            if before.is_some_and(|c| ident_char(c) || c == ':') {
                continue;
            }
            for member in members(&line[i + prefix.len()..]) {
                if let Some(first) = member.into_iter().next() {
                    found.push((root, first));
                }
            }
        }
    }
    found
}

/// Whether a line holds a `tch::` path (not `watch::` or another word ending in `tch`).
fn tch_path(line: &str) -> bool {
    line.match_indices("tch::").any(|(i, _)| i == 0 || !ident_char(line[..i].chars().next_back().unwrap_or(' ')))
}

#[allow(clippy::too_many_arguments)]
fn check(
    src: &Path,
    rules: &BTreeMap<String, BTreeSet<String>>,
    source: &Source,
    named: &Named,
    at: &str,
    line: &str,
    problems: &mut Vec<String>,
    edges: &mut BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, String>>>,
) {
    let from = &source.module;
    let target = &named.target;
    let Some(to_top) = target.first() else { return };
    if !is_module(src, &target[..1]) {
        // An item of the crate root (none today) or a macro path: no module to judge.
        return;
    }
    let from_top = &from[0];
    if to_top != from_top {
        let allowed = rules.get(from_top).is_some_and(|r| r.contains(to_top));
        if !allowed {
            problems.push(format!("{at}: `{from_top}` may not use `{to_top}`: {}", line.trim()));
            return;
        }
        if from_top == "web" && to_top == "daemon" && target.len() >= 2 && is_module(src, &target[..2]) {
            problems.push(format!(
                "{at}: `web` names the daemon's submodule `{}` instead of its facade (re-export the item from \
                 `daemon`): {}",
                target[1],
                line.trim()
            ));
        }
        return;
    }
    // The same top-level module: an edge between siblings under their longest common parent.
    let common = from.iter().zip(target.iter()).take_while(|(a, b)| a == b).count();
    if from.len() > common && target.len() > common && is_module(src, &target[..=common]) {
        let parent: ModPath = from[..common].to_vec();
        edges
            .entry(parent)
            .or_default()
            .entry(from[common].clone())
            .or_default()
            .entry(target[common].clone())
            .or_insert_with(|| format!("src/{}:{}", named.file, named.line));
    }
}

/// A cycle in `graph` as the nodes along it, first and last the same; `None` when it has none.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|n| n.keys()) {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, graph, &mut state, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn the_tree_keeps_the_layers_written_in_lib_rs() {
    let src = src_dir();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let rules = rules(&lib);
    assert!(rules.len() >= 12 && rules["core"].is_empty(), "the Layers table of lib.rs was not read: {rules:?}");
    let problems = violations(&src, &lib);
    assert!(problems.is_empty(), "{} layering problem(s):\n{}", problems.len(), problems.join("\n"));
}

/// The checker itself, on a small tree written here: each kind of break is found, and a clean tree passes.
#[test]
fn each_kind_of_break_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |rel: &str, text: &str| {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let lib = "//! # Layers\n//!\n//! | module | may use |\n//! |---|---|\n//! | `core` | |\n//! | `daemon` | `core` |\n\
               //! | `web` | `core`, `daemon` |\n//! | `train` | `core` |\n";
    write("lib.rs", lib);
    write("core/mod.rs", "//! c\npub mod a;\npub mod b;\n");
    write("core/a.rs", "//! a\nuse super::b::B;\npub struct A;\n");
    write("core/b.rs", "//! b\npub struct B;\n");
    write("daemon/mod.rs", "//! d\npub mod live;\npub use live::Hub;\npub struct Daemon;\n");
    write("daemon/live.rs", "//! l\nuse super::Daemon;\nuse crate::core::{a::A, b};\npub struct Hub;\n");
    write("web/mod.rs", "//! w\nuse crate::daemon::{Daemon, Hub};\nfn f(_: crate::core::a::A) {}\n");
    write("train/mod.rs", "//! t\nuse crate::core::a::A;\n");
    assert_eq!(violations(src, lib), Vec::<String>::new(), "a clean tree");

    // A rule broken by an inline path, a facade bypassed, tch outside train, a sibling cycle, a module with no row.
    write("core/b.rs", "//! b\npub struct B(super::a::A);\nfn f() { let _ = crate::daemon::Daemon; }\n");
    write("web/mod.rs", "//! w\nuse crate::daemon::live::Hub;\n#[cfg(test)]\nmod tests {\n    use crate::x::Y;\n}\n");
    write("daemon/mod.rs", "//! d\npub mod live;\nfn g() -> tch::Tensor { todo!() }\nlet w = watch::channel();\n");
    write("extra.rs", "//! e\n");
    write("web/fixture.rs", "//! f\nuse crate::daemon::live::Hub;\n");
    let web = std::fs::read_to_string(src.join("web/mod.rs")).unwrap();
    write("web/mod.rs", &format!("{web}#[cfg(test)]\nmod fixture;\n"));
    let problems = violations(src, lib);
    let all = problems.join("\n");
    assert!(all.contains("src/core/b.rs:3: `core` may not use `daemon`"), "{all}");
    assert!(all.contains("src/web/mod.rs:2: `web` names the daemon's submodule `live`"), "{all}");
    assert!(all.contains("src/daemon/mod.rs:3: names tch"), "{all}");
    assert!(!all.contains("mod.rs:4"), "watch:: is not tch::, and test modules are skipped: {all}");
    assert!(all.contains("a cycle between the submodules of `core`: a -> b"), "{all}");
    assert!(all.contains("src/extra.rs: the module `extra` has no row"), "{all}");
    assert_eq!(problems.len(), 5, "{all}");
}

#[test]
fn the_rush_package_does_not_depend_on_libtorch() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    assert!(manifest.contains("[dependencies]") && manifest.contains("nvml-wrapper"), "not rush's Cargo.toml");
    assert_eq!(libtorch_dependencies(&manifest), Vec::<String>::new(), "the `rush` binary must not link libtorch");
    // The trainer's does, which the reader sees.
    let trainer = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/Cargo.toml")).unwrap();
    assert_eq!(libtorch_dependencies(&trainer), ["dependencies: tch", "dependencies: torch-sys"]);
    // Each form a dependency can take; dev-dependencies do not count.
    let forms = "[package]\nname = \"x\"\n[dev-dependencies]\ntch = \"1\"\n[build-dependencies]\ntorch-sys = { version = \"1\" }\n\
                 [target.'cfg(unix)'.dependencies]\n\"tch\" = \"1\"\n[dependencies.tch]\nversion = \"1\"\n";
    assert_eq!(
        libtorch_dependencies(forms),
        ["build-dependencies: torch-sys", "target.'cfg(unix)'.dependencies: tch", "dependencies: tch"]
    );
}

#[test]
fn the_trainer_keeps_its_row() {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let rules = rules(&lib);
    let train = Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/src/train");
    assert!(train.join("run.rs").is_file(), "no trainer at {}", train.display());
    let problems = trainer_violations(&train, &rules);
    assert!(problems.is_empty(), "{} layering problem(s):\n{}", problems.len(), problems.join("\n"));

    // The check itself, on a small tree.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mod.rs"),
        "//! t\nuse rush::core::spec::Spec;\nuse rush::{data::layout, home::Home};\nuse crate::train::x;\n\
         fn f() { rush::store::Store::open(); }\nuse crate::cli::Y;\nlet a = my_rush::store::x;\n\
         #[cfg(test)]\nmod tests {\n    use rush::web::x;\n}\n",
    )
    .unwrap();
    let found = trainer_violations(dir.path(), &rules);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("trainer/src/train/mod.rs:5: `rush_trainer::train` may not use `rush::store`"));
    assert!(found[1].starts_with("trainer/src/train/mod.rs:6: `rush_trainer::train` may not use `crate::cli`"));
}

#[test]
fn paths_resolve_from_the_crate_root() {
    let m = |s: &str| s.split("::").map(str::to_string).collect::<ModPath>();
    let daemon_runner = m("daemon::runner");
    assert_eq!(
        paths_in("use super::{Daemon, checkpoints};", &daemon_runner),
        [m("daemon::Daemon"), m("daemon::checkpoints")]
    );
    assert_eq!(paths_in("use super::executor::{Launch, StopSignal};", &daemon_runner), [m("daemon::executor")]);
    assert_eq!(paths_in("x(crate::core::format::datetime(1.0))", &daemon_runner), [m("core::format::datetime")]);
    // In a mod.rs, `super` is the folder's parent.
    assert_eq!(paths_in("use super::Store;", &m("store::sessions")), [m("store::Store")]);
    assert_eq!(paths_in("use super::super::Spec;", &m("core::spec::yaml")), [m("core::Spec")]);
    assert_eq!(paths_in("use super::Spec;", &m("core::spec")), [m("core::Spec")]);
    assert!(paths_in("let a = my_crate::x; b.super_thing::y", &daemon_runner).is_empty());
}

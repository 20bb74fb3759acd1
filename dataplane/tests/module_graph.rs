//! The data plane's modules form a graph without cycles: no two modules
//! import each other, directly or round about. Read from the sources (the
//! `crate::` and `super::` paths outside comments and test modules), at two
//! granularities: each file, and each top-level module (a folder counts as
//! one). A newcomer can then read the request's path from the bottom up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let line = match line.find("// ") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every path a file names: `crate::a::b`, the members of `crate::a::{b, c::d}`
/// (one level of braces), and `super::x` resolved against `module`.
fn paths(code: &str, module: &str) -> Vec<String> {
    let mut found = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (prefix, base) in [("crate::", String::new()), ("super::", parent(module))] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
            let head = rest[..end].trim_end_matches(':');
            let joined = |p: &str| if base.is_empty() { p.to_string() } else { format!("{base}::{p}") };
            if rest[end..].starts_with('{') && (head.is_empty() || rest[..end].ends_with("::")) {
                let close = rest[end..].find('}').map_or(rest.len(), |c| end + c);
                for member in rest[end + 1..close].split(',') {
                    let m = member.trim().split(|c: char| !ident(c)).next().unwrap_or("");
                    let m = m.trim_end_matches(':');
                    if m.is_empty() || m == "self" {
                        continue;
                    }
                    found.push(joined(&if head.is_empty() { m.to_string() } else { format!("{head}::{m}") }));
                }
            }
            if !head.is_empty() {
                found.push(joined(head));
            }
        }
    }
    found
}

fn parent(module: &str) -> String {
    module.rsplit_once("::").map_or(String::new(), |(p, _)| p.to_string())
}

/// The longest prefix of `path` that is a module.
fn resolve<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len()).rev().find_map(|n| modules.get(&segs[..n].join("::")))
}

fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components; any of more than one node is a cycle.
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.edges.get(v) {
            for w in ws {
                if !t.index.contains_key(w.as_str()) {
                    visit(t, w);
                    let lw = t.low[w.as_str()];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w.as_str()) {
                    let iw = t.index[w.as_str()];
                    let lv = t.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, BTreeSet<String>>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut by_file: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let top = |m: &str| m.split("::").next().unwrap_or("").to_string();
    for f in &files {
        let m = module_of(&src, f);
        if m.is_empty() {
            continue; // lib.rs declares the modules
        }
        let text = std::fs::read_to_string(f).expect("read");
        for p in paths(&code(&text), &m) {
            let Some(target) = resolve(&p, &modules) else { continue };
            // A module may use its own submodules and its parent folder's module.
            if target.is_empty() || *target == m || target.starts_with(&format!("{m}::")) {
                continue;
            }
            by_file.entry(m.clone()).or_default().insert(target.clone());
            if top(&m) != top(target) {
                by_top.entry(top(&m)).or_default().insert(top(target));
            }
        }
    }
    (by_file, by_top)
}

#[test]
fn no_two_modules_import_each_other() {
    let (by_file, by_top) = graph();
    assert!(by_file.len() > 20, "the scan found too few modules: {by_file:?}");
    let file_cycles = cycles(&by_file);
    assert!(file_cycles.is_empty(), "import cycles between data-plane files: {file_cycles:?}");
    let top_cycles = cycles(&by_top);
    assert!(top_cycles.is_empty(), "import cycles between data-plane modules: {top_cycles:?}");
}

#[test]
fn the_scan_sees_a_cycle_when_there_is_one() {
    let modules: BTreeSet<String> = ["a", "b", "c::d"].iter().map(|s| s.to_string()).collect();
    let code_a = code("//! uses crate::b in a comment only\nuse crate::b::X;\n");
    let code_b = code("use crate::{a::Y, c::d::{Z}};\n#[cfg(test)]\nmod tests { use crate::c; }\n");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, c) in [("a", &code_a), ("b", &code_b)] {
        for p in paths(c, m) {
            if let Some(t) = resolve(&p, &modules) {
                edges.entry(m.to_string()).or_default().insert(t.clone());
            }
        }
    }
    assert_eq!(edges["b"], ["a", "c::d"].iter().map(|s| s.to_string()).collect());
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".to_string()]]);
    assert_eq!(paths(&code("use super::x::Y;\n"), "relay::frame"), vec!["relay::x::Y".to_string()]);
}

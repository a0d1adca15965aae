//! The code's structure, checked: imports run one way (no circle between modules, and in the
//! proxy crate every arrow points down the layering of docs/architecture.md), and no source
//! file grows past ~600 lines (generated data and test tables excepted).
//!
//! Imports are read from the source text: `crate::`, `super::` and `self::` paths (with their
//! `{...}` groups) and paths through a module's own children. A child's use of its ancestors
//! (the items a `mod.rs` shares with its children) is not an arrow.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The proxy crate's top-level modules, lowest first: a module may import only from layers
/// below its own.
const LAYERS: &[&[&str]] = &[
    &["protocol", "config", "stream", "metrics", "output"],
    &["tls", "logging", "cancel", "catalog"],
    &["upstream", "audit", "sql"],
    &["enforce"],
    &["migrate", "context"],
    &["session"],
    &["server"],
    &["app", "commands"],
    &["demo"],
    &["cli"],
];

/// Files allowed past the size limit, and why.
const LARGE_FILES: &[(&str, &str)] = &[(
    "proxy/src/demo/data.rs",
    "generated data: the demo's name and place lists",
)];

const MAX_LINES: usize = 600;

type Module = Vec<String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file defines: `src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments, string literals and the trailing `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('x', '\n'); lifetimes have no closing quote.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else {
            let c = text[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path written in `code` (`a::b::c`, with `{x, y::z}` groups expanded), as segments.
fn paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts =
            is_ident(chars[i]) && (i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == ':'));
        if !starts {
            i += 1;
            continue;
        }
        let (path, next) = read_path(&chars, i);
        if path.len() > 1 || path.last().is_some_and(|s| s == "{") {
            out.extend(path_group(&chars, i));
        }
        i = next.max(i + 1);
    }
    out
}

/// Read `a::b::c` from `at`; `{` as a last segment marks a group.
fn read_path(chars: &[char], mut at: usize) -> (Vec<String>, usize) {
    let mut segs = Vec::new();
    loop {
        let start = at;
        while at < chars.len() && is_ident(chars[at]) {
            at += 1;
        }
        if start == at {
            if at < chars.len() && chars[at] == '{' {
                segs.push("{".to_string());
            }
            break;
        }
        segs.push(chars[start..at].iter().collect());
        if at + 1 < chars.len() && chars[at] == ':' && chars[at + 1] == ':' {
            at += 2;
        } else {
            break;
        }
    }
    (segs, at)
}

/// The paths of `prefix::{a, b::c, d::{e}}` starting at `at`, groups expanded.
fn path_group(chars: &[char], at: usize) -> Vec<Vec<String>> {
    let (mut segs, mut next) = read_path(chars, at);
    if segs.last().map(String::as_str) != Some("{") {
        return vec![segs];
    }
    segs.pop();
    let mut out = Vec::new();
    next += 1; // past `{`
    loop {
        while next < chars.len() && (chars[next].is_whitespace() || chars[next] == ',') {
            next += 1;
        }
        if next >= chars.len() || chars[next] == '}' {
            break;
        }
        if !is_ident(chars[next]) {
            next += 1;
            continue;
        }
        for tail in path_group(chars, next) {
            let mut p = segs.clone();
            p.extend(tail.into_iter().filter(|s| s != "self"));
            out.push(p);
        }
        // Skip this item (and a nested group) up to the next comma at this depth.
        let mut depth = 0;
        while next < chars.len() {
            match chars[next] {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => break,
                _ => {}
            }
            next += 1;
        }
    }
    out.push(segs);
    out
}

/// The modules of one crate and the arrows between them.
struct Crate {
    name: &'static str,
    modules: BTreeSet<Module>,
    arrows: BTreeMap<Module, BTreeSet<Module>>,
}

fn read_crate(name: &'static str, dir: &str) -> Crate {
    let src = root().join(dir);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let longest = |p: &[String]| -> Option<Module> {
        (0..=p.len())
            .rev()
            .map(|k| p[..k].to_vec())
            .find(|m| modules.contains(m))
    };
    let mut arrows: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for f in &files {
        let m = module_of(&src, f);
        let text = std::fs::read_to_string(f).expect("read a source file");
        for p in paths(&code(&text)) {
            let base: Option<Module> = match p.first().map(String::as_str) {
                Some("crate") => Some(Vec::new()),
                Some("self") => Some(m.clone()),
                Some("super") => {
                    let ups = p.iter().take_while(|s| *s == "super").count();
                    (ups <= m.len()).then(|| m[..m.len() - ups].to_vec())
                }
                Some(first) => {
                    let mut child = m.clone();
                    child.push(first.to_string());
                    modules.contains(&child).then_some(m.clone())
                }
                None => None,
            };
            let Some(base) = base else { continue };
            let rest: Vec<String> = p
                .iter()
                .skip_while(|s| matches!(s.as_str(), "crate" | "self" | "super"))
                .cloned()
                .collect();
            let mut full = base;
            full.extend(rest);
            let Some(target) = longest(&full) else {
                continue;
            };
            // A module's use of its own ancestors is not an arrow.
            if target == m || m.starts_with(&target) {
                continue;
            }
            arrows.entry(m.clone()).or_default().insert(target);
        }
    }
    Crate {
        name,
        modules,
        arrows,
    }
}

fn show(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// A circle of arrows, if there is one.
fn find_circle(c: &Crate) -> Option<Vec<Module>> {
    fn visit(
        c: &Crate,
        m: &Module,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for t in c.arrows.get(m).into_iter().flatten() {
            match state.get(t).copied().unwrap_or(0) {
                0 => {
                    if let Some(found) = visit(c, t, state, stack) {
                        return Some(found);
                    }
                }
                1 => {
                    let from = stack.iter().position(|x| x == t).unwrap_or(0);
                    let mut circle = stack[from..].to_vec();
                    circle.push(t.clone());
                    return Some(circle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in &c.modules {
        if state.get(m).copied().unwrap_or(0) == 0 {
            if let Some(found) = visit(c, m, &mut state, &mut Vec::new()) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn no_import_circles() {
    for c in [
        read_crate("pgveil", "proxy/src"),
        read_crate("pgveil-policy", "policy/src"),
        read_crate("pgveil-testkit", "testkit/src"),
    ] {
        if let Some(circle) = find_circle(&c) {
            let names: Vec<String> = circle.iter().map(show).collect();
            panic!("{}: import circle {}", c.name, names.join(" -> "));
        }
    }
}

#[test]
fn proxy_imports_run_down_the_layers() {
    let c = read_crate("pgveil", "proxy/src");
    let layer = |top: &str| LAYERS.iter().position(|l| l.contains(&top));
    let mut wrong = Vec::new();
    for m in c.modules.iter().filter(|m| m.len() == 1) {
        if layer(&m[0]).is_none() {
            wrong.push(format!(
                "module {} is in no layer of tests/structure.rs",
                m[0]
            ));
        }
    }
    for (from, targets) in &c.arrows {
        for to in targets {
            let (Some(a), Some(b)) = (from.first(), to.first()) else {
                continue;
            };
            if a == b {
                continue;
            }
            if let (Some(la), Some(lb)) = (layer(a), layer(b)) {
                if lb >= la {
                    wrong.push(format!(
                        "{} imports {} (layer {lb} is not below layer {la})",
                        show(from),
                        show(to)
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn source_files_stay_small() {
    let mut files = Vec::new();
    for dir in ["proxy/src", "policy/src", "testkit/src", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    let mut large = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(root())
            .expect("under the root")
            .to_string_lossy()
            .to_string();
        let lines = std::fs::read_to_string(&f).expect("read").lines().count();
        let test_table = rel.ends_with("/tests.rs");
        if lines > MAX_LINES && !test_table && !LARGE_FILES.iter().any(|(p, _)| *p == rel) {
            large.push(format!("{rel}: {lines} lines"));
        }
    }
    assert!(
        large.is_empty(),
        "split these files (or list generated data in LARGE_FILES):\n{}",
        large.join("\n")
    );
}

#[test]
fn the_checker_sees_arrows_and_circles() {
    let p = paths(&code(
        "use crate::a::{b, c::{d, e}};\nfn f() { super::g::h(); x::y(); \"crate::z::w\"; }",
    ));
    assert!(p.contains(&vec!["crate".into(), "a".into(), "b".into()]));
    assert!(p.contains(&vec!["crate".into(), "a".into(), "c".into(), "e".into()]));
    assert!(p.contains(&vec!["super".into(), "g".into(), "h".into()]));
    assert!(!p.iter().any(|s| s.contains(&"z".to_string())));
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Module>();
    let mut c = Crate {
        name: "t",
        modules: ["a", "b", "c"].iter().map(|s| m(s)).collect(),
        arrows: BTreeMap::new(),
    };
    c.arrows.entry(m("a")).or_default().insert(m("b"));
    c.arrows.entry(m("b")).or_default().insert(m("c"));
    assert!(find_circle(&c).is_none());
    c.arrows.entry(m("c")).or_default().insert(m("a"));
    assert_eq!(find_circle(&c).map(|v| v.len()), Some(4));
}

#[test]
fn integration_tests_share_fixtures_only_through_support() {
    let dir = root().join("proxy/tests/integration");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let mut wrong = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&dir).expect("under integration");
        if rel.starts_with("support") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        for p in paths(&code(&text)) {
            if p.first().map(String::as_str) == Some("crate")
                && p.get(1).is_some_and(|m| m != "support")
            {
                wrong.push(format!("{}: crate::{}", rel.display(), p[1..].join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "test modules import each other; move the fixture to support/:\n{}",
        wrong.join("\n")
    );
}

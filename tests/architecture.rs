//! The layering holds: every module of the library imports only modules on a lower floor than its
//! own, by the floor table in CONTRIBUTING.md (which must name every module, and nothing else).
//! Read from the source with nothing but cargo: each `crate::<module>` path outside comments and
//! string literals, groups (`use crate::{a, b}`) included.
use std::collections::BTreeMap;
use std::path::Path;

/// `module → floor` from CONTRIBUTING.md's table: rows `| <floor> | `a/`, `b.rs` | … |`.
fn floors() -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("CONTRIBUTING.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(floor) = cells.get(1).and_then(|c| c.parse::<u32>().ok()) else { continue };
        for name in cells[2].split('`').skip(1).step_by(2) {
            let name = name.trim_end_matches('/').trim_end_matches(".rs");
            assert!(out.insert(name.to_string(), floor).is_none(), "CONTRIBUTING.md lists `{name}` twice");
        }
    }
    assert!(!out.is_empty(), "CONTRIBUTING.md has no floor table");
    out
}

/// `text` without its comments (`//` to the end of the line, `/* … */`) and without the contents of
/// its string and character literals, so that only code is searched.
fn code_of(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let (mut out, mut i) = (String::with_capacity(text.len()), 0);
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\''); a lifetime ('a) is code.
            i += if next == Some('\\') { 3 } else { 1 };
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '"' {
            // A string literal (raw strings `r"…"`/`r#"…"#` end at the first quote followed by their hashes).
            let hashes = (1..=i).take_while(|&k| chars[i - k] == '#').count();
            let raw = i > hashes && chars[i - hashes - 1] == 'r';
            i += 1;
            while i < chars.len() {
                if !raw && chars[i] == '\\' {
                    i += 2;
                    continue;
                }
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The top-level modules named by every `crate::` path in `code`, groups (`crate::{a, b::c}`, over
/// several lines too) included.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The top level of the group: split at commas outside nested braces.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => out.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            out.push(item);
        } else {
            out.push(rest.to_string());
        }
    }
    out.into_iter()
        .map(|p| p.trim().split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default().to_string())
        .filter(|n| !n.is_empty() && n != "self")
        .collect()
}

/// The library's top-level modules with every `crate::<name>` they use (outside comments and string
/// literals), by file.
fn imports() -> BTreeMap<String, Vec<(String, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            if ["main", "lib", "commands"].contains(&top.as_str()) {
                continue;
            }
            let code = code_of(&std::fs::read_to_string(&path).unwrap());
            let entry = out.entry(top).or_default();
            entry.extend(crate_paths(&code).into_iter().map(|used| (rel.clone(), used)));
        }
    }
    out
}

/// Every breach of the table by `imports` (module → (file, imported module)).
fn problems(floors: &BTreeMap<String, u32>, imports: &BTreeMap<String, Vec<(String, String)>>) -> Vec<String> {
    let mut problems = Vec::new();
    for module in imports.keys() {
        if !floors.contains_key(module) {
            problems.push(format!("`{module}` is not in CONTRIBUTING.md's floor table"));
        }
    }
    for (name, floor) in floors {
        if name != "commands" && name != "main" && !imports.contains_key(name) {
            problems.push(format!("CONTRIBUTING.md lists `{name}` (floor {floor}), which is not a module of src/"));
        }
    }
    for (module, uses) in imports {
        let Some(&own) = floors.get(module) else { continue };
        for (file, used) in uses.iter().filter(|(_, u)| u != module) {
            match floors.get(used) {
                Some(&f) if f < own => {}
                Some(&f) => problems.push(format!(
                    "src/{file}: `{module}` (floor {own}) imports `{used}` (floor {f}): allowed are lower floors only"
                )),
                None => problems.push(format!("src/{file}: imports `{used}`, which the floor table does not list")),
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

#[test]
fn every_module_imports_only_lower_floors() {
    let problems = problems(&floors(), &imports());
    assert!(problems.is_empty(), "the layering of CONTRIBUTING.md is broken:\n{}", problems.join("\n"));
}

/// The check can fail: a module reaching up, one on its own floor, and one missing from the table
/// are each reported.
#[test]
fn an_import_that_reaches_up_is_found() {
    let floors = floors();
    let mut imports = imports();
    imports.get_mut("rng").unwrap().push(("rng.rs".into(), "train".into()));
    imports.get_mut("track").unwrap().push(("track/mod.rs".into(), "device".into()));
    imports.insert("newcomer".into(), vec![]);
    let found = problems(&floors, &imports);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("`newcomer` is not in"), "{found:#?}");
    assert!(found[1].contains("src/rng.rs: `rng` (floor 1) imports `train`"), "{found:#?}");
    assert!(found[2].contains("src/track/mod.rs: `track` (floor 2) imports `device` (floor 2)"), "{found:#?}");
}

/// What the scan sees: paths in code and in groups over several lines; not in comments or strings.
#[test]
fn the_scan_finds_paths_in_code_only() {
    let text = r#"use crate::{
    config::{self, RunSpec},
    track,
};
let url = "https://example.org"; let x = crate::train::f(); // crate::eval in a comment
/* crate::runner in a block comment */ let c = '"'; let s = "crate::bench"; let q = '\''; fn f<'a>() {}
let r = r"crate::analysis"; crate::rng::reseed();
"#;
    assert_eq!(crate_paths(&code_of(text)), ["config", "track", "train", "rng"]);
}

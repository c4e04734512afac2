//! The layering holds: every module of the library imports only modules on a lower floor than its
//! own, by the floor table in CONTRIBUTING.md (which must name every module, and nothing else).
//! Read from the source with nothing but cargo: each `crate::<module>` path outside comments.
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

/// The library's top-level modules with every `crate::<name>` they use (comments left out), by file.
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
            let entry = out.entry(top).or_default();
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let code = line.split("//").next().unwrap_or_default();
                for (i, _) in code.match_indices("crate::") {
                    let rest = &code[i + "crate::".len()..];
                    let names: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                        let group = group.split('}').next().unwrap_or_default();
                        group.split(',').map(|p| p.trim().split("::").next().unwrap_or_default().to_string()).collect()
                    } else {
                        vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default().into()]
                    };
                    for name in names.into_iter().filter(|n| !n.is_empty()) {
                        entry.push((rel.clone(), name));
                    }
                }
            }
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

//! Dependencies inside the `crane` library point one way: inwards.
//!
//! Each top-level module has a place in [`ORDER`], innermost first. A module may use itself
//! and the modules before it, never one after it. The test reads every source file under
//! `shared/src` and fails on each `crate::<module>` path that points outwards, naming the
//! file and line. Test code (`tests.rs`, `*_tests.rs`, files under a `tests/` directory and
//! `#[cfg(test)] mod tests { ... }` blocks) may use anything: it wires real parts together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Innermost first. Plain data; pure decisions; the I/O traits; the tools; the planners;
/// the two kinds of adapters and the services written over the ports; the edges (metrics,
/// HTTP); configuration and logging, which assemble everything; the Lambda handlers.
const ORDER: &[&str] = &[
    "domain",
    "engine",
    "ports",
    "tools",
    "planner",
    "adapters",
    "app",
    "prometheus",
    "http",
    "config",
    "telemetry",
    "entrypoints",
];

/// An import against the order: where it is and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|m| *m == module)
}

/// The top-level module a source file belongs to: `engine/refs.rs` -> `engine`,
/// `ports.rs` -> `ports`; `None` for `lib.rs`.
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// Whether a whole file is test code.
fn is_test_file(relative: &Path) -> bool {
    let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs"
        || name.ends_with("_tests.rs")
        || relative.components().any(|c| c.as_os_str() == "tests")
}

/// The lines of `source` that are code outside test modules, with their 1-based numbers:
/// comments dropped, a `#[cfg(test)] mod tests { ... }` block and the item after any other
/// `#[cfg(test)]` skipped.
fn code_lines(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = source.lines().enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        let line = raw.split("//").next().unwrap_or("").trim();
        if line == "#[cfg(test)]" {
            let Some((_, next)) = lines.next() else { break };
            let next = next.trim();
            if next.starts_with("mod ") && next.ends_with('{') {
                // Test modules close the file by convention; skip to the matching brace.
                let mut depth = 1i64;
                for (_, inner) in lines.by_ref() {
                    let inner = inner.split("//").next().unwrap_or("");
                    depth += inner.matches('{').count() as i64;
                    depth -= inner.matches('}').count() as i64;
                    if depth <= 0 {
                        break;
                    }
                }
            }
            continue;
        }
        if !line.is_empty() {
            out.push((i + 1, line.to_owned()));
        }
    }
    out
}

/// The top-level modules a line names through `crate::`: `crate::engine::react` and
/// `use crate::{domain::Event, ports::StepJob}` (also across lines).
fn named_modules(code: &[(usize, String)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut group: Option<(usize, String)> = None;
    for (n, line) in code {
        if let Some((start, text)) = group.as_mut() {
            text.push(' ');
            text.push_str(line);
            if line.contains('}') {
                let start = *start;
                let text = std::mem::take(text);
                group = None;
                out.extend(group_modules(&text).into_iter().map(|m| (start, m)));
            }
            continue;
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(inner) = after.strip_prefix('{') {
                if inner.contains('}') {
                    out.extend(group_modules(inner).into_iter().map(|m| (*n, m)));
                } else {
                    group = Some((*n, inner.to_owned()));
                }
                break;
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((*n, name));
            }
            rest = after;
        }
    }
    out
}

/// The first path segment of each item of a `{ ... }` use group, at its top level
/// (`domain::Event, app::{App, Settings} }` -> `domain`, `app`).
fn group_modules(inner: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut item = String::new();
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => out.extend(first_segment(&std::mem::take(&mut item))),
            _ if depth == 0 => item.push(c),
            _ => {}
        }
    }
    out.extend(first_segment(&item));
    out
}

fn first_segment(item: &str) -> Option<String> {
    let name: String = item
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Every import in `files` (path relative to `src`, source) that points outwards.
fn violations(files: &[(PathBuf, String)]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (path, source) in files {
        if is_test_file(path) {
            continue;
        }
        let Some(from) = module_of(path) else {
            continue;
        };
        let Some(from_rank) = rank(&from) else {
            out.push(Violation {
                file: path.display().to_string(),
                line: 0,
                from: from.clone(),
                to: "(module missing from ORDER)".to_owned(),
            });
            continue;
        };
        for (line, to) in named_modules(&code_lines(source)) {
            if rank(&to).is_some_and(|r| r > from_rank) {
                out.push(Violation {
                    file: path.display().to_string(),
                    line,
                    from: from.clone(),
                    to,
                });
            }
        }
    }
    out
}

fn read_tree(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {dir:?}: {e}"));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            read_tree(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            let relative = path.strip_prefix(root).expect("under src").to_path_buf();
            out.push((relative, source));
        }
    }
}

#[test]
fn every_import_in_the_library_points_inwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_tree(&src, &src, &mut files);
    assert!(
        files.len() > 50,
        "expected the library's sources under {src:?}"
    );

    let modules: BTreeMap<String, usize> =
        files
            .iter()
            .filter_map(|(p, _)| module_of(p))
            .fold(BTreeMap::new(), |mut m, name| {
                *m.entry(name).or_default() += 1;
                m
            });
    for module in ORDER {
        assert!(
            modules.contains_key(*module),
            "ORDER names `{module}`, which is gone"
        );
    }

    let found = violations(&files);
    let report: Vec<String> = found
        .iter()
        .map(|v| format!("{}:{}: `{}` uses `crate::{}`", v.file, v.line, v.from, v.to))
        .collect();
    assert!(
        found.is_empty(),
        "imports against the order {ORDER:?} (innermost first):\n{}",
        report.join("\n")
    );
}

fn file(path: &str, source: &str) -> (PathBuf, String) {
    (PathBuf::from(path), source.to_owned())
}

#[test]
fn given_an_inner_module_using_an_outer_one_when_checked_then_the_line_is_reported() {
    let files = [file(
        "engine/mod.rs",
        "//! Docs naming crate::app are fine.\nuse crate::domain::Event;\n\nuse crate::ports::StepJob;\n",
    )];
    assert_eq!(
        violations(&files),
        vec![Violation {
            file: "engine/mod.rs".into(),
            line: 4,
            from: "engine".into(),
            to: "ports".into(),
        }]
    );
}

#[test]
fn given_grouped_and_multi_line_imports_when_checked_then_each_outer_module_is_reported() {
    let files = [file(
        "ports.rs",
        "use crate::{domain::Event, tools::Registry};\nuse crate::{\n    engine::Effect,\n    app::{App, Settings},\n};\nfn f() { crate::http::router(); }\n",
    )];
    let to: Vec<(usize, String)> = violations(&files)
        .into_iter()
        .map(|v| (v.line, v.to))
        .collect();
    assert_eq!(
        to,
        vec![
            (1, "tools".to_owned()),
            (2, "app".to_owned()),
            (6, "http".to_owned())
        ]
    );
}

#[test]
fn given_test_code_when_checked_then_it_may_use_anything() {
    let files = [
        file("engine/tests.rs", "use crate::adapters::local::MemoryStore;\n"),
        file("http/live_tests.rs", "use crate::config::Config;\n"),
        file(
            "domain/fold.rs",
            "use super::Event;\n#[cfg(test)]\nmod tests {\n    use crate::tools::Registry;\n    fn f() { if true { } }\n}\n",
        ),
        file("ports.rs", "#[cfg(test)]\nuse crate::app::App;\nuse crate::domain::Event;\n"),
    ];
    assert_eq!(violations(&files), Vec::new());
}

#[test]
fn given_a_module_missing_from_the_order_when_checked_then_it_is_reported() {
    let files = [file("newthing/mod.rs", "use crate::domain::Event;\n")];
    let found = violations(&files);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].from, "newthing");
}

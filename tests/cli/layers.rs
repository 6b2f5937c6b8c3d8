//! The house goes one way: every top-level module of `src/` has a layer,
//! and imports (test modules aside) go only to its own layer or a lower
//! one, with no cycle among the modules. README "Development" draws it.
//! And its pieces stay short: no function of `src/` over 80 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. A new module gets a line here, or this test fails.
const LAYERS: [(&str, &[&str]); 5] = [
    (
        "ground",
        &[
            "columns",
            "failpoint",
            "codes",
            "kind",
            "model",
            "incremental",
        ],
    ),
    ("protocols", &["api"]),
    (
        "engines",
        &[
            "input", "write", "table", "ledger", "report", "fetch", "journal",
        ],
    ),
    (
        "commands",
        &[
            "export", "discover", "runs", "mock", "listen", "vacuum", "verify",
        ],
    ),
    ("shell", &["cli", "job", "demo", "app"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The top-level module a file of `src/` belongs to (`None`: the roots).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The code of a file without its test module and comments (clippy's
/// `items_after_test_module`, denied in CI, keeps that module last).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a file's code names through `crate::`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        match rest.strip_prefix('{') {
            // `crate::{a::{b, c}, d}`: the paths at the group's own depth.
            Some(group) => {
                let (mut depth, mut start) = (0usize, 0);
                for (j, ch) in group.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            out.insert(ident(group[start..j].trim()));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            out.insert(ident(group[start..j].trim()));
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => {
                out.insert(ident(rest));
            }
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// Every source file of `src/`: its path there and its text.
fn sources() -> Vec<(std::path::PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut todo = vec![src.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.strip_prefix(&src).unwrap().to_owned(), text));
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources() {
        let Some(module) = module_of(&rel) else {
            continue;
        };
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(imports(&code(&text)).into_iter().filter(|m| *m != module));
    }
    graph
}

/// The functions of rustfmt'd code longer than `max` lines: (first line, name, lines).
fn long_functions(code: &str, max: usize) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let mut words = body.split_whitespace().peekable();
        while words
            .peek()
            .is_some_and(|w| w.starts_with("pub") || ["async", "const", "unsafe"].contains(w))
        {
            words.next();
        }
        // A declaration, or a body on its one line.
        if words.next() != Some("fn") || body.ends_with(';') || body.ends_with('}') {
            continue;
        }
        let name: String = words
            .next()
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{indent}}}");
        if let Some(end) = (i..lines.len()).find(|&j| lines[j] == close)
            && end - i + 1 > max
        {
            out.push((i + 1, name, end - i + 1));
        }
    }
    out
}

#[test]
fn no_function_is_over_80_lines() {
    let mut long = Vec::new();
    for (rel, text) in sources() {
        for (line, name, n) in long_functions(&code(&text), 80) {
            long.push(format!("src/{}:{line} {name}: {n} lines", rel.display()));
        }
    }
    assert!(long.is_empty(), "functions over 80 lines: {long:#?}");
    let made_up = format!(
        "pub(crate) async fn f() {{\n{}}}\nfn g() {{}}\n",
        "    x();\n".repeat(81)
    );
    assert_eq!(long_functions(&made_up, 80), [(1, "f".to_owned(), 83)]);
    // A one-line body is no function reaching to the next one's end.
    let one_liner = format!("fn g() {{}}\nfn h() {{\n{}}}\n", "    x();\n".repeat(78));
    assert!(long_functions(&one_liner, 80).is_empty());
}

#[test]
fn imports_go_down_the_layers_and_never_round() {
    let graph = graph();
    for module in graph.keys() {
        assert!(
            layer_of(module).is_some(),
            "src/{module} has no layer: give it one in tests/cli/layers.rs and README"
        );
    }
    let mut upward = Vec::new();
    for (from, tos) in &graph {
        for to in tos.iter().filter(|to| graph.contains_key(*to)) {
            if layer_of(to) > layer_of(from) {
                let name = |m: &str| LAYERS[layer_of(m).unwrap()].0;
                upward.push(format!("{from} ({}) -> {to} ({})", name(from), name(to)));
            }
        }
    }
    assert!(upward.is_empty(), "imports up the layers: {upward:#?}");
    let round = in_a_round(&graph);
    assert!(
        round.is_empty(),
        "modules importing each other round: {round:?}"
    );
}

/// The modules in or behind a cycle: take away modules that import none
/// of those left until no more can go.
fn in_a_round(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<&String> {
    let mut left: BTreeSet<&String> = graph.keys().collect();
    while let Some(free) = left
        .iter()
        .copied()
        .find(|m| graph[*m].iter().all(|to| !left.contains(to)))
    {
        left.remove(free);
    }
    left
}

#[test]
fn the_check_sees_an_import_up_and_a_cycle() {
    let text = "use crate::{api::Answer, write::Out};\nfn f() { crate::job::x(); }\n// crate::app\n#[cfg(test)]\nmod tests { use crate::demo; }";
    let found: Vec<String> = imports(&code(text)).into_iter().collect();
    assert_eq!(found, ["api", "job", "write"]);
    assert!(layer_of("job") > layer_of("write"));
    assert_eq!(
        module_of(Path::new("write/delta.rs")).as_deref(),
        Some("write")
    );
    assert_eq!(module_of(Path::new("lib.rs")), None);
    let nested = "use crate::{api::{Answer, Secret}, write::Out, job};";
    let found: Vec<String> = imports(nested).into_iter().collect();
    assert_eq!(found, ["api", "job", "write"]);
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            g.entry(to.to_string()).or_default();
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string());
        }
        g
    };
    let line = graph(&[("app", "export"), ("export", "write"), ("app", "write")]);
    assert!(in_a_round(&line).is_empty());
    let round = graph(&[("app", "export"), ("export", "write"), ("write", "export")]);
    let found: Vec<&str> = in_a_round(&round).into_iter().map(String::as_str).collect();
    assert_eq!(found, ["app", "export", "write"]);
}

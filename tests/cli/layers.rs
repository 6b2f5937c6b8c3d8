//! The house goes one way: every top-level module of `src/` has a layer,
//! and imports (test modules aside) go only to its own layer or a lower
//! one, with no cycle among the modules. README "Development" draws it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lowest first. A new module gets a line here, or this test fails.
const LAYERS: [(&str, &[&str]); 6] = [
    ("ground", &["columns", "failpoint"]),
    ("protocol", &["api"]),
    ("domain", &["kind", "model", "incremental"]),
    (
        "engines",
        &["input", "write", "table", "ledger", "report", "fetch"],
    ),
    ("commands", &["export", "discover", "runs", "mock"]),
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
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                out.extend(group.split(',').map(|p| ident(p.trim())));
            }
            None => {
                out.insert(ident(rest));
            }
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut todo = vec![src.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let Some(module) = module_of(path.strip_prefix(&src).unwrap()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let edges = graph.entry(module.clone()).or_default();
            edges.extend(imports(&code(&text)).into_iter().filter(|m| *m != module));
        }
    }
    graph
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
    // No cycle within a layer either: take away modules that import none
    // of those left until nothing is left.
    let mut left: BTreeSet<&String> = graph.keys().collect();
    while let Some(free) = left
        .iter()
        .copied()
        .find(|m| graph[*m].iter().all(|to| !left.contains(to)))
    {
        left.remove(free);
    }
    assert!(
        left.is_empty(),
        "modules importing each other round: {left:?}"
    );
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
}

//! The core's layers point one way (docs/ARCHITECTURE.md): no module names a
//! module above it, directly or through a name the crate root re-exports.
//! Comments are not code and are skipped (doc links may point anywhere).

use std::collections::HashMap;
use std::path::Path;

/// Each top-level module of `src/` and its rank; a module may name modules
/// of its own rank or below.
const RANKS: &[(&str, u8)] = &[
    ("auth", 0),
    ("codec", 0),
    ("wire", 1),
    ("config", 1),
    ("trace", 1),
    ("mux", 2),
    ("transport", 2),
    ("conn", 3),
    ("chan", 4),
    ("node", 5),
    ("cluster", 6),
];

/// Names the crate root re-exports, and the module each comes from.
const ROOT: &[(&str, &str)] = &[
    ("Cookie", "auth"),
    ("Config", "config"),
    ("ConfigError", "config"),
    ("ReconnectPolicy", "config"),
    ("WireError", "wire"),
    ("ProtocolError", "mux"),
    ("Accepted", "conn"),
    ("Acceptor", "conn"),
    ("ConnectError", "conn"),
    ("Connection", "conn"),
    ("ConnectionError", "conn"),
    ("ConnectionEvent", "conn"),
    ("ConnectionStats", "conn"),
    ("Role", "conn"),
    ("SessionLost", "conn"),
    ("mpsc", "chan"),
    ("oneshot", "chan"),
    ("watch", "chan"),
    ("RecvError", "chan"),
    ("ActorExit", "node"),
    ("ActorId", "node"),
    ("AskError", "node"),
    ("AskPermit", "node"),
    ("LookupError", "node"),
    ("Mailbox", "node"),
    ("Monitor", "node"),
    ("NameTaken", "node"),
    ("Node", "node"),
    ("NodeStats", "node"),
    ("RemoteError", "node"),
    ("RemoteMessage", "node"),
    ("RemoteRef", "node"),
    ("ReplyPort", "node"),
    ("TellError", "node"),
    ("WatchEvent", "node"),
];

/// Every `crate::name` the code names, with the byte offset where it is
/// named; the text has its comments blanked out already.
fn named(code: &str) -> Vec<(usize, &str)> {
    let ident = |s: &str| s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, d::{e, f}}`: the head of each top-level item.
            let (mut depth, mut start) = (0, 0);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        let item = group[start..i].trim_start();
                        found.push((at, &item[..ident(item)]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let item = group[start..i].trim_start();
                        found.push((at, &item[..ident(item)]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push((at, &rest[..ident(rest)]));
        }
    }
    found.retain(|(_, name)| !name.is_empty());
    found
}

/// `text` with every `//` comment blanked out, lines kept.
fn code_of(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The violations in the tree under `src`.
fn climbs(src: &Path) -> Vec<String> {
    let ranks: HashMap<&str, u8> = RANKS.iter().copied().collect();
    let root: HashMap<&str, &str> = ROOT.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let module = rel.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs");
        let Some(&rank) = ranks.get(module) else { continue }; // lib.rs, fuzz.rs
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for (at, name) in named(&code) {
            let target = root.get(name).copied().unwrap_or(name);
            if ranks.get(target).is_some_and(|&above| above > rank) {
                let line = code[..at].matches('\n').count() + 1;
                found.push(format!("{}:{line}: {module} names {target} ({name})", rel.display()));
            }
        }
    }
    found
}

#[test]
fn no_module_names_a_module_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = climbs(&src);
    assert!(found.is_empty(), "imports that climb a layer:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_direct_grouped_and_re_exported_names() {
    let names = |text: &str| named(&code_of(text)).into_iter().map(|(_, n)| n.to_owned()).collect::<Vec<_>>();
    assert_eq!(names("use crate::node::Node;"), ["node"]);
    assert_eq!(names("use crate::{\n    Connection,\n    wire::{End, PortId},\n};"), ["Connection", "wire"]);
    assert_eq!(names("    // crate::node in a comment"), Vec::<String>::new());
    let dir = std::env::temp_dir().join(format!("tether-layers-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mux")).unwrap();
    std::fs::write(dir.join("mux/x.rs"), "/// [`Node`](crate::Node)\nuse crate::{mux::Mux, ConnectError};\n").unwrap();
    let found = climbs(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found, ["mux/x.rs:2: mux names conn (ConnectError)"]);
}

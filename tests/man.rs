//! `man/` must be what the CLI definition renders today. `REIN_BLESS=1` rewrites it.

use std::path::Path;

#[test]
fn man_pages_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages = rein::cli::man::render_all();
    pages.extend(rein::cli::man::render_bridges(Path::new(env!(
        "CARGO_MANIFEST_DIR"
    ))));
    pages.sort();
    if std::env::var_os("REIN_BLESS").is_some() {
        for entry in std::fs::read_dir(&dir).expect("man/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e != "md") {
                std::fs::remove_file(path).expect("remove stale page");
            }
        }
        for (name, bytes) in &pages {
            std::fs::write(dir.join(name), bytes).expect("write page");
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("man/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".md"))
        .collect();
    on_disk.sort();
    let expected: Vec<String> = pages.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(
        on_disk, expected,
        "man/ has stale or missing pages; run REIN_BLESS=1 cargo test --test man"
    );
    for (name, bytes) in &pages {
        let current = std::fs::read(dir.join(name)).expect("read page");
        assert!(
            current == *bytes,
            "man/{name} is stale; run REIN_BLESS=1 cargo test --test man"
        );
    }
    assert!(expected.contains(&"rein-ask.1".to_owned()));
    assert!(expected.contains(&"rein-goal-write.1".to_owned()));
    for bridge in ["slack", "sms", "email", "konsole"] {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("bridges")
            .join(bridge);
        if crate_dir.join("src/lib.rs").exists() {
            assert!(
                expected.contains(&format!("rein-bridge-{bridge}.1")),
                "a page for the {bridge} bridge"
            );
        }
    }
}

/// Issue 8, item 19: a code block indented under a list item (the email bridge's config
/// example) stays a code block; its `# …` comment lines are not headings.
#[test]
fn indented_code_blocks_stay_code() {
    let pages = rein::cli::man::render_bridges(Path::new(env!("CARGO_MANIFEST_DIR")));
    let (_, email) = pages
        .iter()
        .find(|(name, _)| name == "rein-bridge-email.1")
        .expect("the email bridge's page");
    let email = String::from_utf8_lossy(email);
    assert!(!email.contains(".SH SMTP_PORT"), "{email}");
    assert!(!email.contains(".SH [BRIDGES"), "{email}");
    let start = email.find(".nf").expect("a code block");
    let block = &email[start
        ..email[start..]
            .find(".fi")
            .map_or(email.len(), |end| start + end)];
    assert!(
        block.contains("[bridges.email]") && block.contains("# smtp_port"),
        "{block}"
    );
    let rendered = rein::cli::man::markdown_to_roff(
        "t",
        &[
            "Summary.",
            "",
            "1. A step:",
            "   ```toml",
            "   # a comment",
            "   key = 1",
            "   ```",
            "2. Next.",
        ],
    );
    assert!(!rendered.contains(".SH A COMMENT"), "{rendered}");
    assert!(
        rendered.contains(".nf\n# a comment\nkey = 1\n.fi"),
        "{rendered}"
    );
}

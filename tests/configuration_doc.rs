//! `docs/configuration.md` is generated from the command line's own help, and
//! this test keeps it current. Regenerate with
//! `SHOAL_UPDATE_DOCS=1 cargo test --test configuration_doc`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::CommandFactory;
use shoal::cli::Cli;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");

fn render() -> String {
    let mut cli = Cli::command().term_width(100);
    cli.build();
    let mut out = String::from(
        "# Configuration\n\nEvery flag is also an environment variable (shown as `[env: ...]`).\n\
         This file is generated from `shoal --help`; `tests/configuration_doc.rs` keeps it current.\n",
    );
    for name in ["run", "configure", "cleanup", "version"] {
        let sub = cli.find_subcommand_mut(name).expect("subcommand exists");
        let help = sub.render_long_help().to_string();
        out.push_str(&format!("\n## `shoal {name}`\n\n```text\n{}\n```\n", help.trim_end()));
    }
    out
}

#[test]
fn configuration_doc_matches_the_help() {
    let rendered = render();
    if std::env::var_os("SHOAL_UPDATE_DOCS").is_some() {
        std::fs::write(DOC, &rendered).unwrap();
        return;
    }
    let current = std::fs::read_to_string(DOC).unwrap_or_default();
    assert!(
        current == rendered,
        "docs/configuration.md is out of date: run `SHOAL_UPDATE_DOCS=1 cargo test --test configuration_doc`"
    );
}

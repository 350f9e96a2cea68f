//! Every operator against the reference fixtures: `opc verify --fixtures ../shared/fixtures`.

use std::path::Path;
use std::process::Command;

#[test]
fn verify_all_fixtures() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
    if !Path::new(dir).join("ops").is_dir() {
        println!("skipping: fixture directory {dir} not found");
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_opc")).args(["verify", "--fixtures", dir]).output().expect("run opc");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    println!("{out}");
    eprintln!("{err}");
    let lines: Vec<&str> = out.lines().collect();
    let (summary, results) = lines.split_last().expect("no output");
    assert!(summary.ends_with(" passed, 0 failed"), "summary: {summary}");
    let results: Vec<&&str> = results.iter().filter(|l| !l.ends_with(": skipped (no operator registered)")).collect();
    assert!(!results.is_empty(), "no (case, kernel) lines");
    let bad: Vec<&&&str> = results.iter().filter(|l| !l.contains("  PASS  ")).collect();
    assert!(bad.is_empty(), "non-PASS lines:\n{}", bad.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n"));
    assert_eq!(o.status.code(), Some(0));
}

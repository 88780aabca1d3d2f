//! The deployment as it runs (issue 10): `template.yaml` rendered as CloudFormation would
//! deploy it (SAM's translator, then every condition and intrinsic resolved, see
//! [`crane_tests::infra::rendered`]), and `samconfig.toml` read with SAM CLI's own config
//! reader. Offline: needs only the tools venv that `./scripts/test` installs.

use crane_tests::infra::{describe, rendered, repo, run_tool};
use serde_json::Value;

/// The functions of the rendered template, by logical id.
fn lambda_functions(t: &Value) -> Vec<(&str, &Value)> {
    let fns: Vec<(&str, &Value)> = t["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Lambda::Function")
        .map(|(id, r)| (id.as_str(), r))
        .collect();
    assert!(!fns.is_empty(), "the rendered template has no functions");
    fns
}

// ---------------------------------------------------------------------------
// 1. One architecture for build and deploy
// ---------------------------------------------------------------------------

/// What `sam <command>` reads from samconfig.toml (environment `default`), by SAM CLI's
/// own reader (`samcli.lib.config.samconfig.SamConfig.get_all`).
const READ_SAMCONFIG: &str = r#"
import json, sys
from samcli.lib.config.samconfig import SamConfig
out = {}
for cmd in sys.argv[1:]:
    # A fresh reader per command: get_all merges the global section into its document.
    out[cmd] = SamConfig(".").get_all([cmd], "parameters")
json.dump(out, sys.stdout)
"#;

fn samconfig_for(commands: &[&str]) -> Value {
    let mut args = vec!["-c", READ_SAMCONFIG];
    args.extend_from_slice(commands);
    let out = run_tool("python", &args);
    assert!(
        out.status.success(),
        "reading samconfig.toml:\n{}",
        describe(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn architecture_of(parameter_overrides: &Value) -> Option<String> {
    parameter_overrides
        .as_str()?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("Architecture="))
        .map(|v| v.trim_matches('"').to_owned())
}

#[test]
fn sam_build_and_sam_deploy_read_the_same_architecture_from_samconfig() {
    let config = samconfig_for(&["build", "deploy", "sync"]);
    let build = architecture_of(&config["build"]["parameter_overrides"]);
    assert!(
        matches!(build.as_deref(), Some("arm64" | "x86_64")),
        "sam build reads no Architecture from samconfig.toml: it would build for the \
         template's default whatever sam deploy declares ({config})"
    );
    for cmd in ["deploy", "sync"] {
        assert_eq!(
            config[cmd]["parameter_overrides"], config["build"]["parameter_overrides"],
            "sam {cmd} and sam build read different parameter_overrides"
        );
    }
    // One place: the global section. A command section's parameter_overrides replaces the
    // global one for that command only (that is how build and deploy drift apart).
    let text = std::fs::read_to_string(repo().join("samconfig.toml")).expect("samconfig.toml");
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if line.starts_with("parameter_overrides") {
            assert_eq!(
                section, "[default.global.parameters]",
                "parameter_overrides belongs in [default.global.parameters] only"
            );
        }
    }
}

#[test]
fn the_readme_deploys_with_the_shared_parameters_for_either_architecture() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let deploy = readme
        .split("## Deploy to AWS")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a '## Deploy to AWS' section");
    for needle in [
        "[default.global.parameters]",
        "Architecture=arm64",
        "Architecture=x86_64",
        "aarch64-unknown-linux-gnu",
    ] {
        assert!(
            deploy.contains(needle),
            "the deploy section does not mention {needle}"
        );
    }
    assert!(
        !deploy.contains("--parameter-overrides Architecture"),
        "an Architecture passed to one command only is what makes build and deploy differ"
    );
}

// ---------------------------------------------------------------------------
// 5. Lambda's own START / REPORT lines
// ---------------------------------------------------------------------------

#[test]
fn every_function_keeps_lambdas_platform_report_lines() {
    let t = rendered(&[]);
    for (id, f) in lambda_functions(&t) {
        let logging = &f["Properties"]["LoggingConfig"];
        assert_eq!(logging["LogFormat"], "JSON", "{id}");
        // platform.start / platform.report (duration, memory, init duration) are INFO.
        assert!(
            matches!(
                logging["SystemLogLevel"].as_str(),
                Some("INFO" | "DEBUG") | None
            ),
            "{id}: SystemLogLevel {} drops Lambda's START/REPORT lines",
            logging["SystemLogLevel"]
        );
    }
}


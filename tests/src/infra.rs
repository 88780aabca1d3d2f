//! The deployment as files and tools: the repository root, the tools venv (`cfn-lint`,
//! `statelint`, `sam`; `./scripts/test` installs it under `.cache/venv`), [`run_sam`], and
//! `template.yaml` rendered the way CloudFormation would deploy it.
//!
//! [`rendered`] runs `tests/tools/render_template.py` with the venv's Python: SAM's own
//! translator (the code `sam deploy` runs) turns the template into plain CloudFormation,
//! then every condition and intrinsic function is resolved for the given parameter values.
//! What only a deployment knows (a resource's ARN, a queue's name) gets a stand-in:
//! `arn:<partition>:stand-in:<region>:<account>:<LogicalId>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository")
        .to_path_buf()
}

/// A command of the tools venv; fails the test with what to do if it is missing.
pub fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("CRANE_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/venv"));
    let path = venv.join("bin").join(tool);
    assert!(
        path.is_file(),
        "{} is missing: install the tools: ./scripts/test does it \
         (or point CRANE_TOOLS_VENV at a venv with cfn-lint, statelint and aws-sam-cli)",
        path.display()
    );
    path
}

/// Run a tool of the venv in the repository root.
pub fn run_tool(tool: &str, args: &[&str]) -> Output {
    let bin = venv_bin(tool);
    Command::new(&bin)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", bin.display()))
}

/// Run the venv's `sam` (aws-sam-cli) in the repository root, offline: no telemetry, and a
/// scratch `HOME` (`.cache/sam-home`, or under `CRANE_CACHE`) since SAM writes under
/// `~/.aws-sam`. It needs no region or credentials to validate.
pub fn run_sam(args: &[&str]) -> Output {
    let bin = venv_bin("sam");
    let cache = std::env::var_os("CRANE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache"));
    let home = cache.join("sam-home");
    std::fs::create_dir_all(&home)
        .unwrap_or_else(|e| panic!("could not create {}: {e}", home.display()));
    Command::new(&bin)
        .args(args)
        .current_dir(repo())
        .env("HOME", &home)
        .env("SAM_CLI_TELEMETRY", "0")
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", bin.display()))
}

/// Exit status and both outputs, for an assertion message.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `template.yaml` as deployed with these parameter values (template parameters, and
/// pseudo parameters such as `AWS::Partition` or `AWS::Region`; the rest take their
/// defaults, `us-east-1`, account `123456789012`, partition `aws`, stack `crane`):
/// `{"Resources": {...}, "Outputs": {...}}`, with conditional resources left out.
pub fn rendered(parameters: &[(&str, &str)]) -> Value {
    static CACHE: OnceLock<Mutex<HashMap<String, Value>>> = OnceLock::new();
    let overrides: serde_json::Map<String, Value> = parameters
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect();
    let key = Value::Object(overrides).to_string();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().expect("lock").get(&key) {
        return v.clone();
    }
    let script = repo().join("tests/tools/render_template.py");
    let out = run_tool(
        "python",
        &[script.to_str().expect("utf-8 path"), "template.yaml", &key],
    );
    assert!(
        out.status.success(),
        "rendering template.yaml with {key}:\n{}",
        describe(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the rendered template is JSON");
    cache.lock().expect("lock").insert(key, v.clone());
    v
}

/// The inline policy statements of a rendered IAM role, flattened.
pub fn role_statements(rendered: &Value, role: &str) -> Vec<Value> {
    let policies = rendered["Resources"][role]["Properties"]["Policies"]
        .as_array()
        .unwrap_or_else(|| panic!("the rendered template has no role {role} with Policies"));
    policies
        .iter()
        .flat_map(|p| match &p["PolicyDocument"]["Statement"] {
            Value::Array(s) => s.clone(),
            other => vec![other.clone()],
        })
        .collect()
}

/// A statement's `Action` or `Resource` as a list of strings.
pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// The resources `role` may perform `action` on, with each statement's `Condition`
/// (`Value::Null` when unconditional).
pub fn grants(rendered: &Value, role: &str, action: &str) -> Vec<(String, Value)> {
    role_statements(rendered, role)
        .into_iter()
        .filter(|s| s["Effect"] == "Allow" && strings(&s["Action"]).iter().any(|a| a == action))
        .flat_map(|s| {
            let condition = s.get("Condition").cloned().unwrap_or(Value::Null);
            strings(&s["Resource"])
                .into_iter()
                .map(move |r| (r, condition.clone()))
        })
        .collect()
}

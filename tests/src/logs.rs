//! Log setup of every test: the code under test logs through `tracing`, and a test prints
//! those logs to stderr only when `TEST_LOG` is set.

/// Logs go to stderr only when `TEST_LOG` is set. Safe to call from every test: the first
/// call in a process installs the subscriber, later calls do nothing more.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        crane::telemetry::init(crane::config::LogFormat::Text);
    }
}

//! Unique names for everything a test creates (tenants, runs, keys, tables, queues, state
//! machines, secrets, files), so tests never see each other's data and run in parallel.

/// `<what>-<32 hex digits>`: a name no other test uses.
pub fn unique(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_prefix_when_two_names_are_made_then_both_start_with_it_and_differ() {
        let (a, b) = (unique("tenant"), unique("tenant"));
        assert!(
            a.starts_with("tenant-") && b.starts_with("tenant-"),
            "{a} {b}"
        );
        assert_eq!(a.len(), "tenant-".len() + 32);
        assert_ne!(a, b);
    }
}

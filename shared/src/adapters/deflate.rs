//! DEFLATE for stored JSON, shared by the stores: a run's JSON shrinks to a third or less.
//! DynamoDB bills a write per started KB of an item; the embedded store keeps each finished
//! run in a few hundred bytes on disk.

use std::io::{Read as _, Write as _};

/// The most bytes a stored value may inflate to: far above any run (a DynamoDB item is at
/// most 400 KB compressed), so only a corrupt value reaches it.
pub(crate) const INFLATED_MAX: u64 = 64 << 20;

/// How hard to compress. `fast` favours the writer's time (the embedded store compresses on
/// its hot path); `default` the bytes (DynamoDB bills them).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) enum Effort {
    Fast,
    Default,
}

/// `bytes`, deflated.
pub(crate) fn deflate(bytes: &[u8], effort: Effort) -> std::io::Result<Vec<u8>> {
    let level = match effort {
        Effort::Fast => flate2::Compression::fast(),
        Effort::Default => flate2::Compression::default(),
    };
    let mut z = flate2::write::DeflateEncoder::new(Vec::with_capacity(bytes.len() / 3), level);
    z.write_all(bytes)?;
    z.finish()
}

/// What [`deflate`] was given, or why `bytes` are not a deflated value (not DEFLATE, or
/// inflating past [`INFLATED_MAX`]).
pub(crate) fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::DeflateDecoder::new(bytes)
        .take(INFLATED_MAX + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > INFLATED_MAX {
        return Err(format!("inflates past {INFLATED_MAX} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_json_when_deflated_then_it_inflates_back_and_is_smaller() {
        let json = serde_json::to_vec(&serde_json::json!({
            "steps": (0..20).map(|i| serde_json::json!({"id": format!("s{i}"), "tool": "calculator"})).collect::<Vec<_>>()
        }))
        .expect("json");
        for effort in [Effort::Fast, Effort::Default] {
            let z = deflate(&json, effort).expect("deflate");
            assert!(
                z.len() * 3 < json.len(),
                "{effort:?}: {} of {}",
                z.len(),
                json.len()
            );
            assert_eq!(inflate(&z), Ok(json.clone()));
        }
    }

    #[test]
    fn given_bytes_that_are_not_deflate_when_inflated_then_it_says_so() {
        assert!(inflate(&[0xff; 16]).is_err());
    }
}

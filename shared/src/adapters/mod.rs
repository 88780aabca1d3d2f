//! Implementations of the [`crate::ports`]: `local` (embedded SQLite and in-memory) and
//! `aws` (DynamoDB, SQS, Step Functions; feature `aws`).

pub mod local;

pub(crate) mod deflate;

#[cfg(feature = "aws")]
pub mod aws;

/// The cursor of a todo listing, shared by every [`crate::ports::TodoStore`]: the id of
/// the last todo of the page, as opaque base64url JSON. A cursor is checked on the way
/// back in, so anything but one of these is [`crate::ports::StoreError::Invalid`].
pub(crate) mod todo_cursor {
    use base64::Engine as _;
    use serde::{Deserialize, Serialize};

    use crate::ports::StoreError;

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cursor {
        todo_after: u64,
    }

    pub(crate) fn encode(last_id: u64) -> String {
        let json = serde_json::to_vec(&Cursor {
            todo_after: last_id,
        })
        .unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// The id the page after `cursor` starts after.
    pub(crate) fn decode(cursor: &str) -> Result<u64, StoreError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|b| serde_json::from_slice::<Cursor>(&b).ok())
            .map(|c| c.todo_after)
            .filter(|id| *id >= 1)
            .ok_or_else(|| {
                StoreError::Invalid("cursor is not one this server issued for todos".into())
            })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn given_an_issued_cursor_when_decoded_then_it_names_the_same_id() {
            assert_eq!(decode(&encode(42)), Ok(42));
        }

        #[test]
        fn given_anything_else_when_decoded_then_it_is_invalid() {
            let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            for bad in [
                "".to_owned(),
                "%%%".to_owned(),
                b64("garbage"),
                b64("{}"),
                b64(r#"{"todo_after": 0}"#),
                b64(r#"{"todo_after": -1}"#),
                b64(r#"{"todo_after": "3"}"#),
                b64(r#"{"todo_after": 3, "x": 1}"#),
                b64(r#"{"created_at": "2026-01-01T00:00:00Z", "run_id": "r"}"#),
            ] {
                assert!(matches!(decode(&bad), Err(StoreError::Invalid(_))), "{bad}");
            }
        }
    }
}

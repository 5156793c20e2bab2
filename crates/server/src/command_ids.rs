//! The request headers that carry a command's ids into `POST /apply`: `Idempotency-Key` (the
//! command id), `X-Correlation-Id`, `X-Causation-Id`, and W3C Trace Context's `traceparent`
//! (its trace id as the correlation id, its parent id as the causation id, when neither is
//! given otherwise); and the answer's `Idempotent-Replayed: true` on a replay.

use axum::http::{HeaderMap, StatusCode};

use crate::error::ApiError;

/// The response header that marks a replayed command (its id was already applied).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// What the headers say: `explicit` ids (a clash with the body's is an error) and `ambient`
/// ones from `traceparent` (the body's and the explicit headers' win).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct HeaderIds {
    /// From `Idempotency-Key`, `X-Correlation-Id`, `X-Causation-Id`.
    pub explicit: engine::CommandIds,
    /// From `traceparent`.
    pub ambient: engine::CommandIds,
}

/// Reads the id headers. A value that is not one valid token is a `400 bad_command`; a
/// malformed `traceparent` is ignored, as W3C Trace Context asks of a receiver.
pub fn from_headers(headers: &HeaderMap) -> Result<HeaderIds, ApiError> {
    let text = |name: &'static str, what: &'static str| -> Result<Option<String>, ApiError> {
        let Some(value) = headers.get(name) else {
            return Ok(None);
        };
        let value = value
            .to_str()
            .map_err(|_| bad(what, "it is not ASCII"))?
            .trim();
        // Idempotency-Key is a structured-field string: `"key"`; a bare token is taken too.
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        engine::check_id(what, value).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_command",
                format!("{name}: {e}"),
            )
        })?;
        Ok(Some(value.to_owned()))
    };
    let explicit = engine::CommandIds {
        id: text("idempotency-key", "command id")?,
        correlation_id: text("x-correlation-id", "correlation id")?,
        causation_id: text("x-causation-id", "causation id")?,
    };
    let ambient = match headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
    {
        Some((trace_id, parent_id)) => engine::CommandIds {
            id: None,
            correlation_id: Some(trace_id.to_owned()),
            causation_id: Some(parent_id.to_owned()),
        },
        None => engine::CommandIds::default(),
    };
    Ok(HeaderIds { explicit, ambient })
}

fn bad(what: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_command",
        format!("the {what} header is invalid: {why}"),
    )
}

/// A W3C `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`): its trace id
/// and parent id, or `None` when it is malformed (lowercase hex only, neither id all zeros,
/// version `ff` invalid; a later version may append fields after the flags).
pub fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let value = value.trim();
    let mut parts = value.splitn(5, '-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && nonzero(trace_id)
        && hex(parent_id, 16)
        && nonzero(parent_id)
        && hex(flags, 2)
        // Version 00 has exactly four fields.
        && (rest.is_none() || version != "00");
    valid.then_some((trace_id, parent_id))
}

#[cfg(test)]
mod tests {
    use super::parse_traceparent;
    use proptest::prelude::*;

    #[test]
    fn the_w3c_example_parses_and_malformed_ones_do_not() {
        let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(example),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(parse_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        )
        .is_some());
    }

    proptest! {
        /// Never panics, and whatever it accepts is a valid correlation and causation id.
        #[test]
        fn any_text_is_parsed_or_refused_never_mis_taken(value in "\\PC{0,80}") {
            if let Some((trace_id, parent_id)) = parse_traceparent(&value) {
                prop_assert!(engine::check_id("correlation id", trace_id).is_ok());
                prop_assert!(engine::check_id("causation id", parent_id).is_ok());
                prop_assert_eq!(trace_id.len(), 32);
                prop_assert_eq!(parent_id.len(), 16);
            }
        }

        /// Every well-formed version 00 header gives back its two ids.
        #[test]
        fn well_formed_headers_round_trip(
            trace in "[0-9a-f]{31}[1-9a-f]",
            parent in "[1-9a-f][0-9a-f]{15}",
            flags in "[0-9a-f]{2}",
        ) {
            let header = format!("00-{trace}-{parent}-{flags}");
            prop_assert_eq!(parse_traceparent(&header), Some((trace.as_str(), parent.as_str())));
        }
    }
}

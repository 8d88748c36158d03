//! What every target checks of a refusal: it is a client error (4xx), never a 5xx or a panic.
#![allow(dead_code)] // each target uses part of it

use axum::response::IntoResponse;
use controller::http::AppError;
use controller::intake::Invalid;

/// A refused body must be answered with a 4xx status.
pub fn refused(e: Invalid) {
    let shown = format!("{e:?}");
    let status = AppError::from(e).into_response().status();
    assert!(
        status.is_client_error(),
        "refusal with status {status}: {shown}"
    );
}

/// The agent a body is posted as, chosen by the input's first byte (small ids, so the fuzzer
/// can also write bodies that name the same agent).
pub fn agent_of(data: &[u8]) -> Option<(u64, u64, &[u8])> {
    let (&who, body) = data.split_first()?;
    Some((u64::from(who >> 4), u64::from(who & 0x0f), body))
}

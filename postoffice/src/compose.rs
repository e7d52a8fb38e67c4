//! STUB (replaced by the real module).
use hedwig::envelope::Envelope;
use std::collections::BTreeMap;
use std::time::SystemTime;
/// JSON message.
#[derive(serde::Deserialize, Debug)]
pub struct JsonMessage {
    pub from: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}
/// Error.
#[derive(Debug)]
pub enum ComposeError {
    BadRequest(String),
    Unprocessable(String),
}
/// Compose.
pub fn compose(
    _m: &JsonMessage,
    _id: &str,
    _d: SystemTime,
) -> Result<(Envelope, Vec<u8>), ComposeError> {
    Err(ComposeError::Unprocessable("stub".into()))
}

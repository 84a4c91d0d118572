//! JSON → typed specs, with the pointer of the member at fault in every error.

use serde_json::Value;

use super::SpecError;

/// Converts a `serde_path_to_error` path (`layers[0].stride`) into a JSON Pointer
/// (`/layers/0/stride`).
pub fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { variant } => {
                out.push('/');
                out.push_str(variant);
            }
            // Where the parser lost track (malformed JSON before any member): the pointer
            // stops at the deepest member it knew, which the message's line and column
            // complete (it was `/?`, which names nothing).
            Segment::Unknown => break,
        }
    }
    out
}

/// Parses JSON into `T`. Syntax errors and truncated bodies are malformed (400); a
/// well-formed document that does not fit the schema (unknown fields, wrong types, ragged
/// arrays, numbers that are not finite in float32) is invalid (422). Both carry the pointer
/// of the member at fault, prefixed with `base` (e.g. the multipart part name).
///
/// # Errors
/// [`SpecError::Malformed`] or [`SpecError::Invalid`].
pub fn from_slice<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    base: &str,
) -> Result<T, SpecError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let pointer = format!("{base}{}", json_pointer(e.path()));
        let inner = e.into_inner();
        let shown = if pointer.is_empty() { "/" } else { &pointer };
        if inner.is_data() {
            SpecError::invalid(format!("`{shown}`: {inner}"), pointer)
        } else {
            SpecError::malformed(format!("malformed JSON: {inner}"), pointer)
        }
    })?;
    // Without this, `{...} garbage` would be accepted: one document, then only whitespace.
    de.end()
        .map_err(|e| SpecError::malformed(format!("malformed JSON: {e}"), base))?;
    Ok(value)
}

/// Deserializes an already-parsed JSON value (small specs), with the same error mapping
/// as [`from_slice`]; pointers are prefixed with `base`.
///
/// # Errors
/// [`SpecError::Invalid`].
pub fn from_value<T: serde::de::DeserializeOwned>(
    value: Value,
    base: &str,
) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = format!("{base}{}", json_pointer(e.path()));
        let shown = if pointer.is_empty() {
            "/".to_string()
        } else {
            pointer.clone()
        };
        SpecError::invalid(format!("`{shown}`: {}", e.into_inner()), pointer)
    })
}

//! What every remote backend does with the text it read: pick the `#KEY` of a JSON object,
//! refuse an empty value. Messages name keys, never values.

/// `#KEY` of a JSON object secret. A string field is taken as is; any other JSON value as its
/// JSON text. Messages list key names (never values).
#[cfg_attr(
    not(any(feature = "aws", feature = "gcp", feature = "azure")),
    allow(dead_code)
)]
pub(crate) fn json_field(text: &str, key: &str) -> Result<String, String> {
    let parsed: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        format!("the secret is not JSON, so `#{key}` cannot pick a field: drop `#{key}` to take the whole value")
    })?;
    let serde_json::Value::Object(map) = parsed else {
        return Err(format!(
            "the secret is JSON but not an object, so `#{key}` cannot pick a field"
        ));
    };
    match map.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => {
            // Key names only when they read as names: a secret may map tokens to anything,
            // and a key may hold escape sequences (review 15, F9).
            let names: Vec<&str> = map
                .keys()
                .map(String::as_str)
                .filter(|k| {
                    k.len() <= 40
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                })
                .take(20)
                .collect();
            Err(format!(
                "the JSON secret has no key `{key}` (keys there: {}): fix the `#KEY` part of the source",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_keys() {
        assert_eq!(json_field(r#"{"a":"x","n":3}"#, "a").unwrap(), "x");
        assert_eq!(json_field(r#"{"a":"x","n":3}"#, "n").unwrap(), "3");
        let e = json_field(r#"{"a":"secret-value"}"#, "b").unwrap_err();
        assert!(
            e.contains("no key `b`") && e.contains("keys there: a"),
            "{e}"
        );
        assert!(!e.contains("secret-value"));
        let e = json_field("plain-secret", "b").unwrap_err();
        assert!(e.contains("not JSON") && !e.contains("plain-secret"), "{e}");
    }
}

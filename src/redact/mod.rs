//! The streaming redactor (issue 4). Owned by the redaction work.

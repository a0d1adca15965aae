//! The JSON Schema of the policy file, for editors (yaml-language-server) and CI.
pub fn json_schema() -> serde_json::Value {
    serde_json::json!({})
}

//! The JSON Schema (draft 2020-12) of the policy file, for editors (yaml-language-server) and
//! CI. `pgveil policy schema` prints it. Semantic checks (unknown level names, unclassified
//! columns, ...) need `pgveil policy check`; the schema covers shape, keys and enumerations.
use crate::mask::mask_names;
use crate::model::{Action, EncryptMode, Kind};
use serde_json::{json, Value};

fn string_or_list(desc: &str, items: Value) -> Value {
    json!({
        "description": desc,
        "oneOf": [ items.clone(), { "type": "array", "items": items, "minItems": 1 } ]
    })
}

pub fn json_schema() -> Value {
    let actions: Vec<&str> = Action::NAMES.to_vec();
    let kinds: Vec<&str> = Kind::NAMES.to_vec();
    let mask = json!({
        "type": "string",
        "description": format!(
            "A mask expression: a kind name, keep(FIRST,LAST), redact, constant(VALUE) or hash. Known names: {}",
            mask_names().collect::<Vec<_>>().join(", ")
        ),
        "pattern": "^\\s*(cn_id_card|cn_mobile|cn_name|bank_card|email|passport|address|pnr|waybill|date|text|redact|hash|keep\\(\\s*\\d+\\s*,\\s*\\d+\\s*\\)|constant\\(.*\\))\\s*$"
    });
    let column = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["level"],
        "properties": {
            "level": { "type": "string", "description": "One of the names under `levels`." },
            "kind": { "enum": kinds, "default": "text", "description": "What the column holds; picks the default mask." },
            "encrypt": { "enum": EncryptMode::NAMES, "default": "none",
                         "description": "deterministic keeps equality search and joins working; randomized reveals nothing." },
            "domain": { "type": "string", "description": "Key domain (default: the kind). Deterministic columns with the same domain join." },
            "mask": mask
        }
    });
    let rule = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["roles", "action"],
        "oneOf": [ { "required": ["level"] }, { "required": ["kinds"] }, { "required": ["columns"] } ],
        "properties": {
            "name": { "type": "string", "description": "Shown in deny messages and the audit log." },
            "roles": string_or_list("Policy role names, or \"*\" alone for every login.", json!({ "type": "string" })),
            "level": string_or_list("Applies to columns of these levels.", json!({ "type": "string" })),
            "kinds": string_or_list("Applies to columns of these kinds.", json!({ "enum": kinds })),
            "columns": string_or_list("Applies to these columns (schema.table.column).",
                                      json!({ "type": "string", "pattern": "^[^.\\s]+(\\.[^.\\s]+)?\\.[^.\\s]+$" })),
            "action": { "enum": actions },
            "lookup": { "type": "boolean", "default": false,
                        "description": "With action mask: allow equality predicates on deterministic columns." },
            "mask": mask
        }
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://pgveil.invalid/policy.schema.json",
        "title": "pgveil policy",
        "description": "Which columns are sensitive, how they are stored, and which roles may see what. See docs/policy.md.",
        "type": "object",
        "additionalProperties": false,
        "required": ["version", "levels", "tables", "defaults"],
        "properties": {
            "version": { "const": 1 },
            "levels": { "type": "array", "items": { "type": "string" }, "minItems": 1, "uniqueItems": true,
                        "description": "Most to least sensitive, e.g. [core, important, general]." },
            "roles": {
                "type": "object",
                "description": "Policy roles: lists of Postgres login names, globs (support_*) or Postgres group roles.",
                "additionalProperties": string_or_list("Members.", json!({ "type": "string" }))
            },
            "tables": {
                "type": "object",
                "description": "schema.table (or table, meaning public.table) -> column -> classification.",
                "additionalProperties": { "type": "object", "minProperties": 1, "additionalProperties": column }
            },
            "rules": { "type": "array", "items": rule },
            "defaults": {
                "type": "object",
                "description": "The action per level when no rule matches.",
                "additionalProperties": { "enum": actions }
            },
            "anomaly": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name"],
                    "oneOf": [
                        { "required": ["max_rows", "per"] },
                        { "required": ["max_denied", "per"] },
                        { "required": ["hours"] }
                    ],
                    "properties": {
                        "name": { "type": "string" },
                        "level": { "type": "string" },
                        "roles": string_or_list("Only these policy roles (default: every login).", json!({ "type": "string" })),
                        "max_rows": { "type": "integer", "minimum": 1 },
                        "max_denied": { "type": "integer", "minimum": 1 },
                        "hours": { "type": "string", "pattern": "^\\d{1,2}:\\d{2}\\s*-\\s*\\d{1,2}:\\d{2}$", "description": "Allowed local hours, HH:MM-HH:MM (may run past midnight)." },
                        "days": string_or_list("Allowed weekdays, e.g. mon-fri (default: every day).", json!({ "type": "string" })),
                        "timezone": { "type": "string", "description": "IANA time zone of `hours` (default: UTC)." },
                        "per": { "type": "string", "pattern": "^\\d*\\s*[smhd]$" },
                        "then": { "enum": ["log", "deny"], "default": "log" }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_lists_every_kind_and_action() {
        let s = super::json_schema().to_string();
        for k in crate::model::Kind::NAMES
            .iter()
            .chain(crate::model::Action::NAMES.iter())
        {
            assert!(s.contains(&format!("\"{k}\"")), "{k}");
        }
        assert!(s.contains("\"additionalProperties\":false"));
    }
}

//! `-c build.toml`: a flat table of the same variable names as the bash configs.
//!
//! Values: strings as they are, integers in decimal, booleans as `1`/`0` (what the bash configs
//! write), arrays of strings joined with single spaces (`STAGE_LIST = ["stage0", "stage1"]`).
//! Nothing is expanded: `"$HOME"` is the five characters `$HOME`.
use std::collections::BTreeMap;
use std::path::Path;

use toml::Spanned;

use super::{is_valid_name, Assignment, Origin};
use crate::error::ConfigError;

const ALLOWED: &str = "a string, an integer, a boolean or an array of strings";

pub fn parse(text: &str, path: &Path) -> Result<Vec<Assignment>, ConfigError> {
    let shown = path.display();
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let syntax_error = |e: toml::de::Error| {
        let line = e.span().map(|s| line_of(s.start)).unwrap_or(1);
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ");
        ConfigError::new(format!(
            "{shown}:{line}: invalid TOML: {message}; write one NAME = value per line"
        ))
    };
    let table: toml::Table = toml::from_str(text).map_err(syntax_error)?;
    // A second pass for where each top-level key is written (values skipped: spans of nested
    // values do not deserialize for dotted keys). The text already parsed, so this cannot fail
    // for syntax; should it fail anyway, lines fall back to 1 rather than inventing an error.
    let spans: BTreeMap<Spanned<String>, serde::de::IgnoredAny> =
        toml::from_str(text).unwrap_or_default();
    let mut entries: Vec<(usize, String, toml::Value)> = Vec::with_capacity(table.len());
    for (key, value) in table {
        let offset = spans
            .keys()
            .find(|k| k.get_ref() == &key)
            .map_or(0, |k| k.span().start);
        entries.push((offset, key, value));
    }
    entries.sort_by_key(|(offset, _, _)| *offset);
    let mut assignments = Vec::with_capacity(entries.len());
    for (offset, name, value) in entries {
        let line = line_of(offset);
        let at = format!("{shown}:{line}");
        if !is_valid_name(&name) {
            return Err(ConfigError::new(format!(
                "{at}: {name:?} is not a valid variable name (letters, digits and _, not starting with a digit)"
            )));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => if b { "1" } else { "0" }.to_string(),
            toml::Value::Array(items) => {
                let mut words = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        toml::Value::String(s) => words.push(s),
                        other => {
                            return Err(ConfigError::new(format!(
                                "{at}: {name}: array elements must be strings, found {}; e.g. {name} = [\"stage0\", \"stage1\"]",
                                kind(&other)
                            )));
                        }
                    }
                }
                words.join(" ")
            }
            other => {
                let hint = match &other {
                    toml::Value::Float(f) => format!(", e.g. {name} = \"{f}\""),
                    toml::Value::Datetime(d) => format!(", e.g. {name} = \"{d}\""),
                    _ => "; the file is one flat table, without [sections] or dotted keys"
                        .to_string(),
                };
                return Err(ConfigError::new(format!(
                    "{at}: {name} is {}; the value must be {ALLOWED}{hint}",
                    kind(&other)
                )));
            }
        };
        if value.contains('\0') {
            return Err(ConfigError::new(format!(
                "{at}: {name} contains a NUL character, which no environment variable can hold; remove it"
            )));
        }
        assignments.push(Assignment {
            name,
            value,
            origin: Origin::File {
                path: path.to_path_buf(),
                line: Some(line),
            },
        });
    }
    Ok(assignments)
}

fn kind(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date/time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Vec<(String, String, String)> {
        parse(text, Path::new("build.toml"))
            .unwrap()
            .into_iter()
            .map(|a| (a.name, a.value, a.origin.to_string()))
            .collect()
    }

    fn err(text: &str) -> String {
        let e = parse(text, Path::new("build.toml")).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e:?}");
        e.0[0].clone()
    }

    fn row(name: &str, value: &str, line: usize) -> (String, String, String) {
        (name.into(), value.into(), format!("build.toml:{line}"))
    }

    #[test]
    fn value_types_in_file_order() {
        let text = r#"# a comment
IMG_NAME = "Raspi-1.2"
DEPLOY_ZIP = 0

ENABLE_SSH = true
PUBKEY_ONLY_SSH = false
STAGE_LIST = ["stage0", "stage1", "stage2"]
SKIP_IMAGES_LIST = []
KEYBOARD_LAYOUT = 'English (US)'
PUBKEY_SSH_FIRST_USER = """
ssh-ed25519 AAAA a@b"""
BASE_QCOW2_SIZE = -5
LITERAL = "$HOME ~"
"#;
        assert_eq!(
            ok(text),
            [
                row("IMG_NAME", "Raspi-1.2", 2),
                row("DEPLOY_ZIP", "0", 3),
                row("ENABLE_SSH", "1", 5),
                row("PUBKEY_ONLY_SSH", "0", 6),
                row("STAGE_LIST", "stage0 stage1 stage2", 7),
                row("SKIP_IMAGES_LIST", "", 8),
                row("KEYBOARD_LAYOUT", "English (US)", 9),
                row("PUBKEY_SSH_FIRST_USER", "ssh-ed25519 AAAA a@b", 10),
                row("BASE_QCOW2_SIZE", "-5", 12),
                row("LITERAL", "$HOME ~", 13),
            ]
        );
        assert_eq!(ok(""), []);
        assert_eq!(ok("\"QUOTED_KEY\" = \"x\""), [row("QUOTED_KEY", "x", 1)]);
    }

    #[test]
    fn values_that_are_not_allowed() {
        assert_eq!(
            err("A = 1\nIMG_SIZE = 1.5\n"),
            "build.toml:2: IMG_SIZE is a float; the value must be a string, an integer, a boolean or an array of strings, e.g. IMG_SIZE = \"1.5\""
        );
        assert_eq!(
            err("\n[stage2]\nX = 1\n"),
            "build.toml:2: stage2 is a table; the value must be a string, an integer, a boolean or an array of strings; the file is one flat table, without [sections] or dotted keys"
        );
        assert_eq!(
            err("a.b = 1"),
            "build.toml:1: a is a table; the value must be a string, an integer, a boolean or an array of strings; the file is one flat table, without [sections] or dotted keys"
        );
        assert_eq!(
            err("IMG_DATE = 2024-01-02\n"),
            "build.toml:1: IMG_DATE is a date/time; the value must be a string, an integer, a boolean or an array of strings, e.g. IMG_DATE = \"2024-01-02\""
        );
        assert_eq!(
            err("\n\nSTAGE_LIST = [\"stage0\", 1]"),
            "build.toml:3: STAGE_LIST: array elements must be strings, found an integer; e.g. STAGE_LIST = [\"stage0\", \"stage1\"]"
        );
        assert_eq!(
            err("X = \"a\\u0000b\""),
            "build.toml:1: X contains a NUL character, which no environment variable can hold; remove it"
        );
    }

    #[test]
    fn invalid_names() {
        assert_eq!(
            err("A = 1\nfoo-bar = 1\n"),
            "build.toml:2: \"foo-bar\" is not a valid variable name (letters, digits and _, not starting with a digit)"
        );
        assert_eq!(
            err("1ABC = 1\n"),
            "build.toml:1: \"1ABC\" is not a valid variable name (letters, digits and _, not starting with a digit)"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("A = 1\nB = \"unterminated\n");
        assert!(e.starts_with("build.toml:2: invalid TOML: "), "{e}");
        assert!(!e.contains('\n'));
        let e = err("A = 1\nA = 2\n");
        assert!(e.starts_with("build.toml:2: invalid TOML: "), "{e}");
        assert!(e.contains("duplicate"), "{e}");
        let e = err("A = 1\n\nB\n");
        assert!(e.starts_with("build.toml:3: invalid TOML: "), "{e}");
    }
}

//! Environment overrides: each `TALLYD_<SECTION>_<KEY>` variable (or `TALLYD_<KEY>` for a
//! top-level key) sets that key in the parsed document before it is deserialized, so an
//! override meets the same types and the same validation as the file, and wins over it.
//!
//! Names are matched against the fields of the raw config struct, read from its serde
//! derive: a section added there can be overridden with no list kept here. Everything after
//! `TALLYD_` is lowercased, then it is a top-level key (`TALLYD_HOST`) or a section, `_`, and
//! a key of that section (`TALLYD_AGGREGATION_FLUSH_INTERVAL_MS`); keys may hold `_`, the
//! section is the longest one that matches.
//!
//! The value is read as a TOML value (`1000`, `true`, `1.5`, `["127.0.0.1:8125"]`), and as a
//! plain string when it is not one (`web-7`, `127.0.0.1:9102`) or when the TOML value does
//! not fit a key that takes a string (`TALLYD_HOST=1234`). It replaces the key's value whole,
//! so a table or an array of tables can be given whole as an inline TOML value
//! (`TALLYD_AGGREGATION_GLOBAL_TAGS='{ env = "prod" }'`). Out of scope: naming keys inside
//! tables (`global_tags` entries) or arrays of tables (`[[backends]]`, `[[alerts]]`,
//! `[[aggregation.histograms]]`) one by one; an override naming one is an error.
//!
//! Every variable starting `TALLYD_` is taken as config, none reserved: one that names no
//! section or key is an error rather than ignored, so a misspelt override cannot go unnoticed.
//!
//! Each override's value gets spans past the end of the file's text, in a region of its own,
//! so the span of any later error tells whether the file or which variable is at fault.

use std::borrow::Cow;
use std::cell::Cell;
use std::ops::Range;

use serde::de::{DeserializeOwned, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// The prefix of every variable that sets a config key.
const PREFIX: &str = "TALLYD_";

/// The `TALLYD_*` variables of an environment, each resolved to the key it sets.
pub(super) struct Overrides {
    /// Sorted by variable name.
    list: Vec<Override>,
}

struct Override {
    var: String,
    /// `None` for a top-level key.
    section: Option<&'static str>,
    key: String,
    value: String,
    /// The spans this variable's key and value are given, all at or past the file's end.
    region: Range<usize>,
    /// Set once the value's TOML reading failed to deserialize: read it as a string.
    as_string: Cell<bool>,
}

impl Overrides {
    /// The `TALLYD_*` variables among `env` (others are ignored), for a config whose
    /// top-level keys and sections are `fields` and whose file text is `file_len` bytes long.
    ///
    /// # Errors
    /// [`ConfigError::Env`] for a variable that names no section or key, or a key another
    /// variable sets too.
    pub(super) fn new(
        env: impl IntoIterator<Item = (String, String)>,
        fields: &[&'static str],
        file_len: usize,
    ) -> Result<Overrides, ConfigError> {
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(var, _)| var.starts_with(PREFIX))
            .collect();
        vars.sort();
        let mut list: Vec<Override> = Vec::with_capacity(vars.len());
        // Past the file's last byte, so that no span of the file falls in a region.
        let mut start = file_len + 1;
        for (var, value) in vars {
            let (section, key) = resolve(&var[PREFIX.len()..], fields)
                .map_err(|message| env_error(&var, message))?;
            if let Some(other) = list.iter().find(|o| o.section == section && o.key == key) {
                return Err(env_error(
                    &var,
                    format!("sets the same key as {}", other.var),
                ));
            }
            let end = start + value.len() + 1;
            list.push(Override {
                var,
                section,
                key,
                value,
                region: start..end,
                as_string: Cell::new(false),
            });
            start = end;
        }
        Ok(Overrides { list })
    }

    /// The variable whose value (or key) holds byte `offset`, if any.
    pub(super) fn var_at(&self, offset: usize) -> Option<&str> {
        self.list
            .iter()
            .find(|o| o.region.contains(&offset))
            .map(|o| o.var.as_str())
    }

    /// Deserializes `root` with every override applied, and returns the document it was
    /// read from, whose spans later errors can be looked up in.
    ///
    /// # Errors
    /// [`ConfigError::Env`] for an override of a key inside a non-table; else the first
    /// deserialization error, passed through `locate` with its span.
    pub(super) fn deserialize<'i, T: DeserializeOwned>(
        &'i self,
        root: Spanned<DeTable<'i>>,
        locate: impl Fn(Option<Range<usize>>, String) -> ConfigError,
    ) -> Result<(T, Spanned<DeTable<'i>>), ConfigError> {
        let fail = |error: toml::de::Error| locate(error.span(), error.message().to_string());
        // The first error of each override that was tried again as a string.
        let mut first_errors: Vec<(usize, toml::de::Error)> = Vec::new();
        loop {
            let document = self.apply(root.clone())?;
            let error = match T::deserialize(toml::de::Deserializer::from(document.clone())) {
                Ok(value) => return Ok((value, document)),
                Err(error) => error,
            };
            let at = error.span().and_then(|span| {
                self.list
                    .iter()
                    .position(|o| o.region.contains(&span.start))
            });
            let Some(at) = at else {
                return Err(fail(error));
            };
            if let Some(pos) = first_errors.iter().position(|(i, _)| *i == at) {
                // Neither reading fits: the TOML one's error says more ("expected u64").
                return Err(fail(first_errors.swap_remove(pos).1));
            }
            let o = &self.list[at];
            if o.as_string.get() || !is_non_string_scalar(&o.value) {
                return Err(fail(error));
            }
            o.as_string.set(true);
            first_errors.push((at, error));
        }
    }

    /// `root` with every override's value set.
    fn apply<'i>(
        &'i self,
        mut root: Spanned<DeTable<'i>>,
    ) -> Result<Spanned<DeTable<'i>>, ConfigError> {
        for o in &self.list {
            let table = match o.section {
                None => root.get_mut(),
                Some(section) => {
                    let entry = root
                        .get_mut()
                        .entry(Spanned::new(o.key_span(), Cow::Borrowed(section)))
                        .or_insert_with(|| {
                            Spanned::new(o.region.clone(), DeValue::Table(DeTable::new()))
                        });
                    match entry.get_mut() {
                        DeValue::Table(table) => table,
                        DeValue::Array(_) => {
                            return Err(env_error(
                                &o.var,
                                format!(
                                    "`{section}` is a list of tables ([[{section}]]): keys inside it cannot be set from the environment"
                                ),
                            ));
                        }
                        other => {
                            return Err(env_error(
                                &o.var,
                                format!(
                                    "`{section}` is a {} in the file, not a table",
                                    other.type_str()
                                ),
                            ));
                        }
                    }
                }
            };
            // Removed first so that the key, too, takes the variable's span.
            table.remove(o.key.as_str());
            table.insert(
                Spanned::new(o.key_span(), Cow::Borrowed(&o.key)),
                o.parsed(),
            );
        }
        Ok(root)
    }
}

impl Override {
    fn key_span(&self) -> Range<usize> {
        self.region.start..self.region.start
    }

    /// The value as TOML, or as a string when it is no TOML value (or was found not to fit).
    fn parsed(&self) -> Spanned<DeValue<'_>> {
        let toml = match self.as_string.get() {
            true => None,
            false => DeValue::parse(&self.value).ok(),
        };
        match toml {
            Some(value) => shift(value, self.region.start),
            None => Spanned::new(
                self.region.start..self.region.start + self.value.len(),
                DeValue::String(Cow::Borrowed(&self.value)),
            ),
        }
    }
}

/// Whether `value` reads as a TOML number, boolean or date: a reading that a key taking a
/// string refuses, where the string itself may be meant (`TALLYD_HOST=1234`).
fn is_non_string_scalar(value: &str) -> bool {
    matches!(
        DeValue::parse(value).map(Spanned::into_inner),
        Ok(DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_))
    )
}

/// `value` with every span inside it moved `by` bytes on.
fn shift(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = value.span();
    let inner = match value.into_inner() {
        DeValue::Array(items) => DeValue::Array(items.into_iter().map(|v| shift(v, by)).collect()),
        DeValue::Table(table) => DeValue::Table(
            table
                .into_iter()
                .map(|(key, v)| {
                    let key_span = key.span();
                    let key =
                        Spanned::new(key_span.start + by..key_span.end + by, key.into_inner());
                    (key, shift(v, by))
                })
                .collect(),
        ),
        scalar => scalar,
    };
    Spanned::new(span.start + by..span.end + by, inner)
}

/// The section (none for a top-level key) and key that `name`, the variable's name after
/// the prefix, sets.
fn resolve(name: &str, fields: &[&'static str]) -> Result<(Option<&'static str>, String), String> {
    let name = name.to_lowercase();
    if fields.contains(&name.as_str()) {
        return Ok((None, name));
    }
    let section = fields
        .iter()
        .filter(|field| {
            name.strip_prefix(**field)
                .is_some_and(|rest| rest.starts_with('_'))
        })
        .max_by_key(|field| field.len());
    match section {
        Some(section) if name.len() > section.len() + 1 => {
            Ok((Some(*section), name[section.len() + 1..].to_string()))
        }
        Some(section) => Err(format!("names the section `{section}` but no key in it")),
        None => Err(format!(
            "names no config key: after {PREFIX} comes a top-level key or a section, `_` and a \
             key in it (TALLYD_AGGREGATION_FLUSH_INTERVAL_MS); the top-level keys and sections \
             are {}",
            fields.join(", ")
        )),
    }
}

fn env_error(var: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var: var.to_string(),
        message: message.into(),
    }
}

/// The process's `TALLYD_*` variables.
///
/// # Errors
/// [`ConfigError::Env`] for one whose value is not UTF-8.
pub(super) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    std::env::vars_os()
        .filter(|(var, _)| var.as_encoded_bytes().starts_with(PREFIX.as_bytes()))
        .map(|(var, value)| {
            let shown = var.to_string_lossy().into_owned();
            match (var.into_string(), value.into_string()) {
                (Ok(var), Ok(value)) => Ok((var, value)),
                _ => Err(env_error(&shown, "is not valid UTF-8")),
            }
        })
        .collect()
}

/// The names of a struct's fields, as its serde derive hands them to `deserialize_struct`.
pub(super) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The derive names its fields, then fails on the error this deserializer always returns.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A deserializer that records the field names of the struct asked of it, and reads nothing.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::{BackendConfig, Config, RawConfig};
    use super::*;

    /// `text` with the overrides `vars` (name, value).
    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml_with_env(text, Path::new("t.toml"), env)
    }

    /// The variable and message of an environment error.
    fn env_err(text: &str, vars: &[(&str, &str)]) -> (String, String) {
        match with_env(text, vars) {
            Err(ConfigError::Env { var, message }) => (var, message),
            other => panic!("expected an environment error, got {other:?}"),
        }
    }

    const INTERVAL: &str = "TALLYD_AGGREGATION_FLUSH_INTERVAL_MS";

    #[test]
    fn an_override_wins_over_the_file() {
        let config = with_env(
            "[aggregation]\nflush_interval_ms = 5000\n",
            &[(INTERVAL, "1000")],
        )
        .expect("valid");
        assert_eq!(config.aggregation.flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn an_override_sets_a_key_the_file_lacks() {
        let config = with_env("[aggregation]\nshards = 3\n", &[(INTERVAL, "1000")]).expect("valid");
        assert_eq!(config.aggregation.flush_interval, Duration::from_secs(1));
        assert_eq!(config.aggregation.shards, 3, "the file's other keys stay");
    }

    #[test]
    fn an_override_creates_a_missing_section() {
        let config =
            with_env("host = \"a\"\n", &[("TALLYD_SERVER_UDP_BATCH", "16")]).expect("valid");
        assert_eq!(config.server.udp_batch, 16);
        let config = with_env("", &[(INTERVAL, "1000")]).expect("valid");
        assert_eq!(config.aggregation.flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn a_top_level_key_is_the_name_after_the_prefix() {
        let config = with_env("host = \"file\"\n", &[("TALLYD_HOST", "env")]).expect("valid");
        assert_eq!(config.host, "env");
    }

    #[test]
    fn a_value_that_is_no_toml_value_is_a_string() {
        for value in ["web-7", "127.0.0.1:9102", "", "a b"] {
            let config = with_env("", &[("TALLYD_HOST", value)]).expect(value);
            assert_eq!(config.host, value);
        }
        let config = with_env("", &[("TALLYD_HOST", "\"quoted\"")]).expect("valid");
        assert_eq!(config.host, "quoted");
    }

    #[test]
    fn a_number_or_boolean_is_read_as_a_string_where_a_string_is_wanted() {
        for value in ["1234", "1.5", "true", "1979-05-27"] {
            let config = with_env("", &[("TALLYD_HOST", value)]).expect(value);
            assert_eq!(config.host, value);
        }
    }

    #[test]
    fn booleans_arrays_and_inline_tables_are_toml_values() {
        let config = with_env(
            "",
            &[
                ("TALLYD_AGGREGATION_GAUGE_DELTAS", "false"),
                ("TALLYD_AGGREGATION_PERCENTILES", "[50, 99.9]"),
                ("TALLYD_SERVER_UDP", "[\"127.0.0.1:9125\", \"[::1]:9125\"]"),
                ("TALLYD_AGGREGATION_GLOBAL_TAGS", "{ env = \"prod\" }"),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.aggregation.global_tags,
            [("env".to_string(), "prod".to_string())]
        );
        assert!(!config.aggregation.gauge_deltas);
        assert_eq!(config.aggregation.distribution.percentiles.len(), 2);
        assert_eq!(config.server.udp.len(), 2);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_variable() {
        let (var, message) = env_err(
            "[aggregation]\nflush_interval_ms = 5000\n",
            &[(INTERVAL, "abc")],
        );
        assert_eq!(var, INTERVAL);
        assert!(message.contains("invalid type"), "{message}");
        // Both readings fail: the TOML one's error is kept.
        let (var, message) = env_err("", &[(INTERVAL, "-1")]);
        assert_eq!(var, INTERVAL);
        assert!(message.contains("-1"), "{message}");
    }

    #[test]
    fn an_error_inside_an_array_value_names_the_variable() {
        let (var, message) = env_err("", &[("TALLYD_SERVER_UDP", "[\"nonsense\"]")]);
        assert_eq!(var, "TALLYD_SERVER_UDP");
        assert!(message.contains("socket address"), "{message}");
    }

    #[test]
    fn a_value_failing_validation_names_the_variable() {
        let (var, message) = env_err(
            "[aggregation]\nflush_interval_ms = 5000\n",
            &[(INTERVAL, "0")],
        );
        assert_eq!(var, INTERVAL);
        assert!(
            message.contains("flush_interval_ms must be at least 1"),
            "{message}"
        );
        let (var, message) = env_err("", &[("TALLYD_AGGREGATION_PERCENTILES", "[90, 90]")]);
        assert_eq!(var, "TALLYD_AGGREGATION_PERCENTILES");
        assert!(message.contains("twice"), "{message}");
    }

    #[test]
    fn an_unknown_key_names_the_variable() {
        let var = "TALLYD_AGGREGATION_FLUSH_INTERVL_MS";
        for text in ["", "[aggregation]\nshards = 1\n"] {
            let (at, message) = env_err(text, &[(var, "1000")]);
            assert_eq!(at, var);
            assert!(
                message.contains("unknown field `flush_intervl_ms`"),
                "{message}"
            );
        }
    }

    #[test]
    fn an_unknown_section_names_the_variable() {
        let (var, message) = env_err("", &[("TALLYD_AGGREGATON_FLUSH_INTERVAL_MS", "1000")]);
        assert_eq!(var, "TALLYD_AGGREGATON_FLUSH_INTERVAL_MS");
        assert!(
            message.contains("aggregation"),
            "the sections are listed: {message}"
        );
        let (var, _) = env_err("", &[("TALLYD_AGGREGATION_", "1")]);
        assert_eq!(var, "TALLYD_AGGREGATION_");
    }

    #[test]
    fn keys_inside_arrays_of_tables_cannot_be_set() {
        let (var, message) = env_err(
            "[[backends]]\nkind = \"console\"\n",
            &[("TALLYD_BACKENDS_KIND", "http")],
        );
        assert_eq!(var, "TALLYD_BACKENDS_KIND");
        assert!(message.contains("[[backends]]"), "{message}");
    }

    #[test]
    fn two_variables_for_one_key_are_an_error() {
        let (_, message) = env_err("", &[("TALLYD_HOST", "a"), ("TALLYD_host", "b")]);
        assert!(message.contains("same key"), "{message}");
    }

    #[test]
    fn other_variables_are_ignored() {
        let config = with_env(
            "",
            &[
                ("RUST_LOG", "debug"),
                ("PATH", "/bin"),
                ("tallyd_host", "x"),
            ],
        )
        .expect("valid");
        assert_ne!(config.host, "x");
    }

    #[test]
    fn errors_in_the_file_keep_their_line_and_column_beside_overrides() {
        let err = with_env(
            "[aggregation]\npercentiles = [90, 101]\n",
            &[(INTERVAL, "1000"), ("TALLYD_HOST", "h")],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    line: 2,
                    column: 20,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_backend_error_is_located_in_the_document_with_the_overrides() {
        // The whole list from the environment: its errors are the variable's, not the file's.
        let (var, message) = env_err(
            "[[backends]]\nkind = \"http\"\nurl = \"http://h/\"\n",
            &[(
                "TALLYD_BACKENDS",
                "[{ kind = \"http\", url = \"ftp://h/\" }]",
            )],
        );
        assert_eq!(var, "TALLYD_BACKENDS");
        assert!(message.contains("http://"), "{message}");
        let config = with_env("", &[("TALLYD_BACKENDS", "[]")]).expect("valid");
        assert!(config.backends.is_empty());
        assert!(matches!(
            Config::default().backends[..],
            [BackendConfig::Console { .. }]
        ));
    }

    #[test]
    fn the_raw_config_fields_are_the_top_level_keys_and_sections() {
        let fields = field_names::<RawConfig>();
        for field in ["host", "server", "aggregation", "backends"] {
            assert!(fields.contains(&field), "{fields:?}");
        }
    }
}

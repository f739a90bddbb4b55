//! Resolving a run's configuration: preset defaults, then a TOML file, then command-line flags
//! (each layer overrides the one before). The resolved value is saved as `config.toml` in the
//! run folder, so `--config runs/x/config.toml` repeats a run.

use crate::error::{CliError, CliResult};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// Merges `file` (a TOML file, optional) and `flags` (only the fields the user set) over
/// `defaults`, and deserialises the result. Unknown keys in the file are errors naming the file.
pub fn resolve<T: Serialize + DeserializeOwned>(
    defaults: &T,
    file: Option<&toml::Table>,
    file_name: Option<&Path>,
    flags: toml::Table,
) -> CliResult<T> {
    let mut base = toml::Table::try_from(defaults).map_err(|e| CliError::runtime(format!("config: {e}")))?;
    if let Some(f) = file {
        for (k, v) in f {
            base.insert(k.clone(), v.clone());
        }
    }
    let from_file = base.clone();
    for (k, v) in flags {
        base.insert(k, v);
    }
    base.try_into().map_err(|e: toml::de::Error| {
        let what = match file_name {
            Some(p) if T::deserialize(toml::Value::Table(from_file)).is_err() => format!("config file {}", p.display()),
            _ => "configuration".to_string(),
        };
        CliError::usage(format!("{what}: {}", e.message().trim())).hint("see `spark <command> --help` for the keys")
    })
}

/// Reads a TOML config file into a table.
pub fn read_file(path: &Path) -> CliResult<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read config file {}: {e}", path.display())))?;
    text.parse::<toml::Table>()
        .map_err(|e| CliError::usage(format!("config file {} is not valid TOML: {}", path.display(), e.message())))
}

/// Collects `Some` flag values into a table under their config key. TOML integers are 64-bit
/// signed: a larger unsigned value is an error naming the flag (see [`Flags::finish`]), never a
/// wrapped negative number.
#[derive(Default)]
pub struct Flags(pub toml::Table, Vec<CliError>);

impl Flags {
    pub fn set<V: Into<toml::Value>>(&mut self, key: &str, v: Option<V>) -> &mut Self {
        if let Some(v) = v {
            self.0.insert(key.to_string(), v.into());
        }
        self
    }
    pub fn set_usize(&mut self, key: &str, v: Option<usize>) -> &mut Self {
        self.set_u64(key, v.map(|x| x as u64))
    }
    pub fn set_u64(&mut self, key: &str, v: Option<u64>) -> &mut Self {
        match v.map(i64::try_from) {
            Some(Err(_)) => {
                let flag = format!("--{}", key.replace('_', "-"));
                self.1.push(
                    CliError::usage(format!(
                        "{flag} {} is out of range: must be <= {} (the run's config.toml stores 64-bit signed integers)",
                        v.unwrap_or_default(),
                        i64::MAX
                    ))
                    .hint(format!("pass a smaller {flag}")),
                );
                self
            }
            x => self.set(key, x.map(Result::unwrap_or_default)),
        }
    }
    /// The table, or the first value that did not fit.
    pub fn finish(mut self) -> CliResult<toml::Table> {
        match self.1.drain(..).next() {
            Some(e) => Err(e),
            None => Ok(self.0),
        }
    }
}

/// Saves a resolved config as TOML (through a temporary file and a rename).
pub fn save<T: Serialize>(value: &T, path: &Path) -> CliResult<()> {
    let text = toml::to_string_pretty(value).map_err(|e| CliError::runtime(format!("config: {e}")))?;
    crate::output::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct C {
        a: i64,
        b: String,
        c: Option<f64>,
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let d = C { a: 1, b: "x".into(), c: None };
        let file: toml::Table = "a = 5\nb = \"file\"".parse().unwrap();
        let mut f = Flags::default();
        f.set("b", Some("flag")).set("c", None::<f64>);
        let r: C = resolve(&d, Some(&file), None, f.0).unwrap();
        assert_eq!(r, C { a: 5, b: "flag".into(), c: None });
        let mut f = Flags::default();
        f.set("c", Some(0.5));
        let r: C = resolve(&d, None, None, f.0).unwrap();
        assert_eq!(r.c, Some(0.5));
    }

    #[test]
    fn unsigned_flags_beyond_i64_are_errors_not_negative_numbers() {
        let mut f = Flags::default();
        f.set_u64("seed", Some(u64::MAX)).set_usize("steps", Some(3));
        let e = f.finish().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.msg.contains("--seed 18446744073709551615") && e.msg.contains("9223372036854775807"), "{}", e.msg);
        let mut f = Flags::default();
        f.set_u64("seed", Some(i64::MAX as u64));
        assert_eq!(f.finish().unwrap()["seed"].as_integer(), Some(i64::MAX));
    }

    #[test]
    fn unknown_or_mistyped_keys_are_usage_errors_naming_the_file() {
        let d = C { a: 1, b: "x".into(), c: None };
        let file: toml::Table = "bogus = 1".parse().unwrap();
        let e = resolve(&d, Some(&file), Some(Path::new("my.toml")), toml::Table::new()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.msg.contains("my.toml") && e.msg.contains("bogus"), "{}", e.msg);
        let file: toml::Table = "a = \"three\"".parse().unwrap();
        let e = resolve(&d, Some(&file), Some(Path::new("my.toml")), toml::Table::new()).unwrap_err();
        assert!(e.msg.contains("my.toml"), "{}", e.msg);
    }
}

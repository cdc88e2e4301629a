//! Reading Hugging Face `config.json` fields with errors that name the field, shared by every
//! family; and [`human_count`].

use serde_json::Value;

/// Field readers over a `config.json` object. Each error is `(field, message)`.
pub(crate) struct HfFields<'a>(pub &'a Value);

type FieldResult<T> = std::result::Result<T, (String, String)>;

impl HfFields<'_> {
    /// The first of `names` present (and not null) as a non-negative integer, else `default`,
    /// else an error naming the first name.
    pub fn usize(&self, names: &[&str], default: Option<usize>) -> FieldResult<usize> {
        for n in names {
            match self.0.get(*n) {
                Some(Value::Number(x)) => {
                    return x.as_u64().map(|x| x as usize).ok_or_else(|| {
                        (
                            n.to_string(),
                            format!("expected a non-negative integer, got {x}"),
                        )
                    });
                }
                Some(Value::Null) | None => continue,
                Some(other) => {
                    return Err((n.to_string(), format!("expected an integer, got {other}")));
                }
            }
        }
        default.ok_or_else(|| (names[0].to_string(), "missing".to_string()))
    }

    /// An optional non-negative integer (absent or null: `None`).
    pub fn opt_usize(&self, name: &str) -> FieldResult<Option<usize>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.usize(&[name], None).map(Some),
        }
    }

    pub fn f64(&self, name: &str, default: f64) -> FieldResult<f64> {
        match self.0.get(name) {
            Some(Value::Number(x)) => x
                .as_f64()
                .ok_or_else(|| (name.to_string(), "expected a number".to_string())),
            None | Some(Value::Null) => Ok(default),
            Some(other) => Err((name.to_string(), format!("expected a number, got {other}"))),
        }
    }

    pub fn bool(&self, name: &str) -> FieldResult<Option<bool>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err((
                name.to_string(),
                format!("expected true or false, got {other}"),
            )),
        }
    }

    pub fn str(&self, name: &str) -> FieldResult<Option<&str>> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err((name.to_string(), format!("expected a string, got {other}"))),
        }
    }

    /// A token id; some configs list several (e.g. eos), the first is the primary one.
    pub fn token_id(&self, name: &str) -> Option<u32> {
        match self.0.get(name) {
            Some(Value::Number(x)) => x.as_u64().map(|x| x as u32),
            Some(Value::Array(a)) => a.first().and_then(Value::as_u64).map(|x| x as u32),
            _ => None,
        }
    }

    /// Every id of a field that may be one id or a list (`eos_token_id`).
    pub fn token_ids(&self, name: &str) -> Vec<u32> {
        match self.0.get(name) {
            Some(Value::Number(x)) => x.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|x| x as u32)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// `124439808` -> `124.4M`.
pub fn human_count(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2}B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n}")
    }
}

//! The shipped knowledge tables (countries, chemical elements, US states, WordNet words):
//! loaded from TSV with errors naming file, line and field.
//!
//! They feed two things: the pretraining corpus (facts written as prose, see
//! [`crate::corpus`]) and the default instruction set (questions about the facts, see
//! [`crate::default_set`]).

use std::path::{Path, PathBuf};

use manners_data::{DataError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Country {
    pub name: String,
    pub capital: String,
    pub continent: String,
    /// ISO 4217 code(s), e.g. `PEN`.
    pub currency: String,
    pub languages: Vec<String>,
    pub iso2: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub number: u32,
    pub symbol: String,
    pub name: String,
    /// Atomic mass as written in the table, e.g. `4.002602(2)`.
    pub mass: String,
    /// `gas`, `liquid`, `solid` (may be empty).
    pub state: String,
    /// Group or block, e.g. `noble gas`, `alkali metal`.
    pub group: String,
    /// Year of discovery, or `Ancient`.
    pub year: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsState {
    pub name: String,
    pub capital: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub word: String,
    /// WordNet part of speech: n, v, a, s, r.
    pub pos: String,
    pub definition: String,
    pub example: Option<String>,
}

/// All tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Knowledge {
    pub countries: Vec<Country>,
    pub elements: Vec<Element>,
    pub states: Vec<UsState>,
    pub words: Vec<Word>,
}

impl Knowledge {
    /// Loads `countries_capitals.tsv`, `elements.tsv`, `us_states_capitals.tsv` and
    /// `wordnet30_common.tsv.gz` from `dir`. Countries without a capital (e.g. Antarctica) are
    /// skipped: they have no capital fact.
    pub fn load(dir: &Path) -> Result<Self> {
        let countries = read_tsv(&dir.join("countries_capitals.tsv"), 6)?
            .into_iter()
            .filter(|(_, f)| !f[1].is_empty())
            .map(|(_, f)| Country {
                name: f[0].clone(),
                capital: f[1].clone(),
                continent: f[2].clone(),
                currency: f[3].clone(),
                languages: f[4]
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                iso2: f[5].clone(),
            })
            .collect();
        let path = dir.join("elements.tsv");
        let mut elements = Vec::new();
        for (line, f) in read_tsv(&path, 7)? {
            let number = f[0].parse().map_err(|_| DataError::Table {
                file: path.clone(),
                line,
                field: "number".into(),
                message: format!("not a number: {:?}", f[0]),
            })?;
            elements.push(Element {
                number,
                symbol: f[1].clone(),
                name: f[2].clone(),
                mass: f[3].clone(),
                state: f[4].clone(),
                group: f[5].clone(),
                year: f[6].clone(),
            });
        }
        let states = read_tsv(&dir.join("us_states_capitals.tsv"), 2)?
            .into_iter()
            .map(|(_, f)| UsState {
                name: f[0].clone(),
                capital: f[1].clone(),
            })
            .collect();
        let words = read_tsv(&dir.join("wordnet30_common.tsv.gz"), 3)?
            .into_iter()
            .map(|(_, f)| Word {
                word: f[0].replace('_', " "),
                pos: f[1].clone(),
                definition: f[2].clone(),
                example: f.get(3).filter(|e| !e.is_empty()).cloned(),
            })
            .collect();
        Ok(Knowledge {
            countries,
            elements,
            states,
            words,
        })
    }
}

/// Rows of a TSV file with a header line (`.gz` allowed): (1-based line, fields). Rows need at
/// least `min_fields` fields, and the first field must be non-empty.
fn read_tsv(path: &Path, min_fields: usize) -> Result<Vec<(usize, Vec<String>)>> {
    let bytes = manners_data::read_bytes(path)?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::Table {
        file: PathBuf::from(path),
        line: 0,
        field: "<file>".into(),
        message: format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
    })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<String> = line.split('\t').map(|s| s.trim().to_string()).collect();
        if fields.len() < min_fields || fields[0].is_empty() {
            return Err(DataError::Table {
                file: path.to_path_buf(),
                line: i + 1,
                field: if fields[0].is_empty() {
                    "column 1".into()
                } else {
                    format!("column {}", fields.len() + 1)
                },
                message: format!(
                    "expected at least {min_fields} tab-separated fields, found {}",
                    fields.len()
                ),
            });
        }
        rows.push((i + 1, fields));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/knowledge")
    }

    #[test]
    fn loads_the_shipped_tables() {
        let k = Knowledge::load(&assets()).unwrap();
        assert!(k.countries.len() >= 240, "{}", k.countries.len());
        let peru = k.countries.iter().find(|c| c.name == "Peru").unwrap();
        assert_eq!(peru.capital, "Lima");
        assert_eq!(peru.continent, "South America");
        assert_eq!(k.elements.len(), 118);
        assert_eq!(k.elements[1].name, "Helium");
        assert_eq!(k.elements[1].number, 2);
        assert_eq!(k.states.len(), 50);
        assert!(k.words.len() > 18_000);
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "countries_capitals.tsv",
            "us_states_capitals.tsv",
            "wordnet30_common.tsv.gz",
        ] {
            std::fs::copy(assets().join(f), dir.path().join(f)).unwrap();
        }
        std::fs::write(
            dir.path().join("elements.tsv"),
            "number\tsymbol\tname\tm\ts\tg\ty\nx\tH\tHydrogen\t1\tgas\tnonmetal\t1766\n",
        )
        .unwrap();
        let err = Knowledge::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("elements.tsv") && err.contains(":2") && err.contains("number"),
            "{err}"
        );
    }
}

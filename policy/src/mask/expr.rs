//! Parsing mask expressions such as `keep(1,2)` or `constant('N/A')`.
use super::Mask;
use crate::kind::Kind;

/// A mask expression that does not parse. `offset` is the 0-based character offset in the
/// expression where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskParseError {
    pub offset: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// Masks that are not some kind's default (each kind's default mask has the kind's name).
const GENERIC_MASKS: [&str; 4] = ["keep", "redact", "constant", "hash"];

/// Every mask name, for did-you-mean hints and documentation.
pub fn mask_names() -> impl Iterator<Item = &'static str> {
    Kind::NAMES.into_iter().chain(GENERIC_MASKS)
}

fn err(offset: usize, message: impl Into<String>) -> MaskParseError {
    MaskParseError {
        offset,
        message: message.into(),
        hint: None,
    }
}

pub fn parse(expr: &str) -> Result<Mask, MaskParseError> {
    let lead = expr.len() - expr.trim_start().len();
    let e = expr.trim();
    let (name, args) = match e.find('(') {
        Some(i) => {
            let Some(inner) = e[i + 1..].strip_suffix(')') else {
                return Err(err(
                    lead + e.chars().count(),
                    format!("mask `{e}` is missing its closing `)`"),
                ));
            };
            (
                e[..i].trim_end(),
                Some((lead + e[..i + 1].chars().count(), inner)),
            )
        }
        None => (e, None),
    };
    let no_args = |m: Mask| match args {
        Some((off, _)) => Err(err(off, format!("mask `{name}` takes no arguments"))),
        None => Ok(m),
    };
    match name {
        "keep" => {
            let Some((off, inner)) = args else {
                return Err(MaskParseError {
                    offset: lead,
                    message: "mask `keep` needs two arguments".into(),
                    hint: Some("write keep(FIRST,LAST), for example keep(1,2)".into()),
                });
            };
            let parts: Vec<&str> = inner.split(',').collect();
            if parts.len() != 2 {
                return Err(MaskParseError {
                    offset: off,
                    message: format!("mask `keep` takes 2 arguments, found {}", parts.len()),
                    hint: Some("write keep(FIRST,LAST), for example keep(1,2)".into()),
                });
            }
            let mut n = [0u16; 2];
            let mut at = off;
            for (i, p) in parts.iter().enumerate() {
                let t = p.trim();
                match t.parse::<u16>() {
                    Ok(v) if v <= 64 => n[i] = v,
                    _ => {
                        let pad = p.chars().count() - p.trim_start().chars().count();
                        return Err(err(
                            at + pad,
                            format!("`keep` argument `{t}` is not a whole number from 0 to 64"),
                        ));
                    }
                }
                at += p.chars().count() + 1;
            }
            Ok(Mask::Keep {
                first: n[0],
                last: n[1],
            })
        }
        "constant" => {
            let Some((off, inner)) = args else {
                return Err(MaskParseError {
                    offset: lead,
                    message: "mask `constant` needs a value".into(),
                    hint: Some("write constant(VALUE), for example constant('N/A')".into()),
                });
            };
            let t = inner.trim();
            let v = ['\'', '"']
                .iter()
                .find_map(|q| t.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
                .unwrap_or(t);
            if v.is_empty() && t.is_empty() {
                return Err(err(
                    off,
                    "mask `constant` needs a value (use constant('') for an empty string)",
                ));
            }
            Ok(Mask::Constant(v.to_string()))
        }
        "redact" => no_args(Mask::Redact),
        "hash" => no_args(Mask::Hash),
        other => match Kind::parse(other) {
            Some(k) => no_args(Mask::default_for(k)),
            None => {
                let hint = crate::diag::did_you_mean(other, mask_names())
                    .map(|s| format!("did you mean `{s}`?"))
                    .or_else(|| {
                        Some(format!(
                            "known masks: {}",
                            mask_names().collect::<Vec<_>>().join(", ")
                        ))
                    });
                Err(MaskParseError {
                    offset: lead,
                    message: format!("unknown mask `{other}`"),
                    hint,
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse("keep(1,2)"), Ok(Mask::Keep { first: 1, last: 2 }));
        assert_eq!(
            parse(" keep( 3 , 4 ) "),
            Ok(Mask::Keep { first: 3, last: 4 })
        );
        assert_eq!(parse("redact"), Ok(Mask::Redact));
        assert_eq!(parse("hash"), Ok(Mask::Hash));
        assert_eq!(parse("constant('N/A')"), Ok(Mask::Constant("N/A".into())));
        assert_eq!(
            parse("constant(\"x, y\")"),
            Ok(Mask::Constant("x, y".into()))
        );
        assert_eq!(parse("constant(n/a)"), Ok(Mask::Constant("n/a".into())));
        assert_eq!(parse("constant('')"), Ok(Mask::Constant(String::new())));
        assert_eq!(parse("cn_mobile"), Ok(Mask::CnMobile));
        assert_eq!(parse("text"), Ok(Mask::Redact));
    }

    #[test]
    fn errors() {
        let e = parse("keep(1)").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (5, "mask `keep` takes 2 arguments, found 1")
        );
        let e = parse("keep(1,x)").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (7, "`keep` argument `x` is not a whole number from 0 to 64")
        );
        let e = parse("keep(1,2").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (8, "mask `keep(1,2` is missing its closing `)`")
        );
        let e = parse("redcat").unwrap_err();
        assert_eq!(e.message, "unknown mask `redcat`");
        assert_eq!(e.hint.as_deref(), Some("did you mean `redact`?"));
        let e = parse("hash(1)").unwrap_err();
        assert_eq!(
            (e.offset, e.message.as_str()),
            (5, "mask `hash` takes no arguments")
        );
        let e = parse("keep").unwrap_err();
        assert_eq!(e.message, "mask `keep` needs two arguments");
        let e = parse("constant()").unwrap_err();
        assert_eq!(e.offset, 9);
    }
}

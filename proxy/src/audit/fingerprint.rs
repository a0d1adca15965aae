//! Statement fingerprints: the SQL text with every literal replaced by `?`.
//!
//! Built from sqlparser's tokenizer (PostgreSQL dialect): string, number, byte, dollar-quoted and
//! other literal tokens become `?`, as do `TRUE`/`FALSE`; comments are dropped (they may carry
//! values); whitespace is collapsed; lists of only `?` or `$n` (`IN (?, ?, ?)`, a `VALUES` row)
//! become `(?)`, and repeated `(?), (?)` rows one `(?)`. A statement the tokenizer rejects gets a
//! fixed text and a hash of the token kinds read before the error, never any of its text.
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// The prefix of the fingerprint of a statement that could not be tokenized.
pub const UNPARSABLE: &str = "unparsable statement";

struct Piece {
    text: String,
    space_before: bool,
}

/// The fingerprint of `sql`. Never contains a literal of the statement.
pub fn fingerprint(sql: &str) -> String {
    let dialect = PostgreSqlDialect {};
    let mut buf: Vec<TokenWithSpan> = Vec::new();
    let mut tokenizer = Tokenizer::new(&dialect, sql);
    if tokenizer.tokenize_with_location_into_buf(&mut buf).is_err() {
        return unparsable(&buf);
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut space = false;
    for t in &buf {
        match &t.token {
            // A comment separates like a space; its text is dropped.
            Token::Whitespace(_) => space = true,
            Token::EOF => {}
            tok => {
                pieces.push(Piece {
                    text: piece(tok),
                    space_before: space && !pieces.is_empty(),
                });
                space = false;
            }
        }
    }
    let pieces = collapse_lists(pieces);
    let mut out = String::with_capacity(sql.len().min(4096));
    for p in pieces {
        if p.space_before {
            out.push(' ');
        }
        out.push_str(&p.text);
    }
    out
}

fn piece(tok: &Token) -> String {
    match tok {
        Token::Word(w) => {
            let up = w.value.to_ascii_uppercase();
            if w.quote_style.is_none() && (up == "TRUE" || up == "FALSE") {
                "?".into()
            } else {
                tok.to_string()
            }
        }
        Token::Placeholder(p) => {
            // `$1` is a parameter reference, kept; anything else (`:name`, `?`) too, but only
            // when it is a plain identifier-like marker.
            if p.chars()
                .skip(1)
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                p.clone()
            } else {
                "?".into()
            }
        }
        Token::Number(..)
        | Token::Char(_)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::CustomBinaryOperator(_) => "?".into(),
        other => {
            // Operators and punctuation. A safety net for variants a future sqlparser adds:
            // anything that is not pure punctuation is treated as a literal.
            let s = other.to_string();
            if s.chars()
                .all(|c| c.is_ascii_punctuation() && c != '\'' && c != '"' && c != '`')
            {
                s
            } else {
                "?".into()
            }
        }
    }
}

fn is_item(p: &Piece) -> bool {
    p.text == "?" || (p.text.starts_with('$') && p.text[1..].chars().all(|c| c.is_ascii_digit()))
}

/// `( ? , ? , $3 )` → `(?)`; then `(?) , (?)` → `(?)`.
fn collapse_lists(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len());
    let mut i = 0;
    while i < pieces.len() {
        if pieces[i].text == "(" {
            // Find `( item (, item)* )`.
            let mut j = i + 1;
            let mut ok = j < pieces.len() && is_item(&pieces[j]);
            while ok {
                j += 1;
                match pieces.get(j).map(|p| p.text.as_str()) {
                    Some(",") if pieces.get(j + 1).is_some_and(is_item) => j += 1,
                    Some(")") => break,
                    _ => ok = false,
                }
            }
            if ok {
                let space_before = pieces[i].space_before;
                // A repeated row: `(?) , (?)` keeps the first.
                let n = out.len();
                let repeated = n >= 2 && out[n - 1].text == "," && out[n - 2].text == "(?)";
                if repeated {
                    out.pop();
                } else {
                    out.push(Piece {
                        text: "(?)".into(),
                        space_before,
                    });
                }
                i = j + 1;
                continue;
            }
        }
        let p = &pieces[i];
        out.push(Piece {
            text: p.text.clone(),
            space_before: p.space_before,
        });
        i += 1;
    }
    out
}

fn unparsable(read: &[TokenWithSpan]) -> String {
    // FNV-1a over the token kinds (variant names only), stable across runs and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in read {
        let kind = token_kind(&t.token);
        for b in kind.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{UNPARSABLE} #{h:016x}")
}

fn token_kind(t: &Token) -> String {
    match t {
        Token::Word(_) => "word".into(),
        Token::Whitespace(_) => "space".into(),
        other => {
            let s = piece(other);
            if s == "?" {
                "literal".into()
            } else {
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literals_removed_and_lists_collapsed() {
        assert_eq!(
            fingerprint("SELECT  phone\n FROM public.consignee WHERE waybill = 'W123' AND n > 42"),
            "SELECT phone FROM public.consignee WHERE waybill = ? AND n > ?"
        );
        assert_eq!(
            fingerprint("select * from t where id in (1, 2, 3) and b = $1"),
            "select * from t where id in (?) and b = $1"
        );
        assert_eq!(
            fingerprint("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ('x', 5)"),
            "INSERT INTO t (a, b) VALUES (?)"
        );
        assert_eq!(
            fingerprint("select $$secret$$, E'x\\'y', x'ff', true -- 13800138000\n"),
            "select ?, ?, ?, ?"
        );
        assert_eq!(fingerprint("select /* 13800138000 */ 1"), "select ?");
    }

    #[test]
    fn unparsable_never_echoes() {
        let f = fingerprint("select 'unterminated 13800138000");
        assert!(f.starts_with(UNPARSABLE), "{f}");
        assert!(!f.contains("1380013"));
        assert_eq!(f, fingerprint("select 'unterminated 13800138000"));
    }

    proptest! {
        #[test]
        fn no_literal_survives(
            s in "[A-Za-z0-9 _%@.-]{6,20}",
            n in 100_000u64..u64::MAX,
            d in "[0-9]{6,12}\\.[0-9]{1,4}",
            tag in "[a-z]{0,3}",
        ) {
            let s = format!("q{s}7");
            let quoted = s.replace('\'', "''");
            let sqls = [
                format!("SELECT a FROM t WHERE b = '{quoted}' AND c = {n}"),
                format!("UPDATE t SET x = E'{quoted}', y = {d} WHERE id IN ({n}, {n})"),
                format!("INSERT INTO t VALUES (${tag}${s}${tag}$, {d})"),
                format!("SELECT 1 -- {s}\n, 2 /* {s} */"),
                format!("SELECT U&'{quoted}', B'0101', X'{n:x}', N'{quoted}'"),
            ];
            for sql in &sqls {
                let f = fingerprint(sql);
                prop_assert!(!f.contains(&s), "{f} contains {s}");
                prop_assert!(!f.contains(&n.to_string()), "{f} contains {n}");
                prop_assert!(!f.contains(&d), "{f} contains {d}");
            }
        }
    }
}

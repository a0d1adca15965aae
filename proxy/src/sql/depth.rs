//! How deeply a SQL text can nest, bounded before it is parsed.
//!
//! A chain of operators (`a AND b AND c ...`, `x::text::text ...`) parses into a tree as deep
//! as the chain is long, and walking, cloning or dropping such a tree recurses once per level:
//! 7,000 `AND`s exhausted a 2 MiB thread stack, which aborts the whole process, not only the
//! session. The tokens that can deepen an expression are counted here (the tokenizer does not
//! recurse): above [`MAX_NESTING`] the analysis refuses the text; above [`GROW_ABOVE`] it runs
//! on a stack of its own, large enough for that many levels.
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Most nesting tokens in a text pgveil analyses.
pub const MAX_NESTING: usize = 50_000;
/// Above this many, the analysis runs on [`GROWN_STACK`].
pub const GROW_ABOVE: usize = 500;
/// The stack the analysis of a deep text runs on: about 3 KiB per level of nesting, with room.
pub const GROWN_STACK: usize = 96 << 20;

/// The tokens of `sql` that can add a level to an expression: operators, and keywords other
/// than plain names (`AND`, `NOT`, `IS`, `COLLATE`, ...). Names, literals, commas and
/// parentheses do not (parentheses are bounded by the parser's recursion limit). A text the
/// tokenizer rejects counts 0: the parser rejects it too, before building anything.
pub fn nesting_tokens(sql: &str) -> usize {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return 0;
    };
    tokens.iter().filter(|t| nests(t)).count()
}

fn nests(t: &Token) -> bool {
    match t {
        Token::Word(w) => w.quote_style.is_none() && w.keyword != Keyword::NoKeyword,
        Token::Whitespace(_)
        | Token::Comma
        | Token::Period
        | Token::LParen
        | Token::RParen
        | Token::SemiColon
        | Token::Number(..)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::EscapedStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::HexStringLiteral(_)
        | Token::Placeholder(_)
        | Token::EOF => false,
        _ => true,
    }
}

/// For each parameter `$n` of `sql` (index `n`), outside literals and comments: how many
/// times its value is used, and how many times it occurs. An occurrence tested only with
/// `IS [NOT] NULL` (a cast between allowed) is no use of the value: an envelope is NULL
/// exactly when its value is.
pub fn placeholder_counts(sql: &str) -> Vec<(usize, usize)> {
    let dialect = PostgreSqlDialect {};
    let mut counts = Vec::new();
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return counts;
    };
    let words: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    for (i, t) in words.iter().enumerate() {
        let Token::Placeholder(p) = t else { continue };
        let Some(n) = p.strip_prefix('$').and_then(|d| d.parse::<usize>().ok()) else {
            continue;
        };
        if n >= 65_536 {
            continue;
        }
        if counts.len() <= n {
            counts.resize(n + 1, (0, 0));
        }
        counts[n].1 += 1;
        let before = i.checked_sub(1).map(|j| words[j]);
        if !(stands_alone(before) && only_null_tested(&words[i + 1..])) {
            counts[n].0 += 1;
        }
    }
    counts
}

/// The token before a parameter leaves it an operand of its own (`x || $1 IS NULL` tests
/// `x || $1`, not `$1`): the start, `(`, `,`, or a keyword that begins a condition.
fn stands_alone(before: Option<&Token>) -> bool {
    match before {
        None | Some(Token::LParen | Token::Comma) => true,
        Some(Token::Word(w)) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::WHERE
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::ON
                | Keyword::HAVING
                | Keyword::SELECT
        ),
        _ => false,
    }
}

/// The tokens after a parameter: `IS [NOT] NULL`, after any `::type` casts.
fn only_null_tested(after: &[&Token]) -> bool {
    let mut rest = after;
    while let [Token::DoubleColon, Token::Word(_), tail @ ..] = rest {
        rest = tail;
    }
    let is = |t: &Token, k: Keyword| matches!(t, Token::Word(w) if w.keyword == k);
    match rest {
        [a, b, ..] if is(a, Keyword::IS) && is(b, Keyword::NULL) => true,
        [a, b, c, ..] => is(a, Keyword::IS) && is(b, Keyword::NOT) && is(c, Keyword::NULL),
        _ => false,
    }
}

/// Run `f` (an analysis of a text with `n` nesting tokens) where its recursion fits.
pub fn with_stack_for<T>(n: usize, f: impl FnOnce() -> T) -> T {
    if n > GROW_ABOVE {
        stacker::grow(GROWN_STACK, f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_placeholders_outside_literals() {
        let c = placeholder_counts("select $1, '$1', $$ $2 $$, $2 -- $1\n from t where c = $1");
        assert_eq!(c, vec![(0, 0), (2, 2), (1, 1)]);
        // Tested only for NULL: not a use of the value.
        let c = placeholder_counts(
            "select 1 from t where ($1 is null or c = $1) and ($2::text is not null or $2 = c)",
        );
        assert_eq!(c, vec![(0, 0), (1, 2), (1, 2)]);
        // An operand of something else, tested for NULL as a whole: a use of the value.
        let c = placeholder_counts("select 1 from t where c || $1 is null and c = $1");
        assert_eq!(c, vec![(0, 0), (2, 2)]);
    }

    #[test]
    fn counts_what_can_nest() {
        assert_eq!(nesting_tokens("select c1, c2 from tab1 where c1 = 1"), 4);
        // `::` twice, and `text` is a keyword: a cast chain nests.
        assert_eq!(nesting_tokens("select c1::text::text from tab1"), 6);
        assert_eq!(
            nesting_tokens("select 1 from tab1 where c1 > 0 and c1 > 0 and c1 > 0"),
            8
        );
        // Wide is not deep: names, literals and commas of a long VALUES list count nothing
        // but its three keywords.
        let values: Vec<String> = (0..5000).map(|i| format!("({i}, 'x{i}', $1)")).collect();
        let insert = format!("insert into tab1 (c1, c2, c3) values {}", values.join(","));
        assert_eq!(nesting_tokens(&insert), 3);
        // Quoted names and strings that spell keywords are no keywords.
        assert_eq!(
            nesting_tokens("select \"and\" from tab1 where c2 = 'and or not'"),
            4
        );
    }
}

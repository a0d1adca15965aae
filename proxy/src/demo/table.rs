//! Render simple-query results as aligned text tables (CJK-aware widths).
use tokio_postgres::SimpleQueryMessage;

/// Display width: CJK and full-width characters take two columns.
fn width(s: &str) -> usize {
    s.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum()
}

fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF |
        0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF |
        0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6)
}

fn pad(s: &str, to: usize) -> String {
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', to.saturating_sub(width(s))));
    out
}

/// Render the rows of a single-statement simple query.
pub fn render(messages: &[SimpleQueryMessage]) -> String {
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                header = cols.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                if header.is_empty() {
                    header = r.columns().iter().map(|c| c.name().to_string()).collect();
                }
                rows.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect(),
                );
            }
            _ => {}
        }
    }
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in &rows {
        for (i, v) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(v));
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| pad(c, *w)).collect();
        format!("   {}", parts.join(" | ").trim_end())
    };
    let mut out = vec![line(&header)];
    out.push(format!(
        "   {}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    ));
    out.extend(rows.iter().map(|r| line(r)));
    out.push(format!("   ({} rows)\n", rows.len()));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_counts_double() {
        assert_eq!(width("王小明"), 6);
        assert_eq!(width("abc"), 3);
        assert_eq!(pad("李", 4), "李  ");
    }
}

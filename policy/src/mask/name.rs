//! Personal names: keep the surname, hide the given name.
use super::FULL_REDACTION;

/// Two-character surnames (复姓) that are kept whole.
const COMPOUND_SURNAMES: [&str; 20] = [
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "轩辕", "令狐", "端木", "独孤", "南宫", "西门", "澹台",
];

/// `张三丰` -> `张**`, `欧阳修` -> `欧阳**`, `Zhang Wei` -> `Z**`. The given name is always
/// replaced by a fixed `**`, so the mask does not reveal its length. A single character becomes
/// `*`.
pub fn cn_name(input: &str, out: &mut String) {
    let trimmed = input.trim();
    let n = trimmed.chars().count();
    if n == 0 {
        if !input.is_empty() {
            out.push_str(FULL_REDACTION);
        }
        return;
    }
    if n == 1 {
        out.push(super::STAR);
        return;
    }
    let surname_len = if n > 2 && COMPOUND_SURNAMES.iter().any(|s| trimmed.starts_with(s)) {
        2
    } else {
        1
    };
    out.extend(trimmed.chars().take(surname_len));
    out.push_str("**");
}

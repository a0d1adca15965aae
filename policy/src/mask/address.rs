//! Addresses: generalise to the district.
use super::FULL_REDACTION;

/// Administrative suffixes: province, city, district, county, banner, prefecture, league.
const ADMIN: [char; 7] = ['省', '市', '区', '县', '旗', '州', '盟'];
/// Characters that start street-level detail. Scanning stops at the first of them, so the cut
/// is never below the district; a district name that happens to contain one (鼓楼区) is cut
/// earlier, which reveals less, never more.
const STREET: [char; 16] = [
    '路', '街', '巷', '弄', '道', '号', '村', '镇', '乡', '里', '楼', '栋', '室', '院', '园', '小',
];

/// `北京市海淀区马连洼街道289号` -> `北京市海淀区****`. The result always ends in `****`, so an
/// address that stops at the district is not returned unchanged. An address with no
/// administrative suffix (for example one in Latin script) becomes `****`.
pub fn address(input: &str, out: &mut String) {
    let mut cut = None;
    for (i, c) in input.char_indices() {
        if STREET.contains(&c) {
            break;
        }
        if ADMIN.contains(&c) {
            cut = Some(i + c.len_utf8());
        }
    }
    if let Some(end) = cut {
        out.push_str(&input[..end]);
    }
    out.push_str(FULL_REDACTION);
}

//! Seeded synthetic sample data for `pgveil demo` and the examples.
//!
//! Everything produced here is fake, but shaped like the real thing, so that masking, encryption
//! and the check-digit validators have something realistic to chew on:
//!
//! * Chinese names (weighted common surnames, a few compound surnames, 1–2 character given names);
//! * 18-digit 居民身份证号 (GB 11643-1999) with real GB/T 2260 district codes and a valid
//!   ISO 7064 MOD 11-2 check character;
//! * mobile numbers with real carrier prefixes, addresses down to the room number, e-mails;
//! * SF-style domestic waybills and UPU S10 international item numbers with a valid check digit;
//! * Chinese e-passport numbers (ICAO 9303 check digit available), PNRs, 13-digit e-tickets,
//!   UnionPay cards passing Luhn.
//!
//! Determinism: the same seed gives byte-identical output on every machine. The only source of
//! randomness is `ChaCha8Rng::seed_from_u64`, whose stream is fixed by its specification. We draw
//! raw `u64`s from it and do our own range reduction (`Generator::below`) instead of relying on
//! `rand`'s distributions, whose exact algorithms may change between `rand` releases. There is no
//! clock, no `thread_rng`, and no hash-map iteration anywhere in here.
//!
//! Output: [`logistics`] and [`travel`] build row structs, which can be emitted as
//! `COPY ... FROM STDIN` text-format payloads or as a plain SQL script of multi-row INSERTs.

use std::collections::BTreeSet;
use std::fmt;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Check digits
// ---------------------------------------------------------------------------------------------

// The algorithms live in pgveil-policy's detectors (the same code that checks
// live data); these wrappers give the generator the digit types it builds with.
use pgveil_policy::detect;

/// Check character (`0`-`9` or `X`) of an 18-digit Chinese ID number, computed from its first 17
/// digits with ISO 7064 MOD 11-2. Returns `None` unless `first17` is exactly 17 ASCII digits.
pub fn gb11643_check_char(first17: &str) -> Option<char> {
    detect::cn_id_card_check_char(first17)
}

/// True if `id` is 18 characters whose last one is the correct GB 11643 check character
/// (lower-case `x` accepted) and whose birth date is a real date.
pub fn gb11643_valid(id: &str) -> bool {
    detect::cn_id_card_valid(id)
}

/// Luhn (mod 10) check digit to append to `payload` (all digits, without the check digit).
/// Returns `None` if `payload` is empty or contains a non-digit.
pub fn luhn_check_digit(payload: &str) -> Option<u8> {
    detect::luhn_check_digit(payload).and_then(digit_value)
}

/// True if `number` (digits only, check digit last) passes the Luhn check.
pub fn luhn_valid(number: &str) -> bool {
    detect::luhn_valid(number)
}

/// ICAO Doc 9303 check digit of an MRZ field (weights 7,3,1; `A`-`Z` = 10-35; `<` = 0).
/// Returns `None` for any other character (lower case included).
pub fn icao_check_digit(field: &str) -> Option<u8> {
    detect::icao9303_check_digit(field).and_then(digit_value)
}

/// Check digit printed after the document number in a passport's MRZ. The document number field
/// is 9 characters, padded with `<`; longer numbers are rejected.
pub fn passport_check_digit(passport_no: &str) -> Option<u8> {
    if passport_no.is_empty() || passport_no.len() > 9 {
        return None;
    }
    icao_check_digit(&format!("{passport_no:<<9}"))
}

/// UPU S10 check digit of the 8-digit serial number of an item identifier such as
/// `EE123456785CN`. Returns `None` unless `serial8` is exactly 8 ASCII digits.
pub fn s10_check_digit(serial8: &str) -> Option<u8> {
    detect::upu_s10_check_digit(serial8).and_then(digit_value)
}

/// True if `item` is a 13-character S10 identifier with a correct check digit.
pub fn s10_valid(item: &str) -> bool {
    detect::upu_s10_valid(item)
}

fn digit_value(c: char) -> Option<u8> {
    c.to_digit(10).map(|d| d as u8)
}

// ---------------------------------------------------------------------------------------------
// Calendar (proleptic Gregorian, no time zone database needed)
// ---------------------------------------------------------------------------------------------

/// Offset of China Standard Time, which all generated timestamps are rendered in.
const CST_OFFSET_SECS: i64 = 8 * 3600;
const SECS_PER_DAY: i64 = 86_400;

/// A calendar date, stored as days since 1970-01-01. Displays as `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub i64);

impl Date {
    /// The date for a year, month (1-12) and day (1-31). Out-of-range days roll over like
    /// `days_from_civil` does; callers in this module only pass valid dates.
    pub const fn from_ymd(year: i64, month: u32, day: u32) -> Date {
        Date(days_from_civil(year, month, day))
    }

    /// (year, month, day).
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.0)
    }

    /// `YYYYMMDD`, as embedded in an ID card number.
    pub fn compact(self) -> String {
        let (y, m, d) = self.ymd();
        format!("{y:04}{m:02}{d:02}")
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// An instant, stored as Unix seconds. Displays in China Standard Time as
/// `YYYY-MM-DD HH:MM:SS+08`, which PostgreSQL accepts as `timestamptz` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The calendar date of this instant in China Standard Time.
    pub fn cst_date(self) -> Date {
        Date((self.0 + CST_OFFSET_SECS).div_euclid(SECS_PER_DAY))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.0 + CST_OFFSET_SECS;
        let secs = local.rem_euclid(SECS_PER_DAY);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        write!(f, "{} {h:02}:{m:02}:{s:02}+08", self.cst_date())
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (m, d) = (month as i64, day as i64);
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// "Now" for every generated dataset: 2025-06-30 18:00:00+08. Fixed so output never depends on
/// the wall clock.
pub const DATASET_NOW: Timestamp =
    Timestamp(days_from_civil(2025, 6, 30) * SECS_PER_DAY + 18 * 3600 - CST_OFFSET_SECS);

const BIRTH_FIRST: Date = Date::from_ymd(1950, 1, 1);
const BIRTH_LAST: Date = Date::from_ymd(2005, 12, 31);

// ---------------------------------------------------------------------------------------------
// Fixed reference tables
// ---------------------------------------------------------------------------------------------

/// Surnames with pinyin and a weight roughly proportional to frequency (units of 0.01 %).
/// The last four are compound surnames and deliberately rare.
#[rustfmt::skip]
const SURNAMES: &[(&str, &str, u32)] = &[
    ("王", "wang", 710), ("李", "li", 700), ("张", "zhang", 640), ("刘", "liu", 540),
    ("陈", "chen", 450), ("杨", "yang", 310), ("黄", "huang", 220), ("赵", "zhao", 200),
    ("吴", "wu", 200), ("周", "zhou", 190), ("徐", "xu", 130), ("孙", "sun", 120),
    ("马", "ma", 110), ("朱", "zhu", 110), ("胡", "hu", 110), ("郭", "guo", 100),
    ("何", "he", 90), ("高", "gao", 90), ("林", "lin", 90), ("罗", "luo", 90),
    ("郑", "zheng", 80), ("梁", "liang", 80), ("谢", "xie", 60), ("宋", "song", 50),
    ("唐", "tang", 50), ("许", "xu", 50), ("韩", "han", 50), ("冯", "feng", 50),
    ("邓", "deng", 50), ("曹", "cao", 50), ("彭", "peng", 40), ("曾", "zeng", 40),
    ("肖", "xiao", 40), ("田", "tian", 40), ("董", "dong", 40), ("袁", "yuan", 40),
    ("潘", "pan", 30), ("于", "yu", 30), ("蒋", "jiang", 30), ("蔡", "cai", 30),
    ("余", "yu", 30), ("杜", "du", 30), ("叶", "ye", 30), ("程", "cheng", 30),
    ("苏", "su", 30), ("魏", "wei", 30), ("吕", "lv", 30), ("丁", "ding", 30),
    ("任", "ren", 30), ("沈", "shen", 30), ("姚", "yao", 25), ("卢", "lu", 25),
    ("姜", "jiang", 25), ("崔", "cui", 25), ("钟", "zhong", 25), ("谭", "tan", 25),
    ("陆", "lu", 25), ("汪", "wang", 25), ("范", "fan", 25), ("金", "jin", 25),
    ("欧阳", "ouyang", 4), ("司马", "sima", 2), ("上官", "shangguan", 2), ("诸葛", "zhuge", 2),
];

/// Given-name characters (with pinyin) typical for men.
#[rustfmt::skip]
const GIVEN_MALE: &[(&str, &str)] = &[
    ("伟", "wei"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("勇", "yong"), ("杰", "jie"),
    ("涛", "tao"), ("明", "ming"), ("超", "chao"), ("刚", "gang"), ("平", "ping"), ("辉", "hui"),
    ("鹏", "peng"), ("宇", "yu"), ("浩", "hao"), ("博", "bo"), ("轩", "xuan"), ("俊", "jun"),
    ("建", "jian"), ("国", "guo"), ("志", "zhi"), ("峰", "feng"), ("斌", "bin"), ("鑫", "xin"),
    ("晨", "chen"), ("子", "zi"), ("文", "wen"), ("海", "hai"), ("东", "dong"), ("亮", "liang"),
    ("华", "hua"), ("成", "cheng"), ("龙", "long"), ("天", "tian"), ("睿", "rui"), ("泽", "ze"),
    ("宏", "hong"), ("昊", "hao"), ("飞", "fei"),
];

/// Given-name characters (with pinyin) typical for women.
#[rustfmt::skip]
const GIVEN_FEMALE: &[(&str, &str)] = &[
    ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"), ("丽", "li"), ("艳", "yan"),
    ("娟", "juan"), ("秀", "xiu"), ("霞", "xia"), ("英", "ying"), ("玉", "yu"), ("萍", "ping"),
    ("红", "hong"), ("婷", "ting"), ("雪", "xue"), ("琳", "lin"), ("欣", "xin"), ("怡", "yi"),
    ("涵", "han"), ("佳", "jia"), ("梓", "zi"), ("思", "si"), ("雨", "yu"), ("嘉", "jia"),
    ("慧", "hui"), ("颖", "ying"), ("洁", "jie"), ("梅", "mei"), ("兰", "lan"), ("晶", "jing"),
    ("倩", "qian"), ("璐", "lu"), ("悦", "yue"), ("诗", "shi"), ("琪", "qi"), ("燕", "yan"),
];

/// A county-level administrative division (GB/T 2260 code) with some of its 街道 and roads.
#[derive(Debug, PartialEq, Eq)]
pub struct Region {
    /// 6-digit address code, the first six digits of an ID number issued there.
    pub code: &'static str,
    pub province: &'static str,
    pub city: &'static str,
    pub district: &'static str,
    pub streets: &'static [&'static str],
    pub roads: &'static [&'static str],
}

impl Region {
    /// City name without the trailing 市, e.g. `深圳`.
    pub fn city_short(&self) -> &'static str {
        self.city.strip_suffix('市').unwrap_or(self.city)
    }

    /// `省市区` prefix of an address; municipalities (北京市北京市) are not repeated.
    fn address_prefix(&self) -> String {
        if self.province == self.city {
            format!("{}{}", self.city, self.district)
        } else {
            format!("{}{}{}", self.province, self.city, self.district)
        }
    }
}

macro_rules! region {
    ($code:literal, $prov:literal, $city:literal, $dist:literal, [$($s:literal),+], [$($r:literal),+]) => {
        Region {
            code: $code, province: $prov, city: $city, district: $dist,
            streets: &[$($s),+], roads: &[$($r),+],
        }
    };
}

/// Districts used for ID numbers and addresses. Codes are real GB/T 2260 codes.
#[rustfmt::skip]
pub static REGIONS: &[Region] = &[
    region!("110101", "北京市", "北京市", "东城区", ["东华门街道", "景山街道", "和平里街道"], ["东四北大街", "安定门内大街", "和平里中街"]),
    region!("110105", "北京市", "北京市", "朝阳区", ["建外街道", "三里屯街道", "望京街道"], ["建国路", "工体北路", "望京街"]),
    region!("110108", "北京市", "北京市", "海淀区", ["中关村街道", "学院路街道", "海淀街道"], ["中关村大街", "学院路", "知春路"]),
    region!("120101", "天津市", "天津市", "和平区", ["小白楼街道", "南营门街道"], ["南京路", "解放北路", "滨江道"]),
    region!("310104", "上海市", "上海市", "徐汇区", ["徐家汇街道", "天平路街道", "田林街道"], ["漕溪北路", "肇嘉浜路", "衡山路"]),
    region!("310115", "上海市", "上海市", "浦东新区", ["陆家嘴街道", "花木街道", "潍坊新村街道"], ["世纪大道", "张杨路", "东方路"]),
    region!("320106", "江苏省", "南京市", "鼓楼区", ["宁海路街道", "湖南路街道"], ["中山北路", "北京西路", "湖南路"]),
    region!("330106", "浙江省", "杭州市", "西湖区", ["北山街道", "文新街道", "西溪街道"], ["文三路", "天目山路", "古墩路"]),
    region!("350203", "福建省", "厦门市", "思明区", ["鹭江街道", "中华街道", "嘉莲街道"], ["中山路", "湖滨南路", "厦禾路"]),
    region!("370202", "山东省", "青岛市", "市南区", ["八大关街道", "香港中路街道"], ["香港中路", "闽江路", "东海西路"]),
    region!("420106", "湖北省", "武汉市", "武昌区", ["中南路街道", "水果湖街道"], ["中南路", "武珞路", "中北路"]),
    region!("430104", "湖南省", "长沙市", "岳麓区", ["岳麓街道", "望月湖街道"], ["麓山南路", "枫林三路", "桐梓坡路"]),
    region!("440106", "广东省", "广州市", "天河区", ["天河南街道", "石牌街道", "林和街道"], ["天河路", "体育西路", "中山大道"]),
    region!("440305", "广东省", "深圳市", "南山区", ["粤海街道", "南头街道", "蛇口街道"], ["深南大道", "科技南路", "南海大道"]),
    region!("500103", "重庆市", "重庆市", "渝中区", ["解放碑街道", "两路口街道"], ["民族路", "中山三路", "解放西路"]),
    region!("510107", "四川省", "成都市", "武侯区", ["玉林街道", "望江路街道"], ["武侯祠大街", "人民南路", "科华北路"]),
    region!("610113", "陕西省", "西安市", "雁塔区", ["小寨路街道", "电子城街道"], ["长安南路", "科技路", "高新路"]),
];

/// Parts of residential compound (小区) names.
#[rustfmt::skip]
const COMPOUND_PREFIXES: &[&str] =
    &["阳光", "翠苑", "金地", "锦绣", "华府", "丽景", "紫荆", "书香", "碧水", "康乐", "万科", "保利"];
#[rustfmt::skip]
const COMPOUND_SUFFIXES: &[&str] = &["花园", "小区", "家园", "名苑", "新村", "公寓"];

/// Mobile prefixes of China Mobile, China Unicom and China Telecom.
#[rustfmt::skip]
const MOBILE_PREFIXES: &[&str] = &[
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153",
    "155", "156", "157", "158", "159", "166", "173", "175", "176", "177", "178", "180", "181",
    "182", "183", "185", "186", "187", "188", "189", "191", "198", "199",
];

#[rustfmt::skip]
const EMAIL_DOMAINS: &[&str] = &[
    "qq.com", "163.com", "126.com", "sina.com", "foxmail.com", "outlook.com", "gmail.com",
    "139.com", "aliyun.com",
];

/// UnionPay BINs (all starting with 62) and the card length the issuer uses.
#[rustfmt::skip]
const UNIONPAY_BINS: &[(&str, usize)] = &[
    ("622202", 19), ("621226", 19), ("622848", 19), ("621700", 19), ("622588", 16),
    ("621483", 16), ("622262", 19), ("621661", 19), ("622908", 18), ("625911", 16),
    ("628288", 16),
];

/// Letters allowed as the second character of a Chinese e-passport number (no I, no O).
const PASSPORT_LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
/// PNR alphabet: upper-case letters and digits without the look-alikes I, O, 0 and 1.
const PNR_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// IATA airline accounting codes: Air China, China Eastern, China Southern, Shenzhen Airlines,
/// Xiamen Airlines, Hainan Airlines.
const DOMESTIC_AIRLINES: &[&str] = &["999", "781", "784", "479", "731", "880"];
/// Foreign carriers seen on international tickets: Emirates, Singapore, Korean Air, Cathay.
const FOREIGN_AIRLINES: &[&str] = &["176", "618", "180", "160"];
/// S10 service indicators: EMS (E*), parcels (CP), registered letters (RR).
const S10_SERVICES: &[&str] = &["EE", "EA", "EB", "EM", "CP", "RR"];

#[rustfmt::skip]
const DOMESTIC_AIRPORTS: &[&str] = &[
    "PEK", "PKX", "SHA", "PVG", "CAN", "SZX", "CTU", "TFU", "HGH", "XIY", "CKG", "KMG", "WUH",
    "NKG", "XMN", "TAO", "CSX",
];
#[rustfmt::skip]
const INTERNATIONAL_AIRPORTS: &[&str] =
    &["NRT", "HND", "ICN", "SIN", "BKK", "LHR", "CDG", "FRA", "SYD", "LAX", "JFK", "DXB"];

/// Foreign destinations for international shipments: (city as written on a Chinese waybill,
/// address text before the house number, address text after it).
#[rustfmt::skip]
const FOREIGN_CITIES: &[(&str, &str, &str)] = &[
    ("东京", "Nishi-Shinjuku 2-", ", Shinjuku-ku, Tokyo, Japan"),
    ("首尔", "", " Teheran-ro, Gangnam-gu, Seoul, Republic of Korea"),
    ("新加坡", "", " Orchard Road, Singapore"),
    ("悉尼", "", " George Street, Sydney NSW 2000, Australia"),
    ("伦敦", "", " Baker Street, London, United Kingdom"),
    ("洛杉矶", "", " Wilshire Blvd, Los Angeles, CA, USA"),
    ("温哥华", "", " Granville Street, Vancouver, BC, Canada"),
];

// ---------------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------------

/// Sex, as encoded by the parity of the 17th digit of an ID number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

/// A generated person: all fields are mutually consistent (the ID number encodes the region,
/// birth date and sex; the e-mail is derived from the pinyin of the name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    /// Pinyin of the surname and of the given name, e.g. ("ouyang", "xiaoming").
    pub pinyin: (String, String),
    pub sex: Sex,
    pub birth: Date,
    /// Region of the ID number (where the person was registered at birth).
    pub region: &'static Region,
    /// Region of `address`.
    pub home: &'static Region,
    pub id_card: String,
    pub phone: String,
    pub email: String,
    /// Current home address; usually, but not always, in `region`.
    pub address: String,
}

/// Deterministic source of synthetic values. Same seed, same sequence of values, everywhere.
///
/// Identifiers (ID numbers, phones, passports, PNRs, tickets, cards, waybills) are never repeated
/// by one generator, so they can sit in UNIQUE columns.
pub struct Generator {
    rng: ChaCha8Rng,
    /// Identifiers handed out so far (an ordered set: no hash-order nondeterminism).
    issued: BTreeSet<String>,
}

/// Attempts to find an identifier not yet issued before giving up and repeating one (only
/// reachable when a tiny space such as one region + birth date + sex is exhausted).
const MAX_FRESH_ATTEMPTS: usize = 1000;

impl Generator {
    /// A generator seeded with `seed` via `ChaCha8Rng::seed_from_u64`.
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            issued: BTreeSet::new(),
        }
    }

    /// Same seed, but an independent ChaCha stream, so that the logistics and travel datasets
    /// built from one seed do not share people.
    fn with_stream(seed: u64, stream: u64) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Generator {
            rng,
            issued: BTreeSet::new(),
        }
    }

    // --- primitives ---------------------------------------------------------------------------

    /// Uniform integer in `0..n` (0 if `n == 0`). Lemire's multiply-and-reject method: unbiased
    /// and defined only in terms of raw `u64`s, so it is stable across `rand` versions.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.rng.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform integer in `lo..=hi` (returns `lo` if the range is empty).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = hi.abs_diff(lo).saturating_add(1);
        lo.wrapping_add(self.below(span) as i64)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A uniformly chosen element of a fixed, non-empty table.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An element of a fixed, non-empty table chosen with probability proportional to `weight`.
    fn pick_weighted<'a, T>(&mut self, items: &'a [T], weight: impl Fn(&T) -> u32) -> &'a T {
        let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
        let mut ticket = self.below(total);
        for item in items {
            let w = u64::from(weight(item));
            if ticket < w {
                return item;
            }
            ticket -= w;
        }
        &items[items.len() - 1]
    }

    /// Calls `make` until it yields an identifier this generator has not issued yet.
    fn fresh(&mut self, mut make: impl FnMut(&mut Generator) -> String) -> String {
        let mut value = make(self);
        for _ in 0..MAX_FRESH_ATTEMPTS {
            if self.issued.insert(value.clone()) {
                break;
            }
            value = make(self);
        }
        value
    }

    /// `n` random decimal digits.
    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| (b'0' + self.below(10) as u8) as char)
            .collect()
    }

    /// `n` characters drawn uniformly from an ASCII alphabet.
    fn chars_from(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n).map(|_| self.pick(alphabet) as char).collect()
    }

    // --- people -------------------------------------------------------------------------------

    /// A realistic Chinese name, e.g. `王伟` or `欧阳思涵`.
    pub fn name(&mut self) -> String {
        let sex = self.sex();
        self.name_with_pinyin(sex).0
    }

    /// Male or female, 50/50.
    pub fn sex(&mut self) -> Sex {
        if self.chance(50) {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// A name for `sex` plus the pinyin of its surname and given name.
    fn name_with_pinyin(&mut self, sex: Sex) -> (String, (String, String)) {
        let &(surname, surname_py, _) = self.pick_weighted(SURNAMES, |s| s.2);
        let pool = match sex {
            Sex::Male => GIVEN_MALE,
            Sex::Female => GIVEN_FEMALE,
        };
        let len = if self.chance(35) { 1 } else { 2 };
        let mut name = surname.to_string();
        let mut given_py = String::new();
        for _ in 0..len {
            let (c, py) = self.pick(pool);
            name.push_str(c);
            given_py.push_str(py);
        }
        (name, (surname_py.to_string(), given_py))
    }

    /// A birth date between 1950-01-01 and 2005-12-31.
    pub fn birth_date(&mut self) -> Date {
        Date(self.range(BIRTH_FIRST.0, BIRTH_LAST.0))
    }

    /// One of the known regions.
    pub fn region(&mut self) -> &'static Region {
        &REGIONS[self.below(REGIONS.len() as u64) as usize]
    }

    /// A valid 18-digit ID number for a random region, birth date and sex.
    pub fn id_card(&mut self) -> String {
        let (region, birth, sex) = (self.region(), self.birth_date(), self.sex());
        self.id_card_for(region, birth, sex)
    }

    /// A valid 18-digit ID number: region code + YYYYMMDD + 3-digit sequence whose last digit
    /// is odd for men and even for women + MOD 11-2 check character.
    pub fn id_card_for(&mut self, region: &Region, birth: Date, sex: Sex) -> String {
        self.fresh(|g| g.any_id_card_for(region, birth, sex))
    }

    fn any_id_card_for(&mut self, region: &Region, birth: Date, sex: Sex) -> String {
        let parity = match sex {
            Sex::Male => 1,
            Sex::Female => 0,
        };
        let mut seq = self.below(100) * 10 + self.below(5) * 2 + parity;
        if seq == 0 {
            seq = 2; // "000" is never issued
        }
        let body = format!("{}{}{seq:03}", region.code, birth.compact());
        // The body is 17 ASCII digits by construction; '0' is an unreachable fallback.
        let check = gb11643_check_char(&body).unwrap_or('0');
        format!("{body}{check}")
    }

    /// A mobile number such as `13812345678`.
    pub fn mobile(&mut self) -> String {
        self.fresh(Generator::any_mobile)
    }

    fn any_mobile(&mut self) -> String {
        let prefix = self.pick(MOBILE_PREFIXES);
        format!("{prefix}{}", self.digits(8))
    }

    /// An address in a random region.
    pub fn address(&mut self) -> String {
        let region = self.region();
        self.address_in(region)
    }

    /// An address down to the room: 省 市 区 街道 路 号 小区 栋 室.
    pub fn address_in(&mut self, region: &Region) -> String {
        let street = self.pick(region.streets);
        let road = self.pick(region.roads);
        let number = self.range(1, 999);
        let compound = format!(
            "{}{}",
            self.pick(COMPOUND_PREFIXES),
            self.pick(COMPOUND_SUFFIXES)
        );
        let building = self.range(1, 30);
        let room = self.range(1, 32) * 100 + self.range(1, 4);
        format!(
            "{}{street}{road}{number}号{compound}{building}栋{room}室",
            region.address_prefix()
        )
    }

    /// An e-mail address, either derived from a pinyin name or a numeric QQ mailbox.
    pub fn email(&mut self) -> String {
        let sex = self.sex();
        let (_, pinyin) = self.name_with_pinyin(sex);
        let birth = self.birth_date();
        self.email_for(&pinyin, birth)
    }

    /// An e-mail address for someone with this pinyin name and birth date.
    fn email_for(&mut self, pinyin: &(String, String), birth: Date) -> String {
        let (sur, given) = pinyin;
        let year = birth.ymd().0;
        let local = match self.below(5) {
            0 => format!("{sur}{given}{}", self.range(1, 99)),
            1 => format!("{sur}.{given}"),
            2 => format!("{given}{sur}{:02}", year.rem_euclid(100)),
            3 => format!("{sur}{given}{year}"),
            _ => {
                let (first, rest) = (self.range(1, 9), self.range(5, 9) as usize);
                return format!("{first}{}@qq.com", self.digits(rest));
            }
        };
        format!("{local}@{}", self.pick(EMAIL_DOMAINS))
    }

    /// A consistent person: name, sex, birth date, ID number, phone, e-mail and address.
    /// 70 % live in the region that issued their ID number.
    pub fn person(&mut self) -> Person {
        let sex = self.sex();
        let (name, pinyin) = self.name_with_pinyin(sex);
        let birth = self.birth_date();
        let region = self.region();
        let id_card = self.id_card_for(region, birth, sex);
        let phone = self.mobile();
        let email = self.email_for(&pinyin, birth);
        let home = if self.chance(70) {
            region
        } else {
            self.region()
        };
        let address = self.address_in(home);
        Person {
            name,
            pinyin,
            sex,
            birth,
            region,
            home,
            id_card,
            phone,
            email,
            address,
        }
    }

    // --- logistics ----------------------------------------------------------------------------

    /// A domestic SF-style waybill number: `SF` + 13 digits (no public checksum).
    pub fn sf_waybill(&mut self) -> String {
        self.fresh(|g| format!("SF{}{}", g.range(1, 9), g.digits(12)))
    }

    /// An international UPU S10 item identifier posted in China, e.g. `EE123456785CN`.
    pub fn s10_waybill(&mut self) -> String {
        self.fresh(Generator::any_s10)
    }

    fn any_s10(&mut self) -> String {
        let service = self.pick(S10_SERVICES);
        let serial = self.digits(8);
        // 8 ASCII digits by construction; the fallback is unreachable.
        let check = s10_check_digit(&serial).unwrap_or(0);
        format!("{service}{serial}{check}CN")
    }

    // --- travel -------------------------------------------------------------------------------

    /// A Chinese e-passport number: `E` + a letter other than I/O + 7 digits, e.g. `EA1234567`.
    /// Its MRZ check digit is [`passport_check_digit`].
    pub fn passport_no(&mut self) -> String {
        self.fresh(|g| {
            let letter = g.pick(PASSPORT_LETTERS) as char;
            format!("E{letter}{}", g.digits(7))
        })
    }

    /// A 6-character record locator without I, O, 0 or 1.
    pub fn pnr(&mut self) -> String {
        self.fresh(|g| g.chars_from(PNR_ALPHABET, 6))
    }

    /// A 13-digit e-ticket number on a Chinese carrier: airline code + 10 digits.
    pub fn ticket_no(&mut self) -> String {
        let airline = self.pick(DOMESTIC_AIRLINES);
        self.ticket_no_on(airline)
    }

    fn ticket_no_on(&mut self, airline: &str) -> String {
        self.fresh(|g| format!("{airline}{}", g.digits(10)))
    }

    /// A UnionPay card number (62 BIN, 16-19 digits) passing the Luhn check.
    pub fn unionpay_card(&mut self) -> String {
        self.fresh(Generator::any_unionpay_card)
    }

    fn any_unionpay_card(&mut self) -> String {
        let (bin, len) = self.pick(UNIONPAY_BINS);
        let payload = format!("{bin}{}", self.digits(len.saturating_sub(bin.len() + 1)));
        // Digits only by construction; the fallback is unreachable.
        let check = luhn_check_digit(&payload).unwrap_or(0);
        format!("{payload}{check}")
    }

    /// A timestamp uniformly between `days_back_max` and `days_back_min` days before
    /// [`DATASET_NOW`].
    pub fn timestamp_days_ago(&mut self, days_back_min: i64, days_back_max: i64) -> Timestamp {
        let secs = self.range(days_back_min * SECS_PER_DAY, days_back_max * SECS_PER_DAY);
        Timestamp(DATASET_NOW.0 - secs)
    }
}

// ---------------------------------------------------------------------------------------------
// Values and tables for output
// ---------------------------------------------------------------------------------------------

/// A number with two decimals (weights, amounts), stored in hundredths: `Fixed2(1234)` is 12.34.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fixed2(pub i64);

impl fmt::Display for Fixed2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// One column value of an output row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A number written unquoted in SQL (`42`, `12.34`).
    Number(String),
    /// Anything written as a quoted literal in SQL (text, dates, timestamps).
    Text(String),
}

impl Value {
    fn text(s: impl ToString) -> Value {
        Value::Text(s.to_string())
    }

    fn opt_text(s: &Option<String>) -> Value {
        s.as_ref().map_or(Value::Null, Value::text)
    }

    fn number(n: impl ToString) -> Value {
        Value::Number(n.to_string())
    }
}

/// Rows of one table, in column order, ready to be written out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRows {
    /// Schema-qualified name, e.g. `public.customers`.
    pub table: &'static str,
    pub columns: &'static [&'static str],
    pub rows: Vec<Vec<Value>>,
}

impl TableRows {
    /// `COPY <table> (<columns>) FROM STDIN` (text format, tab-separated).
    pub fn copy_statement(&self) -> String {
        format!(
            "COPY {} ({}) FROM STDIN",
            self.table,
            self.columns.join(", ")
        )
    }

    /// The COPY text-format payload: one line per row, each ending in `\n`, tab-separated, NULL
    /// as `\N`. There is no `\.` end marker: send the payload as CopyData, then CopyDone.
    pub fn copy_data(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            let fields: Vec<String> = row.iter().map(copy_field).collect();
            out.push_str(&fields.join("\t"));
            out.push('\n');
        }
        out
    }

    /// Multi-row INSERT statements, at most `batch` rows each.
    pub fn sql_inserts(&self, batch: usize) -> String {
        let mut out = String::new();
        for chunk in self.rows.chunks(batch.max(1)) {
            out.push_str(&format!(
                "INSERT INTO {} ({}) VALUES\n",
                self.table,
                self.columns.join(", ")
            ));
            let tuples: Vec<String> = chunk
                .iter()
                .map(|row| {
                    let vals: Vec<String> = row.iter().map(sql_literal).collect();
                    format!("  ({})", vals.join(", "))
                })
                .collect();
            out.push_str(&tuples.join(",\n"));
            out.push_str(";\n");
        }
        out
    }
}

/// Escapes a string for the COPY text format: backslash, tab, newline and carriage return
/// become `\\`, `\t`, `\n` and `\r`. (A NUL byte cannot be stored in PostgreSQL text at all.)
pub fn copy_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out
}

/// One COPY text-format field; NULL is `\N`.
fn copy_field(v: &Value) -> String {
    match v {
        Value::Null => "\\N".to_string(),
        Value::Number(s) | Value::Text(s) => copy_escape(s),
    }
}

/// A SQL literal that is correct whatever `standard_conforming_strings` is set to: quotes are
/// doubled, and strings containing a backslash use the `E'...'` form with it doubled.
pub fn sql_quote(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

fn sql_literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::Number(s) => s.clone(),
        Value::Text(s) => sql_quote(s),
    }
}

/// Statement resetting a serial column's sequence past the explicit ids that were loaded.
fn setval_statement(table: &str, column: &str) -> String {
    format!(
        "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
         COALESCE((SELECT max({column}) FROM {table}), 0) + 1, false)"
    )
}

/// Rows per INSERT statement in the SQL script.
const INSERT_BATCH: usize = 200;

/// `(COPY statement, payload)` for each table, in load order.
fn copy_payloads_of(tables: &[TableRows]) -> Vec<(String, String)> {
    tables
        .iter()
        .map(|t| (t.copy_statement(), t.copy_data()))
        .collect()
}

/// A psql-ready script: one transaction with all INSERTs, then the sequence fix-ups.
fn sql_script_of(title: &str, seed: u64, tables: &[TableRows], post_load: &[String]) -> String {
    let mut out = format!(
        "-- pgveil {title} sample data, seed {seed}. Synthetic: every person here is fictitious.\n\
         -- Generated by proxy/src/demo/data.rs; load with psql -v ON_ERROR_STOP=1 -f <file>.\n\
         BEGIN;\n"
    );
    for t in tables {
        out.push_str(&t.sql_inserts(INSERT_BATCH));
    }
    for stmt in post_load {
        out.push_str(stmt);
        out.push_str(";\n");
    }
    out.push_str("COMMIT;\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Logistics dataset
// ---------------------------------------------------------------------------------------------

/// A row of `public.customers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub id_card: String,
    pub phone: String,
    pub email: Option<String>,
    pub address: String,
    pub created_at: Timestamp,
}

/// A row of `public.shipments`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shipment {
    pub id: i64,
    pub customer_id: i64,
    pub origin_city: String,
    pub destination_city: String,
    pub weight_kg: Fixed2,
    pub status: &'static str,
    pub created_at: Timestamp,
}

/// A row of `public.waybills`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waybill {
    pub waybill_no: String,
    pub shipment_id: i64,
    pub sender_name: String,
    pub sender_phone: String,
    pub sender_address: String,
    pub consignee_name: String,
    pub consignee_phone: String,
    pub consignee_address: String,
    pub consignee_id_card: Option<String>,
    pub driver_name: String,
    pub driver_phone: String,
    pub created_at: Timestamp,
}

/// The logistics sample dataset (examples/logistics/schema.sql).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogisticsData {
    pub seed: u64,
    pub customers: Vec<Customer>,
    pub shipments: Vec<Shipment>,
    pub waybills: Vec<Waybill>,
}

#[rustfmt::skip]
const CUSTOMER_COLUMNS: &[&str] = &["id", "name", "id_card", "phone", "email", "address", "created_at"];
#[rustfmt::skip]
const SHIPMENT_COLUMNS: &[&str] =
    &["id", "customer_id", "origin_city", "destination_city", "weight_kg", "status", "created_at"];
#[rustfmt::skip]
const WAYBILL_COLUMNS: &[&str] = &[
    "waybill_no", "shipment_id", "sender_name", "sender_phone", "sender_address",
    "consignee_name", "consignee_phone", "consignee_address", "consignee_id_card",
    "driver_name", "driver_phone", "created_at",
];

/// Builds the logistics dataset: `customers` customers, 0-6 shipments each (about 3 on
/// average, so 200 customers give ~600 shipments), and one waybill per shipment.
pub fn logistics(seed: u64, customers: usize) -> LogisticsData {
    let mut g = Generator::with_stream(seed, 1);
    let drivers: Vec<Person> = (0..(customers / 20).max(5)).map(|_| g.person()).collect();
    let mut data = LogisticsData {
        seed,
        customers: Vec::new(),
        shipments: Vec::new(),
        waybills: Vec::new(),
    };
    for i in 0..customers {
        let (customer, home) = new_customer(&mut g, i as i64 + 1);
        for _ in 0..g.below(7) {
            let id = data.shipments.len() as i64 + 1;
            let (shipment, consignee) = new_shipment(&mut g, id, &customer, home);
            let driver = &drivers[g.below(drivers.len() as u64) as usize];
            data.waybills.push(new_waybill(
                &mut g, &customer, &shipment, &consignee, driver,
            ));
            data.shipments.push(shipment);
        }
        data.customers.push(customer);
    }
    data
}

/// A customer and the city they live in (origin of their shipments).
fn new_customer(g: &mut Generator, id: i64) -> (Customer, &'static Region) {
    let p = g.person();
    let home = p.home;
    let customer = Customer {
        id,
        email: if g.chance(90) { Some(p.email) } else { None },
        name: p.name,
        id_card: p.id_card,
        phone: p.phone,
        address: p.address,
        created_at: g.timestamp_days_ago(200, 730),
    };
    (customer, home)
}

/// Who receives a shipment and where.
struct Consignee {
    person: Person,
    /// Domestic: the person's address in the destination city; international: a foreign one.
    address: String,
    international: bool,
}

/// A shipment from the customer's city, 8 % of them abroad, plus its consignee.
fn new_shipment(g: &mut Generator, id: i64, c: &Customer, home: &Region) -> (Shipment, Consignee) {
    let person = g.person();
    let (destination_city, address, international) = if g.chance(8) {
        let (city, before, after) = g.pick(FOREIGN_CITIES);
        (
            city.to_string(),
            format!("{before}{}{after}", g.range(1, 300)),
            true,
        )
    } else {
        let dest = other_region(g, home);
        (dest.city_short().to_string(), g.address_in(dest), false)
    };
    let created_at = g.timestamp_days_ago(0, 180);
    let shipment = Shipment {
        id,
        customer_id: c.id,
        origin_city: home.city_short().to_string(),
        destination_city,
        weight_kg: parcel_weight(g),
        status: shipment_status(g, created_at),
        created_at,
    };
    (
        shipment,
        Consignee {
            person,
            address,
            international,
        },
    )
}

/// A region in a different city than `home`.
fn other_region(g: &mut Generator, home: &Region) -> &'static Region {
    let others: Vec<&'static Region> = REGIONS.iter().filter(|r| r.city != home.city).collect();
    let i = g.below(others.len() as u64) as usize;
    others.get(i).copied().unwrap_or(&REGIONS[0])
}

/// Mostly small parcels (0.10-5.00 kg), sometimes heavy ones (up to 30 kg).
fn parcel_weight(g: &mut Generator) -> Fixed2 {
    if g.chance(80) {
        Fixed2(g.range(10, 500))
    } else {
        Fixed2(g.range(500, 3000))
    }
}

/// Old shipments are finished; recent ones can be anywhere in the pipeline.
fn shipment_status(g: &mut Generator, created_at: Timestamp) -> &'static str {
    let age_days = (DATASET_NOW.0 - created_at.0) / SECS_PER_DAY;
    if age_days > 7 {
        if g.chance(96) {
            "delivered"
        } else {
            "returned"
        }
    } else {
        g.pick(&[
            "created",
            "picked_up",
            "in_transit",
            "in_transit",
            "delivered",
        ])
    }
}

/// The waybill printed for a shipment: sender = customer, consignee ID recorded for all
/// international items (customs) and for 20 % of domestic ones (real-name delivery).
fn new_waybill(
    g: &mut Generator,
    c: &Customer,
    s: &Shipment,
    to: &Consignee,
    driver: &Person,
) -> Waybill {
    let waybill_no = if to.international {
        g.s10_waybill()
    } else {
        g.sf_waybill()
    };
    let with_id = to.international || g.chance(20);
    Waybill {
        waybill_no,
        shipment_id: s.id,
        sender_name: c.name.clone(),
        sender_phone: c.phone.clone(),
        sender_address: c.address.clone(),
        consignee_name: to.person.name.clone(),
        consignee_phone: to.person.phone.clone(),
        consignee_address: to.address.clone(),
        consignee_id_card: with_id.then(|| to.person.id_card.clone()),
        driver_name: driver.name.clone(),
        driver_phone: driver.phone.clone(),
        created_at: Timestamp(s.created_at.0 + g.range(60, 1800)),
    }
}

impl LogisticsData {
    /// The three tables in foreign-key load order.
    pub fn tables(&self) -> Vec<TableRows> {
        vec![
            TableRows {
                table: "public.customers",
                columns: CUSTOMER_COLUMNS,
                rows: self.customers.iter().map(Customer::values).collect(),
            },
            TableRows {
                table: "public.shipments",
                columns: SHIPMENT_COLUMNS,
                rows: self.shipments.iter().map(Shipment::values).collect(),
            },
            TableRows {
                table: "public.waybills",
                columns: WAYBILL_COLUMNS,
                rows: self.waybills.iter().map(Waybill::values).collect(),
            },
        ]
    }

    /// `(COPY ... FROM STDIN statement, text-format payload)` per table, in load order.
    /// Run [`LogisticsData::post_load_sql`] afterwards.
    pub fn copy_payloads(&self) -> Vec<(String, String)> {
        copy_payloads_of(&self.tables())
    }

    /// Statements to run after loading: move the bigserial sequences past the explicit ids.
    pub fn post_load_sql(&self) -> Vec<String> {
        vec![
            setval_statement("public.customers", "id"),
            setval_statement("public.shipments", "id"),
        ]
    }

    /// The whole dataset as one psql script (BEGIN; multi-row INSERTs; setval; COMMIT).
    pub fn to_sql_inserts(&self) -> String {
        sql_script_of(
            "logistics",
            self.seed,
            &self.tables(),
            &self.post_load_sql(),
        )
    }
}

impl Customer {
    fn values(&self) -> Vec<Value> {
        vec![
            Value::number(self.id),
            Value::text(&self.name),
            Value::text(&self.id_card),
            Value::text(&self.phone),
            Value::opt_text(&self.email),
            Value::text(&self.address),
            Value::text(self.created_at),
        ]
    }
}

impl Shipment {
    fn values(&self) -> Vec<Value> {
        vec![
            Value::number(self.id),
            Value::number(self.customer_id),
            Value::text(&self.origin_city),
            Value::text(&self.destination_city),
            Value::number(self.weight_kg),
            Value::text(self.status),
            Value::text(self.created_at),
        ]
    }
}

impl Waybill {
    fn values(&self) -> Vec<Value> {
        vec![
            Value::text(&self.waybill_no),
            Value::number(self.shipment_id),
            Value::text(&self.sender_name),
            Value::text(&self.sender_phone),
            Value::text(&self.sender_address),
            Value::text(&self.consignee_name),
            Value::text(&self.consignee_phone),
            Value::text(&self.consignee_address),
            Value::opt_text(&self.consignee_id_card),
            Value::text(&self.driver_name),
            Value::text(&self.driver_phone),
            Value::text(self.created_at),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Travel dataset
// ---------------------------------------------------------------------------------------------

/// A row of `public.travellers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traveller {
    pub id: i64,
    pub name: String,
    /// `None` for travellers who only fly domestically.
    pub passport_no: Option<String>,
    pub id_card: String,
    pub phone: String,
    pub email: Option<String>,
    /// Same date as encoded in `id_card`.
    pub date_of_birth: Date,
    pub created_at: Timestamp,
}

/// A row of `public.bookings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Booking {
    pub id: i64,
    pub traveller_id: i64,
    pub pnr: String,
    pub ticket_no: String,
    /// `None` when paid by other means (e.g. corporate account).
    pub card_number: Option<String>,
    pub amount: Fixed2,
    /// IATA airport code.
    pub origin: String,
    /// IATA airport code.
    pub destination: String,
    pub departure: Date,
    pub created_at: Timestamp,
}

/// The travel sample dataset (examples/travel/schema.sql).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TravelData {
    pub seed: u64,
    pub travellers: Vec<Traveller>,
    pub bookings: Vec<Booking>,
}

#[rustfmt::skip]
const TRAVELLER_COLUMNS: &[&str] =
    &["id", "name", "passport_no", "id_card", "phone", "email", "date_of_birth", "created_at"];
#[rustfmt::skip]
const BOOKING_COLUMNS: &[&str] = &[
    "id", "traveller_id", "pnr", "ticket_no", "card_number", "amount", "origin", "destination",
    "departure", "created_at",
];

/// Builds the travel dataset: `travellers` travellers with 1-5 bookings each (3 on average).
pub fn travel(seed: u64, travellers: usize) -> TravelData {
    let mut g = Generator::with_stream(seed, 2);
    let mut data = TravelData {
        seed,
        travellers: Vec::new(),
        bookings: Vec::new(),
    };
    for i in 0..travellers {
        let t = new_traveller(&mut g, i as i64 + 1);
        for _ in 0..g.range(1, 5) {
            let id = data.bookings.len() as i64 + 1;
            data.bookings.push(new_booking(&mut g, id, &t));
        }
        data.travellers.push(t);
    }
    data
}

/// A traveller; 70 % hold a passport, 85 % left an e-mail.
fn new_traveller(g: &mut Generator, id: i64) -> Traveller {
    let p = g.person();
    Traveller {
        id,
        name: p.name,
        passport_no: g.chance(70).then(|| g.passport_no()),
        id_card: p.id_card,
        phone: p.phone,
        email: g.chance(85).then_some(p.email),
        date_of_birth: p.birth,
        created_at: g.timestamp_days_ago(200, 900),
    }
}

/// A booking; passport holders fly abroad 30 % of the time.
fn new_booking(g: &mut Generator, id: i64, t: &Traveller) -> Booking {
    let international = t.passport_no.is_some() && g.chance(30);
    let origin = g.pick(DOMESTIC_AIRPORTS);
    let (destination, airline, amount_yuan) = if international {
        let airline = if g.chance(75) {
            g.pick(DOMESTIC_AIRLINES)
        } else {
            g.pick(FOREIGN_AIRLINES)
        };
        (
            g.pick(INTERNATIONAL_AIRPORTS),
            airline,
            g.range(2000, 16000),
        )
    } else {
        (
            other_airport(g, origin),
            g.pick(DOMESTIC_AIRLINES),
            g.range(300, 2500),
        )
    };
    let created_at = g.timestamp_days_ago(0, 180);
    Booking {
        id,
        traveller_id: t.id,
        pnr: g.pnr(),
        ticket_no: g.ticket_no_on(airline),
        card_number: g.chance(85).then(|| g.unionpay_card()),
        amount: Fixed2(amount_yuan * 100),
        origin: origin.to_string(),
        destination: destination.to_string(),
        departure: Date(created_at.cst_date().0 + g.range(1, 90)),
        created_at,
    }
}

/// A domestic airport other than `origin`.
fn other_airport(g: &mut Generator, origin: &str) -> &'static str {
    let others: Vec<&'static str> = DOMESTIC_AIRPORTS
        .iter()
        .copied()
        .filter(|a| *a != origin)
        .collect();
    let i = g.below(others.len() as u64) as usize;
    others.get(i).copied().unwrap_or("PEK")
}

impl TravelData {
    /// The two tables in foreign-key load order.
    pub fn tables(&self) -> Vec<TableRows> {
        vec![
            TableRows {
                table: "public.travellers",
                columns: TRAVELLER_COLUMNS,
                rows: self.travellers.iter().map(Traveller::values).collect(),
            },
            TableRows {
                table: "public.bookings",
                columns: BOOKING_COLUMNS,
                rows: self.bookings.iter().map(Booking::values).collect(),
            },
        ]
    }

    /// `(COPY ... FROM STDIN statement, text-format payload)` per table, in load order.
    /// Run [`TravelData::post_load_sql`] afterwards.
    pub fn copy_payloads(&self) -> Vec<(String, String)> {
        copy_payloads_of(&self.tables())
    }

    /// Statements to run after loading: move the bigserial sequences past the explicit ids.
    pub fn post_load_sql(&self) -> Vec<String> {
        vec![
            setval_statement("public.travellers", "id"),
            setval_statement("public.bookings", "id"),
        ]
    }

    /// The whole dataset as one psql script (BEGIN; multi-row INSERTs; setval; COMMIT).
    pub fn to_sql_inserts(&self) -> String {
        sql_script_of("travel", self.seed, &self.tables(), &self.post_load_sql())
    }
}

impl Traveller {
    fn values(&self) -> Vec<Value> {
        vec![
            Value::number(self.id),
            Value::text(&self.name),
            Value::opt_text(&self.passport_no),
            Value::text(&self.id_card),
            Value::text(&self.phone),
            Value::opt_text(&self.email),
            Value::text(self.date_of_birth),
            Value::text(self.created_at),
        ]
    }
}

impl Booking {
    fn values(&self) -> Vec<Value> {
        vec![
            Value::number(self.id),
            Value::number(self.traveller_id),
            Value::text(&self.pnr),
            Value::text(&self.ticket_no),
            Value::opt_text(&self.card_number),
            Value::number(self.amount),
            Value::text(&self.origin),
            Value::text(&self.destination),
            Value::text(self.departure),
            Value::text(self.created_at),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    // --- check digits against published examples ---------------------------------------------

    #[test]
    fn gb11643_published_example() {
        // GB 11643-1999 appendix example.
        assert_eq!(gb11643_check_char("11010519491231002"), Some('X'));
        assert!(gb11643_valid("11010519491231002X"));
        assert!(gb11643_valid("11010519491231002x"));
        assert!(!gb11643_valid("110105194912310021"));
        assert_eq!(gb11643_check_char("1101051949123100"), None);
        assert_eq!(gb11643_check_char("1101051949123100A"), None);
        assert!(!gb11643_valid("１１010519491231002X")); // full-width digits are not ASCII
    }

    #[test]
    fn luhn_published_example() {
        assert!(luhn_valid("4539148803436467"));
        assert_eq!(luhn_check_digit("453914880343646"), Some(7));
        assert_eq!(luhn_check_digit("7992739871"), Some(3)); // the classic 79927398713
        assert!(!luhn_valid("4539148803436468"));
        assert_eq!(luhn_check_digit(""), None);
        assert_eq!(luhn_check_digit("12a4"), None);
    }

    #[test]
    fn icao_specimen_passport() {
        // ICAO Doc 9303 part 4 specimen (Utopia): L898902C<3 -> 6, DOB 740812 -> 2, expiry 120415 -> 9.
        assert_eq!(icao_check_digit("L898902C3"), Some(6));
        assert_eq!(passport_check_digit("L898902C3"), Some(6));
        assert_eq!(icao_check_digit("740812"), Some(2));
        assert_eq!(icao_check_digit("120415"), Some(9));
        assert_eq!(
            passport_check_digit("L898902C"),
            icao_check_digit("L898902C<")
        );
        assert_eq!(icao_check_digit("l898902c3"), None);
        assert_eq!(passport_check_digit("ABCDEFGHIJ"), None);
    }

    #[test]
    fn s10_published_examples() {
        // UPU S10 standard example EE123456785CN, and RR473124829GB.
        assert_eq!(s10_check_digit("12345678"), Some(5));
        assert_eq!(s10_check_digit("47312482"), Some(9));
        assert!(s10_valid("EE123456785CN"));
        assert!(s10_valid("RR473124829GB"));
        assert!(!s10_valid("EE123456784CN"));
        assert!(!s10_valid("EE12345678CN"));
        assert_eq!(s10_check_digit("1234567"), None);
    }

    #[test]
    fn s10_special_cases_10_and_11() {
        // Find serials where 11 - sum%11 is 10 and 11, and check the mapping to 0 and 5.
        let weights = [8u32, 6, 4, 2, 3, 5, 9, 7];
        let mut seen = (false, false);
        for n in 0..20_000u32 {
            let serial = format!("{n:08}");
            let sum: u32 = serial
                .bytes()
                .zip(weights)
                .map(|(b, w)| u32::from(b - b'0') * w)
                .sum();
            match 11 - sum % 11 {
                10 => {
                    assert_eq!(s10_check_digit(&serial), Some(0));
                    seen.0 = true;
                }
                11 => {
                    assert_eq!(s10_check_digit(&serial), Some(5));
                    seen.1 = true;
                }
                _ => {}
            }
        }
        assert_eq!(seen, (true, true));
    }

    // --- calendar ------------------------------------------------------------------------------

    #[test]
    fn calendar_round_trip() {
        assert_eq!(Date::from_ymd(1970, 1, 1), Date(0));
        assert_eq!(Date::from_ymd(2000, 3, 1), Date(11_017));
        assert_eq!(Date::from_ymd(2024, 2, 29).to_string(), "2024-02-29");
        for d in BIRTH_FIRST.0 - 1000..DATASET_NOW.cst_date().0 + 1000 {
            let (y, m, day) = Date(d).ymd();
            assert_eq!(Date::from_ymd(y, m, day), Date(d));
        }
        assert_eq!(DATASET_NOW.to_string(), "2025-06-30 18:00:00+08");
    }

    // --- generator -----------------------------------------------------------------------------

    #[test]
    fn same_seed_same_output_different_seed_different_output() {
        assert_eq!(logistics(42, 50), logistics(42, 50));
        assert_eq!(travel(42, 50), travel(42, 50));
        assert_eq!(
            logistics(42, 50).to_sql_inserts(),
            logistics(42, 50).to_sql_inserts()
        );
        assert_ne!(logistics(42, 50).customers, logistics(43, 50).customers);
        assert_ne!(travel(42, 50).travellers, travel(43, 50).travellers);
    }

    #[test]
    fn output_is_pinned_for_seed_1() {
        // Guards the promise "same seed, same data on every machine" against accidental changes
        // of the value stream (a rand/rand_chacha upgrade, a reordered table, an extra draw).
        // If you change the generator on purpose, update these values.
        let mut g = Generator::new(1);
        assert_eq!(g.below(1_000_000), 402_485);
        assert_eq!(g.name(), "周辉");
        assert_eq!(g.id_card(), "440106197510288778");
        assert_eq!(g.mobile(), "15950242999");
        assert_eq!(g.unionpay_card(), "6212263430015201961");
        let l = logistics(1, 3);
        assert_eq!(l.customers[0].id_card, "510107200411244293");
        assert_eq!(l.waybills[0].waybill_no, "EB844266159CN");
        assert_eq!(l.shipments.len(), 7);
        let t = travel(1, 3);
        assert_eq!(t.travellers[0].name, "朱涵");
        assert_eq!(t.bookings[0].pnr, "8XP88D");
        assert_eq!(t.bookings.len(), 10);
    }

    #[test]
    fn relative_sizes() {
        let l = logistics(1, 200);
        assert_eq!(l.customers.len(), 200);
        assert!(
            (450..=750).contains(&l.shipments.len()),
            "{}",
            l.shipments.len()
        );
        assert_eq!(l.waybills.len(), l.shipments.len());
        let t = travel(1, 200);
        assert!(
            (450..=750).contains(&t.bookings.len()),
            "{}",
            t.bookings.len()
        );
    }

    #[test]
    fn id_cards_are_valid_and_consistent() {
        let mut g = Generator::new(3);
        for _ in 0..2000 {
            let p = g.person();
            assert!(gb11643_valid(&p.id_card), "{}", p.id_card);
            assert_eq!(&p.id_card[..6], p.region.code);
            assert_eq!(&p.id_card[6..14], p.birth.compact());
            let odd = (p.id_card.as_bytes()[16] - b'0') % 2 == 1;
            assert_eq!(odd, p.sex == Sex::Male);
            assert_ne!(&p.id_card[14..17], "000");
            assert!(p.birth >= BIRTH_FIRST && p.birth <= BIRTH_LAST);
            assert!(p.address.starts_with(&p.home.address_prefix()));
        }
        let t = travel(5, 300);
        for tr in &t.travellers {
            assert!(gb11643_valid(&tr.id_card));
            assert_eq!(&tr.id_card[6..14], tr.date_of_birth.compact());
        }
        let l = logistics(5, 300);
        let ids = l.customers.iter().map(|c| &c.id_card).chain(
            l.waybills
                .iter()
                .filter_map(|w| w.consignee_id_card.as_ref()),
        );
        for id in ids {
            assert!(gb11643_valid(id), "{id}");
        }
    }

    #[test]
    fn bank_cards_pass_luhn() {
        let t = travel(9, 500);
        let cards: Vec<&String> = t
            .bookings
            .iter()
            .filter_map(|b| b.card_number.as_ref())
            .collect();
        assert!(cards.len() > 1000);
        for c in cards {
            assert!(luhn_valid(c), "{c}");
            assert!(c.starts_with("62"));
            assert!((16..=19).contains(&c.len()));
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn waybills_are_well_formed_and_unique() {
        let l = logistics(11, 2000);
        let mut s10 = 0;
        for w in &l.waybills {
            if w.waybill_no.starts_with("SF") {
                assert_eq!(w.waybill_no.len(), 15);
                assert!(w.waybill_no[2..].bytes().all(|b| b.is_ascii_digit()));
            } else {
                assert!(s10_valid(&w.waybill_no), "{}", w.waybill_no);
                assert!(w.waybill_no.ends_with("CN"));
                assert!(w.consignee_id_card.is_some());
                s10 += 1;
            }
        }
        assert!(s10 > 100, "{s10}");
        let unique: BTreeSet<&String> = l.waybills.iter().map(|w| &w.waybill_no).collect();
        assert_eq!(unique.len(), l.waybills.len());
    }

    #[test]
    fn passports_pnrs_tickets() {
        let t = travel(13, 1000);
        let mut passports = 0;
        for tr in &t.travellers {
            let Some(p) = &tr.passport_no else { continue };
            passports += 1;
            let b = p.as_bytes();
            assert_eq!(b.len(), 9);
            assert_eq!(b[0], b'E');
            assert!(b[1].is_ascii_uppercase() && b[1] != b'I' && b[1] != b'O');
            assert!(b[2..].iter().all(u8::is_ascii_digit));
            // Independent 7-3-1 computation.
            let sum: u32 = p
                .bytes()
                .enumerate()
                .map(|(i, c)| {
                    let v = if c.is_ascii_digit() {
                        u32::from(c - b'0')
                    } else {
                        u32::from(c - b'A') + 10
                    };
                    v * [7, 3, 1][i % 3]
                })
                .sum();
            assert_eq!(passport_check_digit(p), Some((sum % 10) as u8));
        }
        assert!(passports > 500);
        let mut pnrs = BTreeSet::new();
        for b in &t.bookings {
            assert_eq!(b.pnr.len(), 6);
            assert!(b.pnr.bytes().all(|c| PNR_ALPHABET.contains(&c)));
            assert!(!b.pnr.contains(['I', 'O', '0', '1']));
            assert!(pnrs.insert(b.pnr.clone()));
            assert_eq!(b.ticket_no.len(), 13);
            assert!(b.ticket_no.bytes().all(|c| c.is_ascii_digit()));
            assert!(
                DOMESTIC_AIRLINES.contains(&&b.ticket_no[..3])
                    || FOREIGN_AIRLINES.contains(&&b.ticket_no[..3])
            );
            assert_ne!(b.origin, b.destination);
            assert!(b.departure > b.created_at.cst_date());
            let traveller = &t.travellers[(b.traveller_id - 1) as usize];
            if INTERNATIONAL_AIRPORTS.contains(&b.destination.as_str()) {
                assert!(traveller.passport_no.is_some());
            }
        }
    }

    #[test]
    fn phones_have_mobile_shape() {
        let l = logistics(17, 300);
        let phones = l.customers.iter().map(|c| &c.phone).chain(
            l.waybills
                .iter()
                .flat_map(|w| [&w.consignee_phone, &w.driver_phone, &w.sender_phone]),
        );
        for p in phones {
            let b = p.as_bytes();
            assert_eq!(b.len(), 11, "{p}");
            assert_eq!(b[0], b'1');
            assert!((b'3'..=b'9').contains(&b[1]));
            assert!(b.iter().all(u8::is_ascii_digit));
            assert!(MOBILE_PREFIXES.contains(&&p[..3]));
        }
    }

    fn is_cjk(c: char) -> bool {
        ('\u{4E00}'..='\u{9FFF}').contains(&c)
    }

    #[test]
    fn names_are_cjk_and_addresses_detailed() {
        let mut g = Generator::new(19);
        let mut compound = 0;
        for _ in 0..5000 {
            let n = g.name();
            let len = n.chars().count();
            assert!((2..=4).contains(&len), "{n}");
            assert!(n.chars().all(is_cjk), "{n}");
            if ["欧阳", "司马", "上官", "诸葛"]
                .iter()
                .any(|s| n.starts_with(s))
            {
                compound += 1;
            }
        }
        assert!(compound > 0 && compound < 50, "{compound}");
        for _ in 0..200 {
            let a = g.address();
            for part in ["区", "街道", "号", "栋", "室"] {
                assert!(a.contains(part), "{a}");
            }
            assert!(
                a.contains('路') || a.contains('街') || a.contains('道'),
                "{a}"
            );
        }
    }

    #[test]
    fn emails_look_like_emails() {
        let mut g = Generator::new(23);
        for _ in 0..500 {
            let e = g.email();
            let (local, domain) = e.split_once('@').unwrap_or(("", ""));
            assert!(!local.is_empty() && domain.contains('.'), "{e}");
            assert!(e.is_ascii() && !e.contains(' '));
        }
    }

    #[test]
    fn shipments_are_consistent() {
        let l = logistics(29, 300);
        for (s, w) in l.shipments.iter().zip(&l.waybills) {
            assert_eq!(w.shipment_id, s.id);
            assert!(s.customer_id >= 1 && s.customer_id as usize <= l.customers.len());
            assert_ne!(s.origin_city, s.destination_city);
            assert!(s.weight_kg.0 >= 10 && s.weight_kg.0 <= 3000);
            assert!(w.created_at > s.created_at);
            let c = &l.customers[(s.customer_id - 1) as usize];
            assert_eq!(w.sender_name, c.name);
            assert!(c.created_at < s.created_at);
            if w.waybill_no.starts_with("SF") {
                assert!(
                    w.consignee_address.contains(s.destination_city.as_str()),
                    "{} {}",
                    s.destination_city,
                    w.consignee_address
                );
            }
        }
    }

    // --- output --------------------------------------------------------------------------------

    /// Minimal COPY text-format field decoder for the round-trip test.
    fn copy_decode(field: &str) -> Option<String> {
        if field == "\\N" {
            return None;
        }
        let mut out = String::new();
        let mut chars = field.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => panic!("dangling backslash in {field:?}"),
            }
        }
        Some(out)
    }

    #[test]
    fn copy_escaping_round_trips() {
        let tricky = [
            "plain",
            "",
            "tab\there",
            "line1\nline2",
            "cr\r\nlf",
            "back\\slash",
            "\\N",
            "\\",
            "trailing\\",
            "中文\t地址\n第二行",
            "'quoted' \"double\"",
            "\\t literal",
        ];
        let rows = TableRows {
            table: "t",
            columns: &["a", "b"],
            rows: tricky
                .iter()
                .map(|s| vec![Value::text(s), Value::Null])
                .collect(),
        };
        let data = rows.copy_data();
        let lines: Vec<&str> = data
            .strip_suffix('\n')
            .unwrap_or(&data)
            .split('\n')
            .collect();
        assert_eq!(lines.len(), tricky.len());
        for (line, original) in lines.iter().zip(tricky) {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 2, "{line:?}");
            assert_eq!(copy_decode(fields[0]).as_deref(), Some(original));
            assert_eq!(copy_decode(fields[1]), None);
        }
    }

    #[test]
    fn sql_quoting() {
        assert_eq!(sql_quote("O'Brien"), "'O''Brien'");
        assert_eq!(sql_quote("a\\b'c"), "E'a\\\\b''c'");
        assert_eq!(sql_quote("王伟"), "'王伟'");
        let rows = TableRows {
            table: "public.t",
            columns: &["id", "v"],
            rows: vec![
                vec![Value::number(1), Value::Null],
                vec![Value::number(2), Value::text("x")],
            ],
        };
        assert_eq!(rows.sql_inserts(1), "INSERT INTO public.t (id, v) VALUES\n  (1, NULL);\nINSERT INTO public.t (id, v) VALUES\n  (2, 'x');\n");
        assert_eq!(Fixed2(1234).to_string(), "12.34");
        assert_eq!(Fixed2(5).to_string(), "0.05");
        assert_eq!(Fixed2(-150).to_string(), "-1.50");
    }

    #[test]
    fn payload_shapes_match_columns() {
        let l = logistics(31, 40);
        let t = travel(31, 40);
        let payloads = l.copy_payloads().into_iter().chain(t.copy_payloads());
        for (stmt, data) in payloads {
            assert!(
                stmt.starts_with("COPY public.") && stmt.ends_with("FROM STDIN"),
                "{stmt}"
            );
            let ncols = stmt.matches(',').count() + 1;
            for line in data.lines() {
                assert_eq!(line.split('\t').count(), ncols, "{stmt}: {line}");
            }
        }
        let sql = l.to_sql_inserts();
        assert!(sql.starts_with("-- pgveil logistics"));
        assert!(sql.contains("BEGIN;\nINSERT INTO public.customers"));
        assert!(sql.trim_end().ends_with("COMMIT;"));
        assert_eq!(l.post_load_sql().len(), 2);
    }

    #[test]
    fn empty_datasets() {
        let l = logistics(0, 0);
        assert!(l.customers.is_empty() && l.shipments.is_empty());
        assert!(l.copy_payloads().iter().all(|(_, d)| d.is_empty()));
        assert!(travel(0, 0).to_sql_inserts().contains("COMMIT;"));
        let mut g = Generator::new(0);
        assert_eq!(g.below(0), 0);
        assert_eq!(g.range(5, 5), 5);
        assert_eq!(g.range(5, 1), 5);
    }
}

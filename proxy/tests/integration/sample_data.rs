//! The demo's generated values pass the policy crate's detectors, so the
//! sample data exercises the same checks `pgveil scan` and the masks rely on.
use pgveil::demo::data;
use pgveil_policy::detect;

#[test]
fn logistics_values_pass_the_detectors() {
    let d = data::logistics(7, 300);
    for c in &d.customers {
        assert!(detect::cn_id_card_valid(&c.id_card), "{}", c.id_card);
        assert!(detect::cn_mobile_shape(&c.phone), "{}", c.phone);
        if let Some(e) = &c.email {
            assert!(detect::email_shape(e), "{e}");
        }
    }
    for w in &d.waybills {
        assert!(detect::cn_mobile_shape(&w.consignee_phone));
        assert!(detect::cn_mobile_shape(&w.driver_phone));
        if let Some(id) = &w.consignee_id_card {
            assert!(detect::cn_id_card_valid(id), "{id}");
        }
        let international = !w.waybill_no.starts_with("SF");
        if international {
            assert!(detect::upu_s10_valid(&w.waybill_no), "{}", w.waybill_no);
        }
    }
}

#[test]
fn travel_values_pass_the_detectors() {
    let d = data::travel(7, 300);
    for t in &d.travellers {
        assert!(detect::cn_id_card_valid(&t.id_card), "{}", t.id_card);
        if let Some(p) = &t.passport_no {
            assert!(detect::cn_passport_shape(p), "{p}");
            let ours = detect::icao9303_check_digit(p);
            let theirs = data::passport_check_digit(p).and_then(|d| char::from_digit(d as u32, 10));
            assert_eq!(ours, theirs, "{p}");
        }
    }
    for b in &d.bookings {
        if let Some(card) = &b.card_number {
            assert!(detect::luhn_valid(card), "{card}");
        }
    }
}
